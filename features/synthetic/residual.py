"""The truth's expected residual value: each customer's revenue from a day on, discounted to that day.

Residual value is what a lifetime-value model predicts (``clv.residual_value``): revenue to the end of the
relationship, a cash flow ``s`` days ahead discounted by ``(1 + r) ** (-s / 365.25)`` as in
:mod:`features.btyd`, at :data:`~features.economics.DEFAULT_DISCOUNT_RATE` unless told otherwise. Revenue is
what the data will book: an order's amount (net of its discount); in the ``shop_export`` world, whose
credit notes net returned orders out, the amount of orders not returned.

The value is the expectation under the generator's own latent process, from each customer's state on the
day. The parts that have a closed form are taken exactly; the rest is simulated:

* **Exact.** Death is a Cox process driven by the latent state and does not feed back into it, so each
  simulated path carries its survival probability instead of drawing a death (the value given a path is
  ``∫ S(t) rate(t) v(t) disc(t) dt``, exact for the month's constant rates). The expected amount of an
  order ``v`` (spend level, lognormal noise, quantity, discount use and depth, returns) is closed form.
* **Simulated** (``draws`` paths per customer, vectorised over customers): what moves the rates month by
  month, as in :class:`~features.synthetic.simulate.Simulation`: the pull on expectations (jumps and
  decay), the AR(1) activity, the month's orders (Poisson) and the failure points they bring, which feed
  the experience state and so the gap. The failure points of an order (late delivery, defect, complaint or
  support contact and how it was resolved) are replaced by a gamma variable with the same mean and
  variance, computed exactly per customer and month (the only approximation besides the tail), so the
  points of ``N`` orders are one gamma draw.
* **Tail.** Paths run ``years`` (5) ahead in calendar months; beyond that each customer's last simulated
  year repeats geometrically (the state has forgotten the start by then, and the world's factors repeat
  yearly): tail = mean survival-discount weight × mean value of a year per unit weight / (1 − mean yearly
  weight ratio). Against paths run 25 years (base world, 256 draws, same random numbers), 5 years moved
  the total by -0.2% and single customers by -2.6% to +2.2% (10th to 90th percentile); 10 years by less
  than 1%, at twice the cost.

Precision: the state's drift makes single futures very different (a pull on expectations can end a
relationship), so the error of one customer's figure is mostly Monte-Carlo error. Four martingale control
variates (:class:`_Paths`) take out about 40% of it. With 32 draws, against 1,024 on the base world, it is
4.5% for the median customer and 13% at the 90th percentile, independent between customers: the total
of 1,650 customers was within 2% and the ranking correlated 0.998 with the reference. Against the
generator itself (one cohort of 6,000 followed for 12 years after the cutoff: discounted revenue booked
plus the value left at the end, over the value at the cutoff) the totals were 0.96, 0.99 and 1.03 for
three seeds, within their sampling noise.

After the simulated period the world keeps its factors (:meth:`Horizon.factors`): a seasonal hazard keeps
its yearly cycle, trends and a late-delivery spike hold their last month's level. Campaigns are not part of
the future. Customers who have left are worth 0; the caller passes only those who are there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd
from scipy.special import gammaincinv, gammaln, ndtr

from features.economics import DEFAULT_DISCOUNT_RATE
from features.errors import ConfigError
from features.progress import Report, silent
from features.synthetic.params import (
    COMPLAINT,
    CONTACT_CHANNEL_PROBS,
    DAYS_PER_MONTH,
    DELAY_COMPLAINT_SLOPE,
    DELAY_OFFSET_DAYS,
    DELAY_SCALE,
    DELAY_SHAPE,
    DISCOUNT_DEPTH,
    DISCOUNT_SEASON,
    ENTERPRISE,
    ENTERPRISE_RESOLVE_BONUS,
    LATE_CHANNEL_FACTOR,
    LATE_STRAIN,
    MAX_COMPLAINT_PROB,
    MAX_DEFECT_PROB,
    MAX_DISCOUNT_USE,
    MAX_LATE_PROB,
    ORDER_CHANNEL_PROBS,
    ORDER_VALUE_SIGMA,
    PRIMARY_CHANNEL_SHARE,
    QUANTITY_EXPONENT,
    RESOLVE_MEDIAN_HOURS,
    RESOLVE_PROB,
    RESOLVE_SIGMA,
    SEGMENT_QUANTITY,
    STRAINED_FROM_MONTH,
    STRAINED_RESOLVE_PENALTY,
    SUPPORT,
    Calendar,
    Experience,
    Params,
    Tenure,
    monthly_hazard,
    perceived_gap,
    purchase_rate,
)

DAYS_PER_YEAR: Final = 365.25  # as features.btyd discounts
FUTURE_YEARS: Final = 5.0
DRAWS: Final = 32
CHUNK_CUSTOMERS: Final = 4096  # customers simulated together (x draws paths): bounded memory, warm caches
_DELAY_NODES: Final = 16  # quantile nodes of the late-delivery delay (its effect on complaints)
_STREAM: Final = 20_261_206  # the value's own random stream: it never changes the simulated world


@dataclass(frozen=True)
class ValueTraits:
    """The customer traits the future depends on (one entry per customer)."""

    signup_day: np.ndarray
    signup_month: np.ndarray
    segment: np.ndarray
    plan: np.ndarray
    loyal: np.ndarray
    purchase_rate: np.ndarray
    spend_level: np.ndarray
    discount_propensity: np.ndarray
    late_prob: np.ndarray
    defect_prob: np.ndarray
    return_prob: np.ndarray  # discretionary returns
    complain_propensity: np.ndarray
    expectation: np.ndarray
    base_hazard: np.ndarray
    primary_channel: np.ndarray

    def take(self, index: np.ndarray | slice) -> ValueTraits:
        return ValueTraits(*(np.asarray(getattr(self, name))[index] for name in self.__dataclass_fields__))

    def __len__(self) -> int:
        return len(self.signup_day)


@dataclass(frozen=True)
class Horizon:
    """The world a future unfolds in: its parameters, the simulated period with its per-month factors,
    and what the world does after the period and to revenue."""

    params: Params
    calendar: Calendar
    hazard_factor: np.ndarray  # per simulated month
    late_factor: np.ndarray
    cyclic: bool = False  # the factors follow the calendar (seasonal world): they repeat after the end
    net_of_returns: bool = False  # returned orders are booked back (shop export credit notes)

    def factors(self, calendar: Calendar) -> tuple[np.ndarray, np.ndarray]:
        """(hazard, late) factor per month of ``calendar``, which starts where the simulated period does and
        may run past its end: recorded months as recorded; later ones repeat the same calendar month of the
        final simulated year if the world is cyclic, else hold the last month's factors."""
        n = self.calendar.n_months
        months = calendar.n_months
        hazard = np.empty(months)
        late = np.empty(months)
        keep = min(n, months)
        hazard[:keep], late[:keep] = self.hazard_factor[:keep], self.late_factor[:keep]
        for k in range(keep, months):
            same = np.flatnonzero(self.calendar.month_of_year == calendar.month_of_year[k])
            source = int(same[-1]) if self.cyclic and len(same) else n - 1
            hazard[k], late[k] = self.hazard_factor[source], self.late_factor[source]
        return hazard, late


