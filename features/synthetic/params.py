"""The world's constants, the latent model shared by the simulation and the oracle, and the record types.

The hazard and purchase-rate formulas live here, not in the simulation, because the oracle must evaluate
exactly the rates the simulation used: one definition, read by both. :class:`Params` is recorded in the
truth's ``meta.json`` and read back by the oracle, so a truth folder documents what produced it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date
from typing import Literal

import numpy as np
import pandas as pd

FileFormat = Literal["parquet", "csv"]

DAYS_PER_MONTH = 365.25 / 12
SECONDS_PER_DAY = 86_400

ORDER_CHANNELS = ("web", "app", "store", "phone")
ORDER_CHANNEL_PROBS = (0.45, 0.30, 0.15, 0.10)
LATE_CHANNEL_FACTOR = np.array([1.0, 0.85, 0.0, 1.4])  # store purchases are never delivered late
CONTACT_CHANNELS = ("phone", "email", "chat", "store", "web")
INTERACTION_TYPES = ("complaint", "support", "inquiry", "survey")
COMPLAINT, SUPPORT, INQUIRY, SURVEY = range(4)
CONTACT_CHANNEL_PROBS = np.array(
    [
        [0.35, 0.30, 0.25, 0.05, 0.05],  # complaint
        [0.30, 0.25, 0.30, 0.05, 0.10],  # support
        [0.15, 0.35, 0.25, 0.05, 0.20],  # inquiry
        [0.00, 0.60, 0.00, 0.00, 0.40],  # survey
    ]
)
RESOLVE_PROB = np.array(  # rows: complaint, support, inquiry; columns: contact channel
    [[0.82, 0.70, 0.78, 0.85, 0.60], [0.93, 0.88, 0.92, 0.95, 0.85], [0.98, 0.97, 0.98, 0.98, 0.96]]
)
RESOLVE_MEDIAN_HOURS = np.array([20.0, 4.0, 1.5])
RESOLVE_SIGMA = np.array([1.0, 1.0, 0.8])

COUNTRIES = ("US", "GB", "DE", "FR", "NL", "ES")
COUNTRY_PROBS = (0.35, 0.20, 0.15, 0.12, 0.08, 0.10)
COUNTRY_LATE_FACTOR = np.array([1.0, 0.9, 0.7, 1.1, 0.8, 1.3])
SEGMENTS = ("consumer", "small_business", "enterprise")
CONSUMER, SMALL_BUSINESS, ENTERPRISE = range(3)
SEGMENT_PROBS = (0.80, 0.15, 0.05)
SEGMENT_RATE = np.array([1.0, 1.5, 2.0])
SEGMENT_SPEND = np.array([1.0, 2.0, 4.0])
SEGMENT_QUANTITY = np.array([0.35, 1.5, 4.0])
SEGMENT_HAZARD = np.array([1.0, 0.85, 0.6])
SEGMENT_INQUIRY = np.array([1.0, 1.8, 2.5])
ACQUISITION = ("search", "social", "referral", "store", "partner")
ACQUISITION_PROBS = (0.35, 0.25, 0.15, 0.15, 0.10)
ACQUISITION_HAZARD = np.array([1.0, 1.35, 0.7, 0.85, 1.1])
PLANS = ("none", "monthly", "annual")
NONE, MONTHLY, ANNUAL = range(3)
PLAN_PROBS_BY_SEGMENT = np.array([[0.83, 0.12, 0.05], [0.68, 0.20, 0.12], [0.45, 0.20, 0.35]])

# Calendar month -> multiplier (index 0 = January); the purchase season is normalised to mean 1.
SEASON_RAW = np.array([0.88, 0.85, 0.95, 0.97, 1.0, 0.96, 0.93, 0.95, 1.0, 1.05, 1.30, 1.55])
SEASON = SEASON_RAW / SEASON_RAW.mean()
LATE_STRAIN = np.array([1.0] * 10 + [1.3, 1.6])  # logistics strain in the peak season
DISCOUNT_SEASON = np.array([1.0] * 10 + [1.6, 1.2])  # Black Friday

# Order and contact details the simulation draws; the truth's residual value takes their expectations.
PRIMARY_CHANNEL_SHARE = 0.75  # share of a customer's orders through their usual channel
ORDER_VALUE_SIGMA = 0.45  # lognormal noise of an order's gross value around the spend level
QUANTITY_EXPONENT = 0.6  # gross value grows with quantity ** this
MAX_DISCOUNT_USE = 0.95  # cap on the chance that an order uses a discount
DISCOUNT_DEPTH = ((0.05, 0.30), (0.15, 0.45))  # uniform range of the discount rate: others, loyal
RETURN_PROB, LOYAL_RETURN_PROB = 0.02, 0.2  # discretionary returns (defects are returned too)
MAX_LATE_PROB = MAX_DEFECT_PROB = 0.9
DELAY_OFFSET_DAYS, DELAY_SHAPE, DELAY_SCALE = 0.5, 1.5, 2.0  # late by offset + gamma(shape, scale) days
DELAY_COMPLAINT_SLOPE = 0.1  # each day late raises the chance of a complaint by this share
MAX_COMPLAINT_PROB = 0.9
ENTERPRISE_RESOLVE_BONUS = 0.08  # enterprise contacts are resolved more often
STRAINED_FROM_MONTH = 10  # November (0-based month of year) on, contact centres are strained:
STRAINED_RESOLVE_PENALTY = 0.1  # contacts after failures are resolved less often


@dataclass(frozen=True)
class Params:
    """Model constants; recorded in ``meta.json`` so a truth folder documents what produced it.

    Adding a field changes every truth folder's ``meta.json``; scenario-specific settings belong in
    :class:`~features.synthetic.scenarios.World` instead.
    """

    mean_purchase_rate: float = 1.4  # long-run orders per month
    purchase_rate_shape: float = 0.7
    spend_median: float = 38.0
    spend_sigma: float = 0.8
    spend_rate_elasticity: float = -0.35
    loyal_share: float = 0.07
    base_hazard_median: float = 0.01  # per month
    base_hazard_sigma: float = 0.6
    new_customer_boost: float = 1.5
    new_customer_months: float = 3.0
    monthly_plan_factor: float = 0.9
    annual_off_cycle_factor: float = 0.1
    annual_anniversary_factor: float = 8.0
    max_monthly_hazard: float = 3.0
    gap_threshold: float = 0.25
    gap_hazard_slope: float = 1.3
    gap_engagement_slope: float = 0.8
    order_normaliser: float = 0.1
    experience_decay: float = 0.75
    pull_prob: float = 0.08  # monthly chance that a competitor offer or life event raises expectations
    pull_mean: float = 1.0
    pull_decay: float = 0.7
    activity_persistence: float = 0.9  # AR(1) coefficient of the log purchase-rate multiplier, per month
    activity_sd: float = 0.45  # its monthly innovation
    weight_late: float = 1.0
    weight_defect: float = 0.8
    weight_unresolved: float = 2.0
    weight_slow_resolution: float = 0.7
    weight_resolved: float = 0.15
    slow_resolution_hours: float = 48.0
    complaint_prob: float = 0.3
    support_after_failure_prob: float = 0.2
    background_support_rate: float = 0.04  # per month
    background_inquiry_rate: float = 0.06  # per month
    survey_share: float = 0.04  # share of active customers answering a survey per month
    rated_contact_share: float = 0.35  # share of resolved contacts that get a satisfaction rating
    early_wave_share: float = 0.3
    signup_growth: float = 1.8  # acquisition at the end of the period relative to its start

    @property
    def stationary_activity_sd(self) -> float:
        """Standard deviation of the AR(1) log purchase-rate multiplier in its steady state."""
        return self.activity_sd / float(np.sqrt(1.0 - self.activity_persistence**2))

    @classmethod
    def from_meta(cls, recorded: dict[str, float]) -> Params:
        """The parameters a truth folder recorded; fields it lacks keep their defaults."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{name: value for name, value in recorded.items() if name in names})


