"""The month-by-month simulation: who signs up, buys, meets service failures, complains and leaves.

Everything is vectorised over the customers active in a month; within a month every rate is constant, so a
departure time is exponential and orders are a Poisson process up to it. Orders are streamed to an
:class:`OrderSink` month by month (at a million customers they do not fit in memory); contacts, the monthly
gap and activity are kept for the other tables and the truth. The order of random draws defines the
dataset: the same seed must give the same data, so reorder draws only on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from features.progress import Report
from features.synthetic.params import (
    ACQUISITION,
    ACQUISITION_HAZARD,
    ACQUISITION_PROBS,
    COMPLAINT,
    CONTACT_CHANNEL_PROBS,
    COUNTRIES,
    COUNTRY_LATE_FACTOR,
    COUNTRY_PROBS,
    DAYS_PER_MONTH,
    DELAY_COMPLAINT_SLOPE,
    DELAY_OFFSET_DAYS,
    DELAY_SCALE,
    DELAY_SHAPE,
    DISCOUNT_DEPTH,
    DISCOUNT_SEASON,
    ENTERPRISE,
    ENTERPRISE_RESOLVE_BONUS,
    INQUIRY,
    LATE_CHANNEL_FACTOR,
    LATE_STRAIN,
    LOYAL_RETURN_PROB,
    MAX_COMPLAINT_PROB,
    MAX_DEFECT_PROB,
    MAX_DISCOUNT_USE,
    MAX_LATE_PROB,
    ORDER_CHANNEL_PROBS,
    ORDER_CHANNELS,
    ORDER_VALUE_SIGMA,
    PRIMARY_CHANNEL_SHARE,
    QUANTITY_EXPONENT,
    RESOLVE_MEDIAN_HOURS,
    RESOLVE_PROB,
    RESOLVE_SIGMA,
    RETURN_PROB,
    SECONDS_PER_DAY,
    SEGMENT_HAZARD,
    SEGMENT_INQUIRY,
    SEGMENT_PROBS,
    SEGMENT_QUANTITY,
    SEGMENT_RATE,
    SEGMENT_SPEND,
    SEGMENTS,
    STRAINED_FROM_MONTH,
    STRAINED_RESOLVE_PENALTY,
    SUPPORT,
    SURVEY,
    Calendar,
    Contacts,
    Customers,
    Experience,
    Orders,
    Outcome,
    Params,
    Tenure,
    monthly_hazard,
    perceived_gap,
    purchase_rate,
)
from features.synthetic.scenarios import World


class OrderSink(Protocol):
    """Where each simulated month's orders go (a table writer, or a reshaping export)."""

    def write(self, orders: Orders, month: int, departure_day: np.ndarray) -> None:
        """Take one month's orders; ``departure_day`` holds every departure decided so far (inf = none)."""

    def close(self) -> int:
        """Finish the output; returns the number of rows written."""