@dataclass(frozen=True)
class Start:
    """Where each customer's future begins: the valuation ``day`` (days since the period start), the state
    in force in simulated month ``month`` (pull and activity of that month; failures and orders seen before
    the orders counted from ``window_start``, per customer, which the first month adds)."""

    day: float
    month: int
    state: Experience
    window_start: np.ndarray


@dataclass(frozen=True)
class MonteCarlo:
    """How the expectation is taken: discount rate, paths per customer, seed and simulated years."""

    annual_discount_rate: float = DEFAULT_DISCOUNT_RATE
    draws: int = DRAWS
    seed: int = 0
    years: float = FUTURE_YEARS

    def check(self) -> None:
        if not 0 < self.annual_discount_rate < 10:
            raise ConfigError(
                f"annual_discount_rate is {self.annual_discount_rate}; residual value needs a positive "
                "yearly rate such as 0.1 for 10% (an undiscounted lifetime has no finite value)"
            )
        if self.draws < 1:
            raise ConfigError(f"draws must be at least 1, got {self.draws}")
        if self.years < 2:
            raise ConfigError(f"years must be at least 2 (the tail repeats the last year), got {self.years}")


def expected_residual_value(
    traits: ValueTraits,
    start: Start,
    horizon: Horizon,
    mc: MonteCarlo | None = None,
    report: Report = silent,
) -> np.ndarray:
    """Expected discounted revenue from ``start.day`` to the end of each customer's relationship, for
    customers there on that day (see the module docstring). Deterministic for a seed."""
    mc = mc or MonteCarlo()
    mc.check()
    steps = _Steps.build(horizon, start, mc.years)
    terms = _OrderTerms.build(horizon, traits, steps)
    out = np.zeros(len(traits))
    chunks = range(0, len(traits), CHUNK_CUSTOMERS)
    for number, low in enumerate(chunks):
        part = slice(low, min(low + CHUNK_CUSTOMERS, len(traits)))
        rng = np.random.default_rng([mc.seed, _STREAM, number])
        paths = _Paths(rng, horizon.params, traits.take(part), terms.take(part), mc)
        out[part] = paths.value(start, part, steps)
        report("truth", (number + 1) / len(chunks))
    return out