DEFAULT_PARAMS = Params()


# ------------------------------------------------------------------------------------------- calendar


@dataclass(frozen=True)
class Calendar:
    """The simulated months: ``edges`` are days since ``start``; month k covers [edges[k], edges[k+1])."""

    start: pd.Timestamp
    end: pd.Timestamp
    edges: np.ndarray
    month_of_year: np.ndarray  # 0 = January
    labels: tuple[str, ...]

    @staticmethod
    def between(start: date, end: date) -> Calendar:
        """Calendar months clipped to [start, end): a partial first and last month are months of their own."""
        first, last = pd.Timestamp(start), pd.Timestamp(end)
        month_starts = pd.date_range(first.replace(day=1), last, freq="MS")
        boundaries = [first, *[t for t in month_starts if first < t < last], last]
        edges = np.array([(t - first) / pd.Timedelta(days=1) for t in boundaries], dtype=np.float64)
        months = boundaries[:-1]
        return Calendar(
            start=first,
            end=last,
            edges=edges,
            month_of_year=np.array([t.month - 1 for t in months], dtype=np.int64),
            labels=tuple(f"{t.year:04d}_{t.month:02d}" for t in months),
        )

    @property
    def n_months(self) -> int:
        return len(self.labels)

    @property
    def total_days(self) -> float:
        return float(self.edges[-1])

    @property
    def end_second(self) -> int:
        """The period end in seconds since its start."""
        return round(self.total_days * SECONDS_PER_DAY)

    @property
    def start_us(self) -> int:
        """The period start in microseconds since the epoch."""
        return int(self.start.value // 1_000)

    def month_of_day(self, day: float) -> int:
        """Index of the simulated month that contains ``day``."""
        return int(np.searchsorted(self.edges, day, side="right") - 1)


# ------------------------------------------------------------------------------------------ latent rates


def perceived_gap(
    p: Params, failures: np.ndarray, orders: np.ndarray, expectation: np.ndarray, pull: np.ndarray
) -> np.ndarray:
    """Expectation–perception gap: weighted recent failures (felt more by demanding customers) plus the
    latent pull of raised expectations (a competitor's offer, a life event), minus a tolerance."""
    perceived = expectation * failures / (1.0 + p.order_normaliser * orders)
    return np.maximum(perceived + pull - p.gap_threshold, 0.0)


@dataclass(frozen=True)
class Tenure:
    """Where customers stand in their lifetime during one month: months since signup, fractional and whole."""

    months: np.ndarray  # fractional tenure at the month's start (new-customer boost)
    whole_months: np.ndarray  # simulated months since the signup month (annual anniversaries)


def monthly_hazard(
    p: Params, base_hazard: np.ndarray, plan: np.ndarray, tenure: Tenure, gap: np.ndarray, world_factor: float
) -> np.ndarray:
    """Monthly hazard of leaving: base × new-customer boost × plan/anniversary factor × exp(slope × gap)
    × the world's factor for the month (1 in the base world; seasons and trends in scenarios), capped."""
    newness = 1.0 + p.new_customer_boost * np.exp(-tenure.months / p.new_customer_months)
    anniversary = (tenure.whole_months > 0) & (tenure.whole_months % 12 == 0)
    annual = np.where(anniversary, p.annual_anniversary_factor, p.annual_off_cycle_factor)
    plan_factor = np.select([plan == MONTHLY, plan == ANNUAL], [p.monthly_plan_factor, annual], 1.0)
    hazard = base_hazard * newness * plan_factor * np.exp(p.gap_hazard_slope * gap) * world_factor
    return np.minimum(hazard, p.max_monthly_hazard)


def purchase_rate(
    p: Params, rate: np.ndarray, activity: np.ndarray, gap: np.ndarray, month_of_year: int
) -> np.ndarray:
    """Orders per month in force: λ × current activity (needs drift) × seasonality × engagement, which
    fades as the gap grows."""
    mean_one = activity - p.stationary_activity_sd**2 / 2.0  # E[exp(mean_one)] = 1: λ stays the long-run rate
    return rate * np.exp(mean_one - p.gap_engagement_slope * gap) * SEASON[month_of_year]


# ------------------------------------------------------------------------------------------ record types


@dataclass
class Customers:
    """Per-customer latent traits (one array entry per customer, ordered by signup)."""

    signup_day: np.ndarray
    signup_month: np.ndarray
    country: np.ndarray
    segment: np.ndarray
    acquisition: np.ndarray
    plan: np.ndarray
    loyal: np.ndarray
    purchase_rate: np.ndarray
    spend_level: np.ndarray
    discount_propensity: np.ndarray
    late_prob: np.ndarray
    defect_prob: np.ndarray
    discretionary_return_prob: np.ndarray
    complain_propensity: np.ndarray
    expectation: np.ndarray
    base_hazard: np.ndarray
    primary_channel: np.ndarray

    def __len__(self) -> int:
        return len(self.signup_day)


@dataclass
class Orders:
    """One month of orders, sorted by time (``second``: seconds since the period start)."""

    customer: np.ndarray
    second: np.ndarray
    channel: np.ndarray
    quantity: np.ndarray
    amount: np.ndarray
    discount: np.ndarray
    late: np.ndarray
    delay_days: np.ndarray
    defect: np.ndarray
    returned: np.ndarray

    def __len__(self) -> int:
        return len(self.customer)


CONTACT_DTYPES = (np.int64, np.int64, np.int8, np.int8, np.int8, np.float64, np.int8, np.int8)


@dataclass
class Contacts:
    """Interactions (any month, unsorted). ``resolved``: 1/0, -1 = null; ``satisfaction``/``nps``: -1 = null."""

    customer: np.ndarray
    second: np.ndarray
    type: np.ndarray
    channel: np.ndarray
    resolved: np.ndarray
    hours: np.ndarray
    satisfaction: np.ndarray
    nps: np.ndarray

    @staticmethod
    def concat(parts: list[Contacts]) -> Contacts:
        if not parts:
            return Contacts(*(np.empty(0, dtype) for dtype in CONTACT_DTYPES))
        names = [f.name for f in dataclasses.fields(Contacts)]
        return Contacts(*(np.concatenate([getattr(part, name) for part in parts]) for name in names))

    def take(self, index: np.ndarray) -> Contacts:
        return Contacts(*(getattr(self, f.name)[index] for f in dataclasses.fields(Contacts)))

    def __len__(self) -> int:
        return len(self.customer)


@dataclass
class Experience:
    """Per customer, the latent state a future grows from besides the traits: the decaying experience state
    (weighted ``failures`` and ``orders_seen``), the ``pull`` on expectations and the log purchase-rate
    ``activity``. With the traits it fixes the gap, and so the hazard and purchase rate."""

    failures: np.ndarray
    orders_seen: np.ndarray
    pull: np.ndarray
    activity: np.ndarray


@dataclass
class Outcome:
    """What the month-by-month simulation leaves behind besides the streamed transactions.

    Monthly histories are float32 (n_customers, n_months), NaN before signup and after leaving: ``gap``,
    ``activity`` and ``pull`` as in force during the month, ``failures`` and ``orders_seen`` as at its
    start. ``final`` is everyone's state at the period end (float64), where the future begins."""

    departure_day: np.ndarray  # inf = still there at the end
    gap: np.ndarray
    activity: np.ndarray
    contacts: Contacts
    failures: np.ndarray
    orders_seen: np.ndarray
    pull: np.ndarray
    final: Experience