class CampaignHook(Protocol):
    """Changes the month's hazard and purchase rate of the active customers (campaigns running in the
    world, see :mod:`features.synthetic.campaigns`); draws no random numbers."""

    def hazard(self, month: int, active: np.ndarray, gap: np.ndarray, hazard: np.ndarray) -> np.ndarray: ...

    def rate(self, month: int, active: np.ndarray, rate: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class _Window:
    """The customers active in one month and the part of the month each is there: [start, end) in days."""

    active: np.ndarray
    start: np.ndarray
    end: np.ndarray

    @property
    def months(self) -> np.ndarray:
        """Length of each customer's window in months."""
        return (self.end - self.start) / DAYS_PER_MONTH

    def uniform_days(self, rng: np.random.Generator, position: np.ndarray) -> np.ndarray:
        """A uniform time in the window of each customer ``position`` indexes."""
        return self.start[position] + rng.random(len(position)) * (self.end - self.start)[position]


# ------------------------------------------------------------------------------------------- customers


def _signup_days(rng: np.random.Generator, n: int, total_days: float, p: Params) -> np.ndarray:
    """Whole days since start, sorted: an early launch wave plus linearly growing acquisition."""
    early = rng.random(n) < p.early_wave_share
    u = rng.random(n)
    scale = 0.12
    wave = -scale * np.log1p(-u * (1.0 - np.exp(-1.0 / scale)))  # truncated exponential on [0, 1)
    g = p.signup_growth - 1.0
    growth = (np.sqrt(1.0 + 2.0 * g * u * (1.0 + g / 2.0)) - 1.0) / g  # density ∝ 1 + g x on [0, 1)
    fraction = np.where(early, wave, growth)
    return np.sort(np.minimum(np.floor(fraction * total_days), np.ceil(total_days) - 1.0))


def draw_customers(rng: np.random.Generator, n: int, calendar: Calendar, world: World) -> Customers:
    """Static traits: who signs up when, segment/plan/country, purchase and spend levels, service exposure,
    expectation and base hazard (loyal-but-unprofitable customers buy often and cheaply, with discounts and
    returns, and rarely leave)."""
    p = world.params
    if world.cohort_days is None:
        signup_day = _signup_days(rng, n, calendar.total_days, p)
    else:
        signup_day = np.sort(np.floor(rng.random(n) * world.cohort_days))
    segment = rng.choice(len(SEGMENTS), size=n, p=SEGMENT_PROBS).astype(np.int8)
    plan_draw = rng.random(n)[:, None] > np.cumsum(world.plan_probs[segment], axis=1)
    loyal = rng.random(n) < p.loyal_share
    shape = p.purchase_rate_shape
    rate = rng.gamma(shape, p.mean_purchase_rate / shape, n) * SEGMENT_RATE[segment] * np.where(loyal, 2.5, 1)
    log_spend = (
        np.log(p.spend_median)
        + p.spend_rate_elasticity * np.log(rate / p.mean_purchase_rate + 1e-3)
        + rng.normal(0.0, p.spend_sigma, n)
    )
    acquisition = rng.choice(len(ACQUISITION), size=n, p=ACQUISITION_PROBS).astype(np.int8)
    country = rng.choice(len(COUNTRIES), size=n, p=COUNTRY_PROBS).astype(np.int8)
    base_hazard = (
        p.base_hazard_median
        * np.exp(rng.normal(0.0, p.base_hazard_sigma, n))
        * ACQUISITION_HAZARD[acquisition]
        * SEGMENT_HAZARD[segment]
        * np.where(loyal, 0.4, 1.0)
    )
    return Customers(
        signup_day=signup_day,
        signup_month=np.searchsorted(calendar.edges, signup_day, side="right") - 1,
        country=country,
        segment=segment,
        acquisition=acquisition,
        plan=np.minimum(plan_draw.sum(axis=1), 2).astype(np.int8),
        loyal=loyal,
        purchase_rate=rate,
        spend_level=np.exp(log_spend) * SEGMENT_SPEND[segment] * np.where(loyal, 0.45, 1.0),
        discount_propensity=np.where(loyal, rng.beta(6.0, 3.0, n), rng.beta(1.2, 5.0, n)),
        late_prob=rng.beta(2.0, 30.0, n) * COUNTRY_LATE_FACTOR[country],
        defect_prob=rng.beta(1.5, 25.0, n),
        discretionary_return_prob=np.where(loyal, LOYAL_RETURN_PROB, RETURN_PROB),
        complain_propensity=np.exp(rng.normal(0.0, 0.5, n)),
        expectation=np.exp(rng.normal(0.0, 0.5, n)) * np.where(loyal, 0.6, 1.0),
        base_hazard=base_hazard,
        primary_channel=rng.choice(len(ORDER_CHANNELS), size=n, p=ORDER_CHANNEL_PROBS).astype(np.int8),
    )


# ------------------------------------------------------------------------------------------ simulation


class Simulation:
    """Advances all customers of one world month by month (see the package docstring for the story)."""

    def __init__(
        self,
        rng: np.random.Generator,
        customers: Customers,
        calendar: Calendar,
        world: World,
        campaigns: CampaignHook | None = None,
    ) -> None:
        """``campaigns``, if given, adjusts each month's hazard and purchase rate of treated customers."""
        self.rng = rng
        self.customers = customers
        self.calendar = calendar
        self.world = world
        self.p = world.params
        self.campaigns = campaigns

    def run(self, sink: OrderSink, report: Report) -> Outcome:
        """Simulate every month, streaming each month's orders to ``sink``."""
        rng, customers, calendar, p = self.rng, self.customers, self.calendar, self.p
        n = len(customers)
        alive = np.ones(n, dtype=bool)
        failures = np.zeros(n)
        orders_seen = np.zeros(n)
        pull = np.zeros(n)
        departure = np.full(n, np.inf)
        activity = rng.normal(0.0, p.stationary_activity_sd, n)
        history = {
            name: np.full((n, calendar.n_months), np.nan, dtype=np.float32)
            for name in ("gap", "activity", "failures", "orders_seen", "pull")
        }
        contact_parts: list[Contacts] = []
        for month in range(calendar.n_months):
            month_end = calendar.edges[month + 1]
            active = np.flatnonzero(alive & (customers.signup_day < month_end))
            window = _Window(
                active, np.maximum(calendar.edges[month], customers.signup_day[active]), month_end
            )
            pull *= p.pull_decay
            pulled = active[rng.random(len(active)) < p.pull_prob]
            pull[pulled] += rng.exponential(p.pull_mean, len(pulled))
            gap = perceived_gap(
                p, failures[active], orders_seen[active], customers.expectation[active], pull[active]
            )
            history["gap"][active, month] = gap
            history["failures"][active, month] = failures[active]
            history["orders_seen"][active, month] = orders_seen[active]
            history["pull"][active, month] = pull[active]
            activity[active] = p.activity_persistence * activity[active] + rng.normal(
                0.0, p.activity_sd, len(active)
            )
            history["activity"][active, month] = activity[active]
            tenure = Tenure(
                months=np.maximum(calendar.edges[month] - customers.signup_day[active], 0.0) / DAYS_PER_MONTH,
                whole_months=month - customers.signup_month[active],
            )
            hazard = monthly_hazard(
                p,
                customers.base_hazard[active],
                customers.plan[active],
                tenure,
                gap,
                float(self.world.hazard_factor[month]),
            )
            if self.campaigns is not None:
                hazard = self.campaigns.hazard(month, active, gap, hazard)
            leave_day = window.start + rng.exponential(DAYS_PER_MONTH, len(active)) / hazard
            leaves = leave_day < month_end
            window = _Window(active, window.start, np.where(leaves, leave_day, month_end))
            departure[active[leaves]] = leave_day[leaves]
            alive[active[leaves]] = False

            rate = purchase_rate(
                p, customers.purchase_rate[active], activity[active], gap, calendar.month_of_year[month]
            )
            if self.campaigns is not None:
                rate = self.campaigns.rate(month, active, rate)
            counts = rng.poisson(rate * (window.end - window.start) / DAYS_PER_MONTH)
            orders = self._expand_transactions(month, window, counts)
            sink.write(orders, month, departure)

            felt = customers.expectation * failures / (1.0 + p.order_normaliser * orders_seen)
            month_contacts = self._contacts_after_failures(month, orders, felt)
            background = self._background_contacts(window, felt)
            failure_points = self._failure_points(orders, [month_contacts, background])
            orders_seen *= p.experience_decay
            orders_seen += np.bincount(orders.customer, minlength=n)
            failures *= p.experience_decay
            failures += failure_points
            felt = customers.expectation * failures / (1.0 + p.order_normaliser * orders_seen)
            surveys = self._surveys(window, felt[active])
            contact_parts += [month_contacts, background, surveys]
            report("simulate", (month + 1) / calendar.n_months)

        return Outcome(
            departure_day=departure,
            gap=history["gap"],
            activity=history["activity"],
            contacts=Contacts.concat(contact_parts),
            failures=history["failures"],
            orders_seen=history["orders_seen"],
            pull=history["pull"],
            final=Experience(failures, orders_seen, pull, activity),
        )

    def _expand_transactions(self, month: int, window: _Window, counts: np.ndarray) -> Orders:
        """One row per order: uniform times in each customer's active window, then channel, value and service."""
        rng, customers = self.rng, self.customers
        position = np.repeat(np.arange(len(window.active)), counts)
        who = window.active[position]
        day = window.uniform_days(rng, position)
        second = np.floor(day * SECONDS_PER_DAY).astype(np.int64)
        order = np.argsort(second, kind="stable")
        who, second = who[order], second[order]
        k = len(who)
        moy = self.calendar.month_of_year[month]

        channel = np.where(
            rng.random(k) < PRIMARY_CHANNEL_SHARE,
            customers.primary_channel[who],
            rng.choice(len(ORDER_CHANNELS), size=k, p=ORDER_CHANNEL_PROBS),
        ).astype(np.int8)
        quantity = 1 + rng.poisson(SEGMENT_QUANTITY[customers.segment[who]])
        gross = np.round(
            customers.spend_level[who]
            * rng.lognormal(0.0, ORDER_VALUE_SIGMA, k)
            * quantity**QUANTITY_EXPONENT,
            2,
        )
        loyal = customers.loyal[who]
        uses_discount = rng.random(k) < np.minimum(
            customers.discount_propensity[who] * DISCOUNT_SEASON[moy], MAX_DISCOUNT_USE
        )
        discount_rate = np.where(
            loyal, rng.uniform(*DISCOUNT_DEPTH[1], k), rng.uniform(*DISCOUNT_DEPTH[0], k)
        )
        discount = np.where(uses_discount, np.round(gross * discount_rate, 2), 0.0)

        late_factor = LATE_STRAIN[moy] * self.world.late_factor[month]
        late_prob = customers.late_prob[who] * LATE_CHANNEL_FACTOR[channel] * late_factor
        late = rng.random(k) < np.minimum(late_prob, MAX_LATE_PROB)
        delay = np.where(late, np.round(DELAY_OFFSET_DAYS + rng.gamma(DELAY_SHAPE, DELAY_SCALE, k), 1), 0.0)
        defect = rng.random(k) < np.minimum(customers.defect_prob[who] * (1.0 + late), MAX_DEFECT_PROB)
        returned = defect | (rng.random(k) < customers.discretionary_return_prob[who])
        return Orders(
            customer=who,
            second=second,
            channel=channel,
            quantity=quantity.astype(np.int64),
            amount=np.round(gross - discount, 2),
            discount=discount,
            late=late,
            delay_days=delay,
            defect=defect,
            returned=returned,
        )

    def _contacts_after_failures(self, month: int, orders: Orders, felt: np.ndarray) -> Contacts:
        """Complaints and support contacts in the days after late or defective orders."""
        rng, p = self.rng, self.p
        failed = np.flatnonzero(orders.late | orders.defect)
        who = orders.customer[failed]
        delay = orders.delay_days[failed]
        complain_prob = np.minimum(
            p.complaint_prob * self.customers.complain_propensity[who] * (1 + DELAY_COMPLAINT_SLOPE * delay),
            MAX_COMPLAINT_PROB,
        )
        complains = rng.random(len(failed)) < complain_prob
        supports = rng.random(len(failed)) < p.support_after_failure_prob
        kinds = np.concatenate([np.full(complains.sum(), COMPLAINT), np.full(supports.sum(), SUPPORT)])
        rows = np.concatenate([np.flatnonzero(complains), np.flatnonzero(supports)])
        after_days = delay[rows] + 0.5 + rng.exponential(2.0, len(rows))
        second = orders.second[failed][rows] + np.floor(after_days * SECONDS_PER_DAY).astype(np.int64)
        strained = bool(self.calendar.month_of_year[month] >= STRAINED_FROM_MONTH)
        return self._resolve(who[rows], second, kinds.astype(np.int8), felt, strained)

    def _background_contacts(self, window: _Window, felt: np.ndarray) -> Contacts:
        """Support and inquiry contacts that do not follow a failure (inquiries more for businesses)."""
        rng, p, active = self.rng, self.p, window.active
        months_active = window.months
        support = rng.poisson(p.background_support_rate * months_active)
        inquiry = rng.poisson(
            p.background_inquiry_rate * SEGMENT_INQUIRY[self.customers.segment[active]] * months_active
        )
        position = np.concatenate(
            [np.repeat(np.arange(len(active)), support), np.repeat(np.arange(len(active)), inquiry)]
        )
        kinds = np.concatenate([np.full(support.sum(), SUPPORT), np.full(inquiry.sum(), INQUIRY)]).astype(
            np.int8
        )
        second = np.floor(window.uniform_days(rng, position) * SECONDS_PER_DAY).astype(np.int64)
        return self._resolve(active[position], second, kinds, felt, strained=False)

    def _resolve(
        self, who: np.ndarray, second: np.ndarray, kinds: np.ndarray, felt: np.ndarray, strained: bool
    ) -> Contacts:
        """Channel, resolution (hours) and an occasional rating (felt service, worse when slow) per contact."""
        rng, p = self.rng, self.p
        k = len(who)
        channel = _choose_rows(rng, CONTACT_CHANNEL_PROBS[kinds])
        resolve_prob = (
            RESOLVE_PROB[kinds, channel]
            + ENTERPRISE_RESOLVE_BONUS * (self.customers.segment[who] == ENTERPRISE)
            - STRAINED_RESOLVE_PENALTY * strained
        )
        resolved = rng.random(k) < np.clip(resolve_prob, 0.0, 1.0)
        hours = np.round(RESOLVE_MEDIAN_HOURS[kinds] * rng.lognormal(0.0, RESOLVE_SIGMA[kinds]), 2)
        hours = np.where(resolved, np.maximum(hours, 0.01), np.nan)
        rated = resolved & (rng.random(k) < p.rated_contact_share)
        slow = np.nan_to_num(hours) > p.slow_resolution_hours
        satisfaction, _ = _scores(rng, felt[who] + 0.6 * slow)
        return Contacts(
            customer=who.astype(np.int64),
            second=second,
            type=kinds,
            channel=channel,
            resolved=resolved.astype(np.int8),
            hours=hours,
            satisfaction=np.where(rated, satisfaction, -1).astype(np.int8),
            nps=np.full(k, -1, dtype=np.int8),
        )

    def _surveys(self, window: _Window, felt: np.ndarray) -> Contacts:
        """Answered surveys from a random subset of active customers; scores reflect felt service with noise."""
        rng = self.rng
        share = self.p.survey_share * (window.end - window.start) / DAYS_PER_MONTH
        picked = np.flatnonzero(rng.random(len(window.active)) < share)
        day = window.uniform_days(rng, picked)
        satisfaction, nps = _scores(rng, felt[picked])
        k = len(picked)
        return Contacts(
            customer=window.active[picked].astype(np.int64),
            second=np.floor(day * SECONDS_PER_DAY).astype(np.int64),
            type=np.full(k, SURVEY, dtype=np.int8),
            channel=_choose_rows(rng, np.broadcast_to(CONTACT_CHANNEL_PROBS[SURVEY], (k, 5))),
            resolved=np.full(k, -1, dtype=np.int8),
            hours=np.full(k, np.nan),
            satisfaction=satisfaction.astype(np.int8),
            nps=nps.astype(np.int8),
        )

    def _failure_points(self, orders: Orders, contacts: list[Contacts]) -> np.ndarray:
        """This month's addition to each customer's experience state (weighted failures)."""
        p, n = self.p, len(self.customers)
        points = np.bincount(
            orders.customer,
            weights=p.weight_late * orders.late + p.weight_defect * orders.defect,
            minlength=n,
        )
        for part in contacts:
            complaint_like = part.type != INQUIRY
            unresolved = complaint_like & (part.resolved == 0)
            slow = complaint_like & (np.nan_to_num(part.hours) > p.slow_resolution_hours)
            quick = (part.type == COMPLAINT) & (part.resolved == 1) & ~slow
            weight = (
                p.weight_unresolved * unresolved + p.weight_slow_resolution * slow + p.weight_resolved * quick
            )
            points += np.bincount(part.customer, weights=weight, minlength=n)
        return points


def _scores(rng: np.random.Generator, felt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Satisfaction (1–5) and NPS (0–10) from felt service shortfall plus noise."""
    mood = 1.0 - 1.2 * felt + rng.normal(0.0, 0.6, len(felt))
    satisfaction = np.clip(np.rint(3.3 + mood), 1, 5)
    nps = np.clip(np.rint(6.8 + 2.0 * mood + rng.normal(0.0, 0.8, len(felt))), 0, 10)
    return satisfaction, nps


def _choose_rows(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    """One category per row of a (k, c) probability matrix."""
    cumulative = np.cumsum(probabilities, axis=1)
    draw = rng.random(len(probabilities))[:, None] * cumulative[:, -1:]
    return np.minimum((draw >= cumulative).sum(axis=1), probabilities.shape[1] - 1).astype(np.int8)