# ------------------------------------------------------------------------------------------ the months


@dataclass(frozen=True)
class _Steps:
    """Calendar months from the valuation day to the horizon, clipped to the day: days since the valuation
    day, and what the month's rates need."""

    begin: np.ndarray
    end: np.ndarray
    month_start: np.ndarray  # days since the period start (tenure)
    month_index: np.ndarray  # months since the period's first month (anniversaries)
    month_of_year: np.ndarray
    hazard_factor: np.ndarray
    config: np.ndarray  # index into configs
    configs: tuple[tuple[int, float], ...]  # distinct (month of year, late factor): order terms differ

    @staticmethod
    def build(horizon: Horizon, start: Start, years: float) -> _Steps:
        period = horizon.calendar
        last = period.start + pd.Timedelta(days=start.day + years * DAYS_PER_YEAR)
        stop = (last + pd.offsets.MonthBegin(1)).normalize()  # a month boundary: the last year is whole
        calendar = Calendar.between(period.start.date(), stop.date())
        hazard, late = horizon.factors(calendar)
        first = calendar.month_of_day(start.day)
        months = np.arange(first, calendar.n_months)
        edges = calendar.edges
        pairs = list(zip(calendar.month_of_year[months].tolist(), late[months].tolist(), strict=True))
        configs = tuple(sorted(set(pairs)))
        return _Steps(
            begin=np.maximum(edges[months], start.day) - start.day,
            end=edges[months + 1] - start.day,
            month_start=edges[months],
            month_index=months,
            month_of_year=calendar.month_of_year[months],
            hazard_factor=hazard[months],
            config=np.array([configs.index(pair) for pair in pairs]),
            configs=configs,
        )

    def __len__(self) -> int:
        return len(self.begin)


# -------------------------------------------------------------------------------- what one order brings


@dataclass(frozen=True)
class _OrderTerms:
    """Per customer and config: an order's expected revenue and the gamma (shape, scale) standing in for
    its failure points; per customer: the expected failure points of background contacts per month."""

    revenue: np.ndarray  # (n, configs)
    shape: np.ndarray
    scale: np.ndarray
    background: np.ndarray  # (n,)

    @staticmethod
    def build(horizon: Horizon, traits: ValueTraits, steps: _Steps) -> _OrderTerms:
        columns = [_order_terms(horizon, traits, moy, late) for moy, late in steps.configs]
        revenue, mean, variance = (np.stack([c[i] for c in columns], axis=1) for i in range(3))
        has_points = mean > 0
        safe_mean = np.where(has_points, mean, 1.0)
        support_mean, _ = _contact_points(horizon.params, SUPPORT, traits.segment, strained=False)
        return _OrderTerms(
            revenue=revenue,
            shape=np.where(has_points, mean**2 / np.maximum(variance, 1e-12), 0.0),
            scale=np.where(has_points, np.maximum(variance, 1e-12) / safe_mean, 1.0),
            background=horizon.params.background_support_rate * support_mean,
        )

    def take(self, index: slice) -> _OrderTerms:
        return _OrderTerms(self.revenue[index], self.shape[index], self.scale[index], self.background[index])


def _order_terms(
    horizon: Horizon, traits: ValueTraits, month_of_year: int, late_factor: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(expected revenue, mean and variance of the failure points) of one order in a month, per customer,
    following ``Simulation._expand_transactions``, ``_contacts_after_failures`` and ``_failure_points``."""
    p = horizon.params
    channel = (1.0 - PRIMARY_CHANNEL_SHARE) * np.asarray(ORDER_CHANNEL_PROBS)[
        None, :
    ] + PRIMARY_CHANNEL_SHARE * (
        traits.primary_channel[:, None] == np.arange(len(ORDER_CHANNEL_PROBS))[None, :]
    )
    strain = LATE_STRAIN[month_of_year] * late_factor
    late_by_channel = np.minimum(
        traits.late_prob[:, None] * LATE_CHANNEL_FACTOR[None, :] * strain, MAX_LATE_PROB
    )
    late = (channel * late_by_channel).sum(axis=1)
    defect_on_time = np.minimum(traits.defect_prob, MAX_DEFECT_PROB)
    defect_late = np.minimum(traits.defect_prob * 2.0, MAX_DEFECT_PROB)

    strained = month_of_year >= STRAINED_FROM_MONTH
    complaint_mean, complaint_m2 = _contact_points(p, COMPLAINT, traits.segment, strained)
    support_mean, support_m2 = _contact_points(p, SUPPORT, traits.segment, strained)
    complain = p.complaint_prob * traits.complain_propensity
    complain_on_time = np.minimum(complain, MAX_COMPLAINT_PROB)
    complain_late = np.minimum(
        complain[:, None] * (1.0 + DELAY_COMPLAINT_SLOPE * _delay_nodes()[None, :]), MAX_COMPLAINT_PROB
    ).mean(axis=1)
    support = p.support_after_failure_prob

    def contact_moments(complain_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = complain_prob * complaint_mean + support * support_mean
        m2 = complain_prob * complaint_m2 + support * support_m2
        return mean, m2 + 2.0 * complain_prob * support * complaint_mean * support_mean

    # On time: points only if defective (then weight_defect plus the contacts).
    y0, y0_2 = contact_moments(complain_on_time)
    w_def, w_late = p.weight_defect, p.weight_late
    x0 = defect_on_time * (w_def + y0)
    x0_2 = defect_on_time * (w_def**2 + 2.0 * w_def * y0 + y0_2)
    # Late: always a failure (weight_late, maybe weight_defect too, plus the contacts).
    y1, y1_2 = contact_moments(complain_late)
    base = w_late + w_def * defect_late
    base_2 = (1.0 - defect_late) * w_late**2 + defect_late * (w_late + w_def) ** 2
    x1 = base + y1
    x1_2 = base_2 + 2.0 * base * y1 + y1_2
    mean = (1.0 - late) * x0 + late * x1
    variance = np.maximum((1.0 - late) * x0_2 + late * x1_2 - mean**2, 0.0)

    depth = np.where(traits.loyal, sum(DISCOUNT_DEPTH[1]) / 2.0, sum(DISCOUNT_DEPTH[0]) / 2.0)
    discount_use = np.minimum(traits.discount_propensity * DISCOUNT_SEASON[month_of_year], MAX_DISCOUNT_USE)
    revenue = (
        traits.spend_level
        * math.exp(ORDER_VALUE_SIGMA**2 / 2.0)
        * _quantity_factor()[traits.segment]
        * (1.0 - discount_use * depth)
    )
    if horizon.net_of_returns:
        defect = (1.0 - late) * defect_on_time + late * defect_late
        revenue = revenue * (1.0 - defect) * (1.0 - traits.return_prob)
    return revenue, mean, variance


def _contact_points(
    p: Params, kind: int, segment: np.ndarray, strained: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and second moment of the failure points one complaint or support contact adds (``Simulation
    ._resolve`` and ``_failure_points``: unresolved, slow, or a quickly resolved complaint), per customer."""
    resolved = np.clip(
        RESOLVE_PROB[kind][None, :]
        + ENTERPRISE_RESOLVE_BONUS * (segment[:, None] == ENTERPRISE)
        - STRAINED_RESOLVE_PENALTY * strained,
        0.0,
        1.0,
    )
    slow = 1.0 - float(
        ndtr(math.log(p.slow_resolution_hours / RESOLVE_MEDIAN_HOURS[kind]) / RESOLVE_SIGMA[kind])
    )
    quick = p.weight_resolved if kind == COMPLAINT else 0.0
    slow_weight, unresolved = p.weight_slow_resolution, p.weight_unresolved
    mean = (1.0 - resolved) * unresolved + resolved * (slow * slow_weight + (1.0 - slow) * quick)
    m2 = (1.0 - resolved) * unresolved**2 + resolved * (slow * slow_weight**2 + (1.0 - slow) * quick**2)
    channel = CONTACT_CHANNEL_PROBS[kind][None, :]
    return (channel * mean).sum(axis=1), (channel * m2).sum(axis=1)


def _delay_nodes() -> np.ndarray:
    """Equal-probability nodes of a late delivery's delay in days."""
    quantiles = (np.arange(_DELAY_NODES) + 0.5) / _DELAY_NODES
    return DELAY_OFFSET_DAYS + DELAY_SCALE * np.asarray(gammaincinv(DELAY_SHAPE, quantiles))


def _quantity_factor() -> np.ndarray:
    """E[quantity ** QUANTITY_EXPONENT] per segment, quantity = 1 + Poisson(SEGMENT_QUANTITY)."""
    k = np.arange(200.0)[None, :]
    mean = SEGMENT_QUANTITY[:, None]
    pmf = np.exp(k * np.log(mean) - mean - gammaln(k + 1.0))
    return (pmf * (1.0 + k) ** QUANTITY_EXPONENT).sum(axis=1)


# ----------------------------------------------------------------------------------------- the paths


class _Paths:
    """``draws`` futures of a block of customers, each carrying its survival-and-discount weight.

    Besides each path's value it keeps four martingale control variates, sums over the months of a
    random innovation (activity's, the pull's jump, the order count's and the failure points' deviation
    from their expectation given the past) times a weight known before it was drawn; each has mean 0
    exactly. Regressing a customer's path values on them and removing the fitted part cuts the Monte-Carlo
    error by about 40% (as three times the draws would) at a bias of a few tenths of a percent with 32 draws.
    """

    def __init__(
        self, rng: np.random.Generator, p: Params, traits: ValueTraits, terms: _OrderTerms, mc: MonteCarlo
    ) -> None:
        self.rng, self.p, self.traits, self.terms, self.mc = rng, p, traits, terms, mc
        self.shape = (len(traits), mc.draws)

    def value(self, start: Start, part: slice, steps: _Steps) -> np.ndarray:
        """Expected residual value of each customer of the block: simulated years plus the tail."""
        rng, p, t, terms, shape = self.rng, self.p, self.traits, self.terms, self.shape
        delta = math.log1p(self.mc.annual_discount_rate) / DAYS_PER_YEAR
        failures, orders, pull, activity = (
            np.repeat(np.asarray(getattr(start.state, name), dtype=np.float64)[part, None], shape[1], axis=1)
            for name in ("failures", "orders_seen", "pull", "activity")
        )
        first_window = steps.end[0] + start.day - start.window_start[part]
        weight = np.ones(shape)  # survival x discount at the step's start
        value = np.zeros(shape)
        flow = np.zeros(shape)  # the previous month's discounted revenue rate (weights activity's control)
        controls = np.zeros((4, *shape))
        tail_from = len(steps) - 12
        weight_then = value_then = weight
        column = (slice(None), None)
        for j in range(len(steps)):
            if j > 0 or steps.month_index[0] != start.month:  # a new month: pull and activity move on
                pull *= p.pull_decay
                jumps = rng.random(shape) < p.pull_prob
                sizes = rng.exponential(p.pull_mean, int(jumps.sum()))
                pull[jumps] += sizes
                controls[0][jumps] += weight[jumps] * sizes
                controls[0] -= weight * (p.pull_prob * p.pull_mean)
                innovation = rng.normal(0.0, p.activity_sd, shape)
                activity = p.activity_persistence * activity + innovation
                controls[1] += flow * innovation
            gap = perceived_gap(p, failures, orders, t.expectation[column], pull)
            tenure = Tenure(
                months=(np.maximum(steps.month_start[j] - t.signup_day, 0.0) / DAYS_PER_MONTH)[column],
                whole_months=(steps.month_index[j] - t.signup_month)[column],
            )
            factor = float(steps.hazard_factor[j])
            hazard = monthly_hazard(p, t.base_hazard[column], t.plan[column], tenure, gap, factor)
            rate = purchase_rate(p, t.purchase_rate[column], activity, gap, int(steps.month_of_year[j]))
            hazard, rate = hazard / DAYS_PER_MONTH, rate / DAYS_PER_MONTH
            if j == tail_from:
                weight_then, value_then = weight.copy(), value.copy()
            span = steps.end[j] - steps.begin[j]
            fading = hazard + delta
            config = int(steps.config[j])
            flow = weight * rate * terms.revenue[:, config, None]
            value += flow * -np.expm1(-fading * span) / fading
            weight = weight * np.exp(-fading * span)
            if j == len(steps) - 1:
                break
            window = span if j > 0 else first_window[column]
            expected = rate * window
            count = rng.poisson(expected)
            shape_k, scale = terms.shape[:, config, None], terms.scale[:, config, None]
            points = rng.gamma(count * shape_k, scale)
            controls[2] += weight * (count - expected)
            controls[3] += weight * (points - count * shape_k * scale)
            failures = (
                p.experience_decay * failures + points + terms.background[column] * window / DAYS_PER_MONTH
            )
            orders = p.experience_decay * orders + count
        year_value = np.divide(value - value_then, weight_then, out=np.zeros(shape), where=weight_then > 0)
        year_ratio = np.divide(weight, weight_then, out=np.zeros(shape), where=weight_then > 0)
        tail_per_weight = year_value.mean(axis=1) / (1.0 - year_ratio.mean(axis=1))
        paths = value + weight * tail_per_weight[:, None]
        return _controlled_mean(paths, controls)


def _controlled_mean(paths: np.ndarray, controls: np.ndarray) -> np.ndarray:
    """Per customer (rows), the mean of ``paths`` less its least-squares fit on the mean-zero ``controls``
    (shape (c, customers, draws)); the plain mean when there are too few draws to fit them."""
    mean = paths.mean(axis=1)
    n_controls, _, draws = controls.shape
    if draws <= 2 * n_controls:
        return mean
    x = np.moveaxis(controls, 0, 2)  # customers, draws, controls
    centred = x - x.mean(axis=1, keepdims=True)
    gram = np.einsum("ndi,ndj->nij", centred, centred)
    gram += 1e-12 * (np.trace(gram, axis1=1, axis2=2)[:, None, None] + 1.0) * np.eye(n_controls)
    cross = np.einsum("ndi,nd->ni", centred, paths - mean[:, None])
    beta = np.linalg.solve(gram, cross[..., None])[..., 0]
    return mean - (beta * x.mean(axis=1)).sum(axis=1)
