"""Synthetic CRM data with a known ground truth, so churn and CLV models can be checked against an oracle.

:func:`generate_dataset` writes the four input tables of the data contract (``transactions``, ``customers``,
``interactions``, ``cancellations``) into ``out_dir`` and the latent truth behind them into a separate
``truth_dir`` that no product command reads. :func:`true_churn_probability` turns that truth into the best
possible churn probability at any cutoff, the ceiling a model trained on the observable tables can approach.

The generative story (simulated month by month, vectorised over all customers):

* Onboarding: signups spread over the whole period, an early launch wave plus steadily growing acquisition.
* Buy till you die: each customer has a long-run purchase rate λ (orders/month, Gamma-distributed, heavy
  spread) and a spend level (lognormal, weakly negatively tied to λ: steady small buyers vs. occasional big
  spenders). The rate in force drifts with the customer's needs (a latent AR(1) "activity", mean-one
  multiplier, so alive customers have dormant spells). Order counts are Poisson with yearly seasonality
  (November/December peak); amounts are lognormal around the spend level.
* Service failures: every order may be delivered late (customer-, country-, channel- and season-dependent;
  store purchases never) and may be defective (returned). Failures trigger complaints and support contacts in
  the following days; complaints are resolved or not, quickly or slowly. Surveys go to a random subset each
  month and reflect the customer's recent experience with noise.
* Expectation–perception gap: failure points (late, defect, unresolved or slow contacts) accumulate in a
  decaying experience state; occasionally a latent "pull" (a competitor's offer, a life event) raises the
  customer's expectations for a few months. ``gap = max(0, expectation * failures / (1 + 0.1 * orders) + pull
  - threshold)`` multiplies the monthly hazard of leaving by ``exp(1.3 * gap)`` and lowers the purchase rate
  (engagement fades before leaving).
* Leaving: non-contract customers (``plan == "none"``) die silently; contract customers (monthly/annual) leave
  only by an explicit cancellation, annual ones mostly around their signup anniversaries. New customers have
  a higher hazard for their first months. A minority are loyal but unprofitable: frequent, cheap orders, heavy
  discounts and returns, low hazard.

Within a month every rate is constant, so the month's departure time is exponential and orders are a Poisson
process up to it. The oracle uses exactly these rates from the state at the cutoff.

Ground-truth folder format (``truth_dir``; read it with :func:`load_truth`):

* ``customers.parquet``: one row per customer, in the order of ``customers`` (ids ascend with signup):
  ``customer_id``, ``signup_date``, ``country``, ``segment``, ``acquisition_channel``, ``plan``,
  ``is_contract`` (bool), ``loyal_unprofitable`` (bool), ``purchase_rate`` (λ, long-run orders per month,
  before activity, seasonality and engagement), ``spend_level`` (typical order value), ``discount_propensity``,
  ``late_delivery_prob``, ``defect_prob``, ``expectation``, ``base_hazard`` (monthly, before tenure, plan and
  gap factors), ``death_time`` (when the customer left for good: silent death or cancellation; NaT if still
  there at ``end``) and ``cancellation_time`` (contract customers only, else NaT).
* ``gap.npy`` and ``activity.npy``: float32 arrays of shape (n_customers, n_months), rows aligned with
  ``customers.parquet``: the expectation–perception gap and the log purchase-rate multiplier in force during
  each simulated month (NaN before signup and after leaving). Hazard and purchase rate of any month follow
  from these and the traits (see ``_monthly_hazard`` and ``_purchase_rate``).
* ``meta.json``: ``format_version``, ``seed``, ``start``, ``end``, ``months`` (labels ``YYYY_MM``) and the model
  parameters used.

:func:`load_truth` returns the traits indexed by ``customer_id`` with float32 columns ``gap_YYYY_MM`` and
``activity_YYYY_MM`` per month, and ``attrs["synthetic"]`` holding ``start`` and ``end``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from features.errors import ConfigError

__all__ = [
    "TABLE_NAMES",
    "GenerationSummary",
    "generate_dataset",
    "load_truth",
    "true_churn_probability",
]

TABLE_NAMES: tuple[str, ...] = ("transactions", "customers", "interactions", "cancellations")

FileFormat = Literal["parquet", "csv"]
ProgressCallback = Callable[[str, float], None]

DAYS_PER_MONTH = 365.25 / 12
_SECONDS_PER_DAY = 86_400
_TRUTH_FORMAT_VERSION = 1
_ORDER_DIGITS = 10
_ROW_GROUP_ROWS = 1_000_000

_ORDER_CHANNELS = ("web", "app", "store", "phone")
_ORDER_CHANNEL_PROBS = (0.45, 0.30, 0.15, 0.10)
_LATE_CHANNEL_FACTOR = np.array([1.0, 0.85, 0.0, 1.4])  # store purchases are never delivered late
_CONTACT_CHANNELS = ("phone", "email", "chat", "store", "web")
_INTERACTION_TYPES = ("complaint", "support", "inquiry", "survey")
_COMPLAINT, _SUPPORT, _INQUIRY, _SURVEY = range(4)
_CONTACT_CHANNEL_PROBS = np.array(
    [
        [0.35, 0.30, 0.25, 0.05, 0.05],  # complaint
        [0.30, 0.25, 0.30, 0.05, 0.10],  # support
        [0.15, 0.35, 0.25, 0.05, 0.20],  # inquiry
        [0.00, 0.60, 0.00, 0.00, 0.40],  # survey
    ]
)
_RESOLVE_PROB = np.array(  # rows: complaint, support, inquiry; columns: contact channel
    [[0.82, 0.70, 0.78, 0.85, 0.60], [0.93, 0.88, 0.92, 0.95, 0.85], [0.98, 0.97, 0.98, 0.98, 0.96]]
)
_RESOLVE_MEDIAN_HOURS = np.array([20.0, 4.0, 1.5])
_RESOLVE_SIGMA = np.array([1.0, 1.0, 0.8])

_COUNTRIES = ("US", "GB", "DE", "FR", "NL", "ES")
_COUNTRY_PROBS = (0.35, 0.20, 0.15, 0.12, 0.08, 0.10)
_COUNTRY_LATE_FACTOR = np.array([1.0, 0.9, 0.7, 1.1, 0.8, 1.3])
_SEGMENTS = ("consumer", "small_business", "enterprise")
_SEGMENT_PROBS = (0.80, 0.15, 0.05)
_SEGMENT_RATE = np.array([1.0, 1.5, 2.0])
_SEGMENT_SPEND = np.array([1.0, 2.0, 4.0])
_SEGMENT_QUANTITY = np.array([0.35, 1.5, 4.0])
_SEGMENT_HAZARD = np.array([1.0, 0.85, 0.6])
_SEGMENT_INQUIRY = np.array([1.0, 1.8, 2.5])
_ACQUISITION = ("search", "social", "referral", "store", "partner")
_ACQUISITION_PROBS = (0.35, 0.25, 0.15, 0.15, 0.10)
_ACQUISITION_HAZARD = np.array([1.0, 1.35, 0.7, 0.85, 1.1])
_PLANS = ("none", "monthly", "annual")
_NONE, _MONTHLY, _ANNUAL = range(3)
_PLAN_PROBS_BY_SEGMENT = np.array([[0.83, 0.12, 0.05], [0.68, 0.20, 0.12], [0.45, 0.20, 0.35]])

# Calendar month -> multiplier (index 0 = January); the purchase season is normalised to mean 1.
_SEASON_RAW = np.array([0.88, 0.85, 0.95, 0.97, 1.0, 0.96, 0.93, 0.95, 1.0, 1.05, 1.30, 1.55])
_SEASON = _SEASON_RAW / _SEASON_RAW.mean()
_LATE_STRAIN = np.array([1.0] * 10 + [1.3, 1.6])  # logistics strain in the peak season
_DISCOUNT_SEASON = np.array([1.0] * 10 + [1.6, 1.2])  # Black Friday


@dataclass(frozen=True)
class _Params:
    """Model constants; recorded in ``meta.json`` so a truth folder documents what produced it."""

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


_P = _Params()
_MONTHLY_STATES = ("gap", "activity")


def _stationary_activity_sd() -> float:
    """Standard deviation of the AR(1) log purchase-rate multiplier in its steady state."""
    return _P.activity_sd / float(np.sqrt(1.0 - _P.activity_persistence**2))


@dataclass(frozen=True)
class GenerationSummary:
    """What :func:`generate_dataset` wrote, for the CLI to report."""

    out_dir: Path
    truth_dir: Path
    n_customers: int
    n_transactions: int
    n_interactions: int
    n_cancellations: int
    start: date
    end: date
    seconds: float


@dataclass(frozen=True)
class _Calendar:
    """The simulated months: ``edges`` are days since ``start``; month k covers [edges[k], edges[k+1])."""

    start: pd.Timestamp
    end: pd.Timestamp
    edges: np.ndarray
    month_of_year: np.ndarray  # 0 = January
    labels: tuple[str, ...]

    @property
    def n_months(self) -> int:
        return len(self.labels)

    @property
    def total_days(self) -> float:
        return float(self.edges[-1])

    @property
    def end_second(self) -> int:
        """The period end in seconds since its start."""
        return round(self.total_days * _SECONDS_PER_DAY)

    @property
    def start_us(self) -> int:
        """The period start in microseconds since the epoch."""
        return int(self.start.value // 1_000)

    def month_of_day(self, day: float) -> int:
        """Index of the simulated month that contains ``day``."""
        return int(np.searchsorted(self.edges, day, side="right") - 1)


@dataclass
class _Customers:
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
class _Orders:
    """One month of orders, sorted by time."""

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


@dataclass
class _Contacts:
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
    def concat(parts: list[_Contacts]) -> _Contacts:
        if not parts:
            return _Contacts(*(np.empty(0, dtype) for dtype in _CONTACT_DTYPES))
        names = [f.name for f in dataclasses.fields(_Contacts)]
        return _Contacts(*(np.concatenate([getattr(part, name) for part in parts]) for name in names))

    def take(self, index: np.ndarray) -> _Contacts:
        return _Contacts(*(getattr(self, f.name)[index] for f in dataclasses.fields(_Contacts)))

    def __len__(self) -> int:
        return len(self.customer)


_CONTACT_DTYPES = (np.int64, np.int64, np.int8, np.int8, np.int8, np.float64, np.int8, np.int8)


@dataclass
class _Outcome:
    """What the month-by-month simulation leaves behind besides the streamed transactions."""

    departure_day: np.ndarray  # inf = still there at the end
    gap: np.ndarray  # float32 (n_customers, n_months)
    activity: np.ndarray  # float32 (n_customers, n_months)
    contacts: _Contacts
    n_transactions: int


# --------------------------------------------------------------------------------------------- public API


def generate_dataset(
    out_dir: Path,
    n_customers: int = 5000,
    seed: int = 0,
    *,
    truth_dir: Path | None = None,
    file_format: FileFormat = "parquet",
    start: date = date(2023, 1, 1),
    end: date = date(2026, 6, 30),
    progress: ProgressCallback | None = None,
) -> GenerationSummary:
    """Simulate ``n_customers`` customers over [start, end) and write the tables and their ground truth.

    Writes ``<table>.parquet`` (or ``.csv``) for each of :data:`TABLE_NAMES` into ``out_dir`` and the truth
    (see the module docstring) into ``truth_dir`` (default: sibling ``<out_dir>-truth``). Both folders are
    built in hidden temporary siblings and renamed into place at the end, so readers never see half a
    dataset. The same seed gives byte-identical tables. ``progress(stage, fraction)`` is called as the
    stages ``"simulate"``, ``"write"`` and ``"truth"`` advance.

    Raises ``FileExistsError`` if ``out_dir`` or ``truth_dir`` exists and is not empty (the caller decides
    whether to delete it), and :class:`~features.errors.ConfigError` for invalid arguments.
    """
    began = time.perf_counter()
    out_dir = Path(out_dir)
    truth_dir = Path(truth_dir) if truth_dir is not None else out_dir.parent / f"{out_dir.name}-truth"
    _validate_arguments(n_customers, file_format, start, end, out_dir, truth_dir)
    for target in (out_dir, truth_dir):
        _ensure_free(target)
    report = progress or _no_progress
    calendar = _calendar(start, end)
    rng = np.random.default_rng(seed)
    customers = _draw_customers(rng, n_customers, calendar)
    ids = _id_bytes("C", np.arange(1, n_customers + 1), max(7, len(str(n_customers))))

    with _staging(out_dir) as data_tmp, _staging(truth_dir) as truth_tmp:
        writer = _TableWriter(data_tmp / f"transactions.{file_format}", _TRANSACTIONS_SCHEMA, file_format)
        try:
            outcome = _simulate_months(rng, customers, calendar, writer, ids, report)
        finally:
            writer.close()
        report("write", 0.0)
        n_interactions, n_cancellations = _write_tables(
            data_tmp, file_format, customers, outcome, calendar, ids
        )
        report("write", 1.0)
        _write_truth(truth_tmp, customers, outcome, calendar, ids, seed)
        report("truth", 1.0)
        _publish(truth_tmp, truth_dir, data_tmp, out_dir)

    return GenerationSummary(
        out_dir=out_dir,
        truth_dir=truth_dir,
        n_customers=n_customers,
        n_transactions=outcome.n_transactions,
        n_interactions=n_interactions,
        n_cancellations=n_cancellations,
        start=start,
        end=end,
        seconds=time.perf_counter() - began,
    )


def load_truth(truth_dir: Path) -> pd.DataFrame:
    """Read a truth folder written by :func:`generate_dataset` into one frame indexed by ``customer_id``.

    Columns are the latent traits of ``customers.parquet`` plus float32 ``gap_YYYY_MM`` and
    ``activity_YYYY_MM`` columns per simulated month; ``attrs["synthetic"]`` holds the period (``start``, ``end``) that
    :func:`true_churn_probability` needs.
    """
    truth_dir = Path(truth_dir)
    meta = json.loads((truth_dir / "meta.json").read_text())
    if meta.get("format_version") != _TRUTH_FORMAT_VERSION:
        raise ConfigError(
            f"{truth_dir} holds truth format {meta.get('format_version')!r}, this version reads "
            f"{_TRUTH_FORMAT_VERSION}; regenerate the synthetic data."
        )
    traits = pd.read_parquet(truth_dir / "customers.parquet").set_index("customer_id")
    states = [
        pd.DataFrame(
            np.load(truth_dir / f"{state}.npy"),
            index=traits.index,
            columns=[f"{state}_{label}" for label in meta["months"]],
        )
        for state in _MONTHLY_STATES
    ]
    truth = pd.concat([traits, *states], axis=1)
    truth.attrs["synthetic"] = {"start": meta["start"], "end": meta["end"]}
    return truth


def true_churn_probability(truth: pd.DataFrame, cutoff: pd.Timestamp, horizon_days: int) -> pd.Series:
    """Oracle probability that each customer churns in [cutoff, cutoff + horizon_days).

    Churn means what the observable label means: no purchase in the window, or a cancellation in it. The
    oracle knows the latent state at the cutoff: customers who already left (silently or by cancelling) get
    1.0; for the others it uses their purchase rate, activity and gap at the cutoff: the gap is held through
    the horizon, activity decays as its AR(1) is expected to, and tenure, anniversaries and seasonality
    advance as in the simulation. With
    piecewise-constant rates λ_k, μ_k over the months k of the window (durations Δ_k):

    * no contract (silent death): P = 1 − Σ_k S_k λ_k/(λ_k+μ_k)(1 − e^{−(λ_k+μ_k)Δ_k}), with S_k the
      probability of neither buying nor dying before month k (for constant rates this is
      e^{−(λ+μ)H} + μ/(λ+μ)(1 − e^{−(λ+μ)H}));
    * contract (explicit cancellation): P = 1 − e^{−Σμ_kΔ_k}(1 − e^{−Σλ_kΔ_k}).

    The window is clipped at the end of the simulated period, like the tables. Customers who had not signed
    up by the cutoff are left out. Returns a float Series in [0, 1] indexed by ``customer_id``.
    """
    calendar, cutoff_day = _oracle_calendar(truth, cutoff, horizon_days)
    signed_up = truth[truth["signup_date"] <= pd.Timestamp(cutoff)]
    state = _OracleState.at_cutoff(signed_up, calendar, calendar.month_of_day(cutoff_day))
    window_end = min(cutoff_day + horizon_days, calendar.total_days)
    probability = _window_churn_probability(state, calendar, cutoff_day, window_end)
    gone = (signed_up["death_time"] <= pd.Timestamp(cutoff)).to_numpy(dtype=bool, na_value=False)
    probability = np.where(gone, 1.0, probability)
    return pd.Series(probability, index=signed_up.index, name="true_churn_probability")


# ------------------------------------------------------------------------------------- validation & files


def _no_progress(stage: str, fraction: float) -> None:
    """Default progress callback: ignore."""


def _validate_arguments(
    n_customers: int, file_format: str, start: date, end: date, out_dir: Path, truth_dir: Path
) -> None:
    """Refuse arguments that cannot produce a dataset, before any work or file is touched."""
    if n_customers < 1:
        raise ConfigError(f"n_customers must be at least 1, got {n_customers}.")
    if file_format not in ("parquet", "csv"):
        raise ConfigError(f"file_format must be 'parquet' or 'csv', got {file_format!r}.")
    if not start < end:
        raise ConfigError(f"start ({start}) must be before end ({end}).")
    if out_dir.resolve() == truth_dir.resolve():
        raise ConfigError(f"truth_dir must differ from out_dir ({out_dir}); no command may read the truth.")


def _ensure_free(target: Path) -> None:
    """Refuse to overwrite: an existing non-empty folder is the caller's to delete."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(
            f"{target} already exists and is not empty; delete it or choose another folder "
            "(synthetic data is never written over existing files)."
        )


@functools.cache
def _digit_groups() -> np.ndarray:
    """ASCII bytes of 0000..9999, shape (10000, 4); used to format ids without Python loops."""
    numbers = np.arange(10_000)
    return np.stack([48 + (numbers // 10**p) % 10 for p in (3, 2, 1, 0)], axis=1).astype(np.uint8)


def _id_bytes(prefix: str, numbers: np.ndarray, digits: int) -> np.ndarray:
    """Fixed-width ids ``<prefix><zero-padded number>`` as a (len, width) uint8 matrix."""
    width = len(prefix) + digits
    out = np.empty((len(numbers), width), dtype=np.uint8)
    out[:, : len(prefix)] = np.frombuffer(prefix.encode(), dtype=np.uint8)
    rest = numbers.astype(np.int64)
    position = width
    while position > len(prefix):
        take = min(4, position - len(prefix))
        out[:, position - take : position] = _digit_groups()[rest % 10_000][:, 4 - take :]
        rest = rest // 10_000
        position -= take
    return out


def _fixed_width_strings(matrix: np.ndarray) -> pa.Array:
    """A (len, width) uint8 matrix of ASCII as an Arrow string array, without per-row Python work."""
    count, width = matrix.shape
    offsets = np.arange(0, (count + 1) * width, width, dtype=np.int64)
    data = pa.py_buffer(np.ascontiguousarray(matrix))
    return pa.Array.from_buffers(pa.large_string(), count, [None, pa.py_buffer(offsets), data])


def _vocab_strings(codes: np.ndarray, vocabulary: tuple[str, ...]) -> pa.Array:
    """Small integer codes as the strings they stand for."""
    indices = pa.array(codes.astype(np.int32))
    return pa.DictionaryArray.from_arrays(indices, pa.array(vocabulary)).cast(pa.large_string())


def _schema(fields: list[tuple[str, pa.DataType, str]]) -> pa.Schema:
    """Arrow schema plus pandas metadata, so ``pd.read_parquet`` restores the contract dtypes."""
    empty = pd.DataFrame({name: pd.Series([], dtype=dtype) for name, _, dtype in fields})
    metadata = pa.Schema.from_pandas(empty, preserve_index=False).metadata
    return pa.schema([(name, arrow_type) for name, arrow_type, _ in fields], metadata=metadata)


_TS = pa.timestamp("us")
_TRANSACTIONS_SCHEMA = _schema(
    [
        ("customer_id", pa.large_string(), "str"),
        ("timestamp", _TS, "datetime64[us]"),
        ("amount", pa.float64(), "float64"),
        ("order_id", pa.large_string(), "str"),
        ("quantity", pa.int64(), "int64"),
        ("discount", pa.float64(), "float64"),
        ("channel", pa.large_string(), "str"),
        ("returned", pa.bool_(), "bool"),
        ("delivery_delay_days", pa.float64(), "float64"),
    ]
)
_CUSTOMERS_SCHEMA = _schema(
    [
        ("customer_id", pa.large_string(), "str"),
        ("signup_date", _TS, "datetime64[us]"),
        ("country", pa.large_string(), "str"),
        ("segment", pa.large_string(), "str"),
        ("acquisition_channel", pa.large_string(), "str"),
        ("plan", pa.large_string(), "str"),
    ]
)
_INTERACTIONS_SCHEMA = _schema(
    [
        ("customer_id", pa.large_string(), "str"),
        ("timestamp", _TS, "datetime64[us]"),
        ("type", pa.large_string(), "str"),
        ("channel", pa.large_string(), "str"),
        ("resolved", pa.bool_(), "boolean"),
        ("resolution_hours", pa.float64(), "float64"),
        ("satisfaction", pa.int64(), "Int64"),
        ("nps", pa.int64(), "Int64"),
    ]
)
_CANCELLATIONS_SCHEMA = _schema(
    [("customer_id", pa.large_string(), "str"), ("timestamp", _TS, "datetime64[us]")]
)


class _TableWriter:
    """Appends Arrow batches to one parquet or CSV file, in row groups of about ``_ROW_GROUP_ROWS`` rows.

    Encoding happens in one background thread (Arrow releases the GIL), overlapping the simulation of the
    next month; at most one row group is in flight, so memory stays bounded. The bytes written depend only on
    the batches, not on timing. CSV timestamps are written to the second.
    """

    def __init__(self, path: Path, schema: pa.Schema, file_format: FileFormat) -> None:
        self._schema = schema
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._in_flight: Future[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="synthetic-writer")
        self._csv_schema: pa.Schema | None = None
        if file_format == "csv":
            self._csv_schema = pa.schema(
                [pa.field(f.name, pa.timestamp("s") if f.type == _TS else f.type) for f in schema]
            )
            options = pa_csv.WriteOptions(quoting_style="none")
            self._writer: pa_csv.CSVWriter | pq.ParquetWriter = pa_csv.CSVWriter(
                str(path), self._csv_schema, write_options=options
            )
        else:
            self._writer = pq.ParquetWriter(str(path), schema, **_parquet_options(schema))

    def write(self, columns: dict[str, pa.Array]) -> None:
        table = pa.Table.from_arrays(list(columns.values()), schema=self._schema)
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= _ROW_GROUP_ROWS:
            self._flush()

    def close(self) -> None:
        """Write what is left and close the file; re-raises any error from the background thread."""
        try:
            self._flush(final=True)
            self._wait()
        finally:
            self._executor.shutdown(wait=True)
            self._writer.close()

    def _flush(self, final: bool = False) -> None:
        """Hand the buffered batches to the writer thread as one row group (waits for the previous one)."""
        if not self._pending and not final:
            return
        table = pa.concat_tables(self._pending) if self._pending else self._schema.empty_table()
        self._pending, self._pending_rows = [], 0
        if table.num_rows == 0 and not final:
            return
        if self._csv_schema is not None:
            table = table.cast(self._csv_schema)
        self._wait()
        if table.num_rows:
            self._in_flight = self._executor.submit(self._writer.write_table, table)

    def _wait(self) -> None:
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            in_flight.result()


def _parquet_options(schema: pa.Schema) -> dict[str, object]:
    """zstd(1); dictionary pages for repetitive columns, delta encoding for the time-sorted timestamps."""
    unique_like = {"timestamp", "order_id", "amount", "resolution_hours", "signup_date"}
    return {
        "compression": "zstd",
        "compression_level": 1,
        "use_dictionary": [name for name in schema.names if name not in unique_like],
        "column_encoding": {name: "DELTA_BINARY_PACKED" for name in ("timestamp",) if name in schema.names},
    }


def _write_table(
    path: Path, schema: pa.Schema, file_format: FileFormat, columns: dict[str, pa.Array]
) -> None:
    """Write one whole table."""
    writer = _TableWriter(path, schema, file_format)
    try:
        writer.write(columns)
    finally:
        writer.close()


@contextlib.contextmanager
def _staging(target: Path) -> Iterator[Path]:
    """A hidden temporary sibling of ``target`` (same file system, so renaming is atomic); removed on exit
    unless it has been renamed into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _publish(truth_tmp: Path, truth_dir: Path, data_tmp: Path, out_dir: Path) -> None:
    """Rename truth then data into place; an existing empty folder is replaced, a non-empty one refused."""
    _rename_into_place(truth_tmp, truth_dir)
    try:
        _rename_into_place(data_tmp, out_dir)
    except BaseException:
        os.replace(truth_dir, truth_tmp)  # the truth of a dataset that was never published is removed
        raise


def _rename_into_place(source: Path, target: Path) -> None:
    """Atomic rename; if the target was filled meanwhile, say so as ``FileExistsError``."""
    try:
        os.replace(source, target)  # atomic; replaces only an empty directory
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            _ensure_free(target)
        raise


# ------------------------------------------------------------------------------------ customers & calendar


def _calendar(start: date, end: date) -> _Calendar:
    """Calendar months clipped to [start, end): a partial first and last month are months of their own."""
    first, last = pd.Timestamp(start), pd.Timestamp(end)
    month_starts = pd.date_range(first.replace(day=1), last, freq="MS")
    boundaries = [first, *[t for t in month_starts if first < t < last], last]
    edges = np.array([(t - first) / pd.Timedelta(days=1) for t in boundaries], dtype=np.float64)
    months = boundaries[:-1]
    return _Calendar(
        start=first,
        end=last,
        edges=edges,
        month_of_year=np.array([t.month - 1 for t in months], dtype=np.int64),
        labels=tuple(f"{t.year:04d}_{t.month:02d}" for t in months),
    )


def _signup_days(rng: np.random.Generator, n: int, total_days: float) -> np.ndarray:
    """Whole days since start, sorted: an early launch wave plus linearly growing acquisition."""
    early = rng.random(n) < _P.early_wave_share
    u = rng.random(n)
    scale = 0.12
    wave = -scale * np.log1p(-u * (1.0 - np.exp(-1.0 / scale)))  # truncated exponential on [0, 1)
    g = _P.signup_growth - 1.0
    growth = (np.sqrt(1.0 + 2.0 * g * u * (1.0 + g / 2.0)) - 1.0) / g  # density ∝ 1 + g x on [0, 1)
    fraction = np.where(early, wave, growth)
    return np.sort(np.minimum(np.floor(fraction * total_days), np.ceil(total_days) - 1.0))


def _draw_customers(rng: np.random.Generator, n: int, calendar: _Calendar) -> _Customers:
    """Static traits: who signs up when, segment/plan/country, purchase and spend levels, service exposure,
    expectation and base hazard (loyal-but-unprofitable customers buy often and cheaply, with discounts and
    returns, and rarely leave)."""
    signup_day = _signup_days(rng, n, calendar.total_days)
    segment = rng.choice(len(_SEGMENTS), size=n, p=_SEGMENT_PROBS).astype(np.int8)
    plan_draw = rng.random(n)[:, None] > np.cumsum(_PLAN_PROBS_BY_SEGMENT[segment], axis=1)
    loyal = rng.random(n) < _P.loyal_share
    shape = _P.purchase_rate_shape
    rate = (
        rng.gamma(shape, _P.mean_purchase_rate / shape, n) * _SEGMENT_RATE[segment] * np.where(loyal, 2.5, 1)
    )
    log_spend = (
        np.log(_P.spend_median)
        + _P.spend_rate_elasticity * np.log(rate / _P.mean_purchase_rate + 1e-3)
        + rng.normal(0.0, _P.spend_sigma, n)
    )
    acquisition = rng.choice(len(_ACQUISITION), size=n, p=_ACQUISITION_PROBS).astype(np.int8)
    country = rng.choice(len(_COUNTRIES), size=n, p=_COUNTRY_PROBS).astype(np.int8)
    base_hazard = (
        _P.base_hazard_median
        * np.exp(rng.normal(0.0, _P.base_hazard_sigma, n))
        * _ACQUISITION_HAZARD[acquisition]
        * _SEGMENT_HAZARD[segment]
        * np.where(loyal, 0.4, 1.0)
    )
    return _Customers(
        signup_day=signup_day,
        signup_month=np.searchsorted(calendar.edges, signup_day, side="right") - 1,
        country=country,
        segment=segment,
        acquisition=acquisition,
        plan=plan_draw.sum(axis=1).astype(np.int8),
        loyal=loyal,
        purchase_rate=rate,
        spend_level=np.exp(log_spend) * _SEGMENT_SPEND[segment] * np.where(loyal, 0.45, 1.0),
        discount_propensity=np.where(loyal, rng.beta(6.0, 3.0, n), rng.beta(1.2, 5.0, n)),
        late_prob=rng.beta(2.0, 30.0, n) * _COUNTRY_LATE_FACTOR[country],
        defect_prob=rng.beta(1.5, 25.0, n),
        discretionary_return_prob=np.where(loyal, 0.2, 0.02),
        complain_propensity=np.exp(rng.normal(0.0, 0.5, n)),
        expectation=np.exp(rng.normal(0.0, 0.5, n)) * np.where(loyal, 0.6, 1.0),
        base_hazard=base_hazard,
        primary_channel=rng.choice(len(_ORDER_CHANNELS), size=n, p=_ORDER_CHANNEL_PROBS).astype(np.int8),
    )


# ------------------------------------------------------------------------------------------ latent rates


def _perceived_gap(
    failures: np.ndarray, orders: np.ndarray, expectation: np.ndarray, pull: np.ndarray
) -> np.ndarray:
    """Expectation–perception gap: weighted recent failures (felt more by demanding customers) plus the
    latent pull of raised expectations (a competitor's offer, a life event), minus a tolerance."""
    perceived = expectation * failures / (1.0 + _P.order_normaliser * orders)
    return np.maximum(perceived + pull - _P.gap_threshold, 0.0)


def _monthly_hazard(
    base_hazard: np.ndarray,
    plan: np.ndarray,
    tenure_months: np.ndarray,
    months_since_signup: np.ndarray,
    gap: np.ndarray,
) -> np.ndarray:
    """Monthly hazard of leaving: base × new-customer boost × plan/anniversary factor × exp(slope × gap)."""
    newness = 1.0 + _P.new_customer_boost * np.exp(-tenure_months / _P.new_customer_months)
    anniversary = (months_since_signup > 0) & (months_since_signup % 12 == 0)
    annual = np.where(anniversary, _P.annual_anniversary_factor, _P.annual_off_cycle_factor)
    plan_factor = np.select([plan == _MONTHLY, plan == _ANNUAL], [_P.monthly_plan_factor, annual], 1.0)
    hazard = base_hazard * newness * plan_factor * np.exp(_P.gap_hazard_slope * gap)
    return np.minimum(hazard, _P.max_monthly_hazard)


def _purchase_rate(rate: np.ndarray, activity: np.ndarray, gap: np.ndarray, month_of_year: int) -> np.ndarray:
    """Orders per month in force: λ × current activity (needs drift) × seasonality × engagement, which
    fades as the gap grows."""
    mean_one = (
        activity - _stationary_activity_sd() ** 2 / 2.0
    )  # E[exp(mean_one)] = 1: λ stays the long-run rate
    return rate * np.exp(mean_one - _P.gap_engagement_slope * gap) * _SEASON[month_of_year]


# ------------------------------------------------------------------------------------------- simulation


def _simulate_months(
    rng: np.random.Generator,
    customers: _Customers,
    calendar: _Calendar,
    writer: _TableWriter,
    ids: np.ndarray,
    report: ProgressCallback,
) -> _Outcome:
    """Advance all customers month by month; stream each month's orders to ``writer``."""
    n = len(customers)
    alive = np.ones(n, dtype=bool)
    failures = np.zeros(n)
    orders_seen = np.zeros(n)
    pull = np.zeros(n)
    departure = np.full(n, np.inf)
    activity = rng.normal(0.0, _stationary_activity_sd(), n)
    gap_history = np.full((n, calendar.n_months), np.nan, dtype=np.float32)
    activity_history = np.full((n, calendar.n_months), np.nan, dtype=np.float32)
    contact_parts: list[_Contacts] = []
    n_transactions = 0
    for month in range(calendar.n_months):
        month_end = calendar.edges[month + 1]
        active = np.flatnonzero(alive & (customers.signup_day < month_end))
        window_start = np.maximum(calendar.edges[month], customers.signup_day[active])
        pull *= _P.pull_decay
        pulled = active[rng.random(len(active)) < _P.pull_prob]
        pull[pulled] += rng.exponential(_P.pull_mean, len(pulled))
        gap = _perceived_gap(
            failures[active], orders_seen[active], customers.expectation[active], pull[active]
        )
        gap_history[active, month] = gap
        activity[active] = _P.activity_persistence * activity[active] + rng.normal(
            0.0, _P.activity_sd, len(active)
        )
        activity_history[active, month] = activity[active]
        hazard = _monthly_hazard(
            customers.base_hazard[active],
            customers.plan[active],
            np.maximum(calendar.edges[month] - customers.signup_day[active], 0.0) / DAYS_PER_MONTH,
            month - customers.signup_month[active],
            gap,
        )
        leave_day = window_start + rng.exponential(DAYS_PER_MONTH, len(active)) / hazard
        leaves = leave_day < month_end
        window_end = np.where(leaves, leave_day, month_end)
        departure[active[leaves]] = leave_day[leaves]
        alive[active[leaves]] = False

        rate = _purchase_rate(
            customers.purchase_rate[active], activity[active], gap, calendar.month_of_year[month]
        )
        counts = rng.poisson(rate * (window_end - window_start) / DAYS_PER_MONTH)
        orders = _expand_transactions(
            rng, customers, calendar, month, active, counts, window_start, window_end
        )
        writer.write(_transaction_columns(orders, ids, n_transactions, calendar))
        n_transactions += len(orders)

        felt = customers.expectation * failures / (1.0 + _P.order_normaliser * orders_seen)
        month_contacts = _contacts_after_failures(rng, customers, calendar, month, orders, felt)
        background = _background_contacts(rng, customers, active, window_start, window_end, felt)
        failure_points = _failure_points(n, orders, [month_contacts, background])
        orders_seen *= _P.experience_decay
        orders_seen += np.bincount(orders.customer, minlength=n)
        failures *= _P.experience_decay
        failures += failure_points
        felt = customers.expectation * failures / (1.0 + _P.order_normaliser * orders_seen)
        surveys = _surveys(rng, active, window_start, window_end, felt[active])
        contact_parts += [month_contacts, background, surveys]
        report("simulate", (month + 1) / calendar.n_months)

    return _Outcome(departure, gap_history, activity_history, _Contacts.concat(contact_parts), n_transactions)


def _expand_transactions(
    rng: np.random.Generator,
    customers: _Customers,
    calendar: _Calendar,
    month: int,
    active: np.ndarray,
    counts: np.ndarray,
    window_start: np.ndarray,
    window_end: np.ndarray,
) -> _Orders:
    """One row per order: uniform times in each customer's active window, then channel, value and service."""
    position = np.repeat(np.arange(len(active)), counts)
    who = active[position]
    day = window_start[position] + rng.random(len(who)) * (window_end - window_start)[position]
    second = np.floor(day * _SECONDS_PER_DAY).astype(np.int64)
    order = np.argsort(second, kind="stable")
    who, second = who[order], second[order]
    k = len(who)
    moy = calendar.month_of_year[month]

    channel = np.where(
        rng.random(k) < 0.75,
        customers.primary_channel[who],
        rng.choice(len(_ORDER_CHANNELS), size=k, p=_ORDER_CHANNEL_PROBS),
    ).astype(np.int8)
    quantity = 1 + rng.poisson(_SEGMENT_QUANTITY[customers.segment[who]])
    gross = np.round(customers.spend_level[who] * rng.lognormal(0.0, 0.45, k) * quantity**0.6, 2)
    loyal = customers.loyal[who]
    uses_discount = rng.random(k) < np.minimum(
        customers.discount_propensity[who] * _DISCOUNT_SEASON[moy], 0.95
    )
    discount_rate = np.where(loyal, rng.uniform(0.15, 0.45, k), rng.uniform(0.05, 0.30, k))
    discount = np.where(uses_discount, np.round(gross * discount_rate, 2), 0.0)

    late_prob = customers.late_prob[who] * _LATE_CHANNEL_FACTOR[channel] * _LATE_STRAIN[moy]
    late = rng.random(k) < np.minimum(late_prob, 0.9)
    delay = np.where(late, np.round(0.5 + rng.gamma(1.5, 2.0, k), 1), 0.0)
    defect = rng.random(k) < np.minimum(customers.defect_prob[who] * (1.0 + late), 0.9)
    returned = defect | (rng.random(k) < customers.discretionary_return_prob[who])
    return _Orders(
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


def _contacts_after_failures(
    rng: np.random.Generator,
    customers: _Customers,
    calendar: _Calendar,
    month: int,
    orders: _Orders,
    felt: np.ndarray,
) -> _Contacts:
    """Complaints and support contacts in the days after late or defective orders."""
    failed = np.flatnonzero(orders.late | orders.defect)
    who = orders.customer[failed]
    delay = orders.delay_days[failed]
    complain_prob = np.minimum(
        _P.complaint_prob * customers.complain_propensity[who] * (1 + 0.1 * delay), 0.9
    )
    complains = rng.random(len(failed)) < complain_prob
    supports = rng.random(len(failed)) < _P.support_after_failure_prob
    kinds = np.concatenate([np.full(complains.sum(), _COMPLAINT), np.full(supports.sum(), _SUPPORT)])
    rows = np.concatenate([np.flatnonzero(complains), np.flatnonzero(supports)])
    after_days = delay[rows] + 0.5 + rng.exponential(2.0, len(rows))
    second = orders.second[failed][rows] + np.floor(after_days * _SECONDS_PER_DAY).astype(np.int64)
    strained = calendar.month_of_year[month] >= 10
    return _resolve(rng, who[rows], second, kinds.astype(np.int8), customers, felt, strained)


def _background_contacts(
    rng: np.random.Generator,
    customers: _Customers,
    active: np.ndarray,
    window_start: np.ndarray,
    window_end: np.ndarray,
    felt: np.ndarray,
) -> _Contacts:
    """Support and inquiry contacts that do not follow a failure (inquiries more for businesses)."""
    months_active = (window_end - window_start) / DAYS_PER_MONTH
    support = rng.poisson(_P.background_support_rate * months_active)
    inquiry = rng.poisson(
        _P.background_inquiry_rate * _SEGMENT_INQUIRY[customers.segment[active]] * months_active
    )
    position = np.concatenate(
        [np.repeat(np.arange(len(active)), support), np.repeat(np.arange(len(active)), inquiry)]
    )
    kinds = np.concatenate([np.full(support.sum(), _SUPPORT), np.full(inquiry.sum(), _INQUIRY)]).astype(
        np.int8
    )
    day = window_start[position] + rng.random(len(position)) * (window_end - window_start)[position]
    second = np.floor(day * _SECONDS_PER_DAY).astype(np.int64)
    return _resolve(rng, active[position], second, kinds, customers, felt, strained=False)


def _resolve(
    rng: np.random.Generator,
    who: np.ndarray,
    second: np.ndarray,
    kinds: np.ndarray,
    customers: _Customers,
    felt: np.ndarray,
    strained: bool,
) -> _Contacts:
    """Channel, resolution (hours) and an occasional rating (felt service, worse when slow) per contact."""
    k = len(who)
    channel = _choose_rows(rng, _CONTACT_CHANNEL_PROBS[kinds])
    resolve_prob = _RESOLVE_PROB[kinds, channel] + 0.08 * (customers.segment[who] == 2) - 0.1 * strained
    resolved = rng.random(k) < np.clip(resolve_prob, 0.0, 1.0)
    hours = np.round(_RESOLVE_MEDIAN_HOURS[kinds] * rng.lognormal(0.0, _RESOLVE_SIGMA[kinds]), 2)
    hours = np.where(resolved, np.maximum(hours, 0.01), np.nan)
    rated = resolved & (rng.random(k) < _P.rated_contact_share)
    slow = np.nan_to_num(hours) > _P.slow_resolution_hours
    satisfaction, _ = _scores(rng, felt[who] + 0.6 * slow)
    return _Contacts(
        customer=who.astype(np.int64),
        second=second,
        type=kinds,
        channel=channel,
        resolved=resolved.astype(np.int8),
        hours=hours,
        satisfaction=np.where(rated, satisfaction, -1).astype(np.int8),
        nps=np.full(k, -1, dtype=np.int8),
    )


def _surveys(
    rng: np.random.Generator,
    active: np.ndarray,
    window_start: np.ndarray,
    window_end: np.ndarray,
    felt: np.ndarray,
) -> _Contacts:
    """Answered surveys from a random subset of active customers; scores reflect felt service with noise."""
    share = _P.survey_share * (window_end - window_start) / DAYS_PER_MONTH
    picked = np.flatnonzero(rng.random(len(active)) < share)
    day = window_start[picked] + rng.random(len(picked)) * (window_end - window_start)[picked]
    satisfaction, nps = _scores(rng, felt[picked])
    k = len(picked)
    return _Contacts(
        customer=active[picked].astype(np.int64),
        second=np.floor(day * _SECONDS_PER_DAY).astype(np.int64),
        type=np.full(k, _SURVEY, dtype=np.int8),
        channel=_choose_rows(rng, np.broadcast_to(_CONTACT_CHANNEL_PROBS[_SURVEY], (k, 5))),
        resolved=np.full(k, -1, dtype=np.int8),
        hours=np.full(k, np.nan),
        satisfaction=satisfaction.astype(np.int8),
        nps=nps.astype(np.int8),
    )


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


def _failure_points(n: int, orders: _Orders, contacts: list[_Contacts]) -> np.ndarray:
    """This month's addition to each customer's experience state (weighted failures)."""
    points = np.bincount(
        orders.customer, weights=_P.weight_late * orders.late + _P.weight_defect * orders.defect, minlength=n
    )
    for part in contacts:
        complaint_like = part.type != _INQUIRY
        unresolved = complaint_like & (part.resolved == 0)
        slow = complaint_like & (np.nan_to_num(part.hours) > _P.slow_resolution_hours)
        quick = (part.type == _COMPLAINT) & (part.resolved == 1) & ~slow
        weight = (
            _P.weight_unresolved * unresolved + _P.weight_slow_resolution * slow + _P.weight_resolved * quick
        )
        points += np.bincount(part.customer, weights=weight, minlength=n)
    return points


# ------------------------------------------------------------------------------------------------ output


def _timestamps(calendar: _Calendar, second: np.ndarray) -> pa.Array:
    """Seconds since the period start as Arrow microsecond timestamps."""
    return pa.array(calendar.start_us + second * 1_000_000, type=_TS)


def _transaction_columns(
    orders: _Orders, ids: np.ndarray, offset: int, calendar: _Calendar
) -> dict[str, pa.Array]:
    """One month of orders as the contract's transaction columns; order ids continue from ``offset``."""
    order_numbers = np.arange(offset + 1, offset + len(orders) + 1)
    return {
        "customer_id": _fixed_width_strings(ids[orders.customer]),
        "timestamp": _timestamps(calendar, orders.second),
        "amount": pa.array(orders.amount),
        "order_id": _fixed_width_strings(_id_bytes("O", order_numbers, _ORDER_DIGITS)),
        "quantity": pa.array(orders.quantity),
        "discount": pa.array(orders.discount),
        "channel": _vocab_strings(orders.channel, _ORDER_CHANNELS),
        "returned": pa.array(orders.returned),
        "delivery_delay_days": pa.array(orders.delay_days),
    }


def _departure_seconds(outcome: _Outcome, calendar: _Calendar) -> np.ndarray:
    """Departure second per customer, rounded up so every event lies strictly before it; -1 = none."""
    finite = np.isfinite(outcome.departure_day)
    seconds = np.full(len(finite), -1, dtype=np.int64)
    seconds[finite] = np.floor(outcome.departure_day[finite] * _SECONDS_PER_DAY).astype(np.int64) + 1
    seconds[seconds >= calendar.end_second] = -1
    return seconds


def _write_tables(
    folder: Path,
    file_format: FileFormat,
    customers: _Customers,
    outcome: _Outcome,
    calendar: _Calendar,
    ids: np.ndarray,
) -> tuple[int, int]:
    """Write customers, interactions and cancellations; returns (n_interactions, n_cancellations)."""
    _write_table(
        folder / f"customers.{file_format}",
        _CUSTOMERS_SCHEMA,
        file_format,
        {
            "customer_id": _fixed_width_strings(ids),
            "signup_date": _timestamps(calendar, customers.signup_day.astype(np.int64) * _SECONDS_PER_DAY),
            "country": _vocab_strings(customers.country, _COUNTRIES),
            "segment": _vocab_strings(customers.segment, _SEGMENTS),
            "acquisition_channel": _vocab_strings(customers.acquisition, _ACQUISITION),
            "plan": _vocab_strings(customers.plan, _PLANS),
        },
    )
    departure = _departure_seconds(outcome, calendar)
    contacts = _observable_contacts(outcome.contacts, departure, calendar)
    _write_table(
        folder / f"interactions.{file_format}",
        _INTERACTIONS_SCHEMA,
        file_format,
        _interaction_columns(contacts, ids, calendar),
    )
    cancelled = np.flatnonzero((customers.plan != _NONE) & (departure >= 0))
    cancelled = cancelled[np.argsort(departure[cancelled], kind="stable")]
    _write_table(
        folder / f"cancellations.{file_format}",
        _CANCELLATIONS_SCHEMA,
        file_format,
        {
            "customer_id": _fixed_width_strings(ids[cancelled]),
            "timestamp": _timestamps(calendar, departure[cancelled]),
        },
    )
    return len(contacts), len(cancelled)


def _observable_contacts(contacts: _Contacts, departure: np.ndarray, calendar: _Calendar) -> _Contacts:
    """Contacts before the period end and the customer's departure, exact duplicates dropped, time-sorted."""
    leaves = departure[contacts.customer]
    keep = (contacts.second < calendar.end_second) & ((leaves < 0) | (contacts.second < leaves))
    contacts = contacts.take(np.flatnonzero(keep))
    n_customers = len(departure)
    key = (contacts.second * n_customers + contacts.customer) * len(_INTERACTION_TYPES) + contacts.type
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_key[1:] != sorted_key[:-1]
    return contacts.take(order[first])


def _interaction_columns(contacts: _Contacts, ids: np.ndarray, calendar: _Calendar) -> dict[str, pa.Array]:
    """Contacts as the contract's interaction columns, with nulls where the contract wants them."""
    return {
        "customer_id": _fixed_width_strings(ids[contacts.customer]),
        "timestamp": _timestamps(calendar, contacts.second),
        "type": _vocab_strings(contacts.type, _INTERACTION_TYPES),
        "channel": _vocab_strings(contacts.channel, _CONTACT_CHANNELS),
        "resolved": pa.array(contacts.resolved == 1, mask=contacts.resolved < 0),
        "resolution_hours": pa.array(contacts.hours, from_pandas=True),
        "satisfaction": pa.array(contacts.satisfaction.astype(np.int64), mask=contacts.satisfaction < 0),
        "nps": pa.array(contacts.nps.astype(np.int64), mask=contacts.nps < 0),
    }


def _write_truth(
    folder: Path, customers: _Customers, outcome: _Outcome, calendar: _Calendar, ids: np.ndarray, seed: int
) -> None:
    """Write the latent traits, the per-month gap and the metadata (format in the module docstring)."""
    departure = _departure_seconds(outcome, calendar)
    left_us = np.where(departure >= 0, calendar.start_us + departure * 1_000_000, 0)
    death_time = pa.array(left_us, type=_TS, mask=departure < 0)
    cancellation_time = pa.array(left_us, type=_TS, mask=(departure < 0) | (customers.plan == _NONE))
    traits = pa.table(
        {
            "customer_id": _fixed_width_strings(ids),
            "signup_date": _timestamps(calendar, customers.signup_day.astype(np.int64) * _SECONDS_PER_DAY),
            "country": _vocab_strings(customers.country, _COUNTRIES),
            "segment": _vocab_strings(customers.segment, _SEGMENTS),
            "acquisition_channel": _vocab_strings(customers.acquisition, _ACQUISITION),
            "plan": _vocab_strings(customers.plan, _PLANS),
            "is_contract": pa.array(customers.plan != _NONE),
            "loyal_unprofitable": pa.array(customers.loyal),
            "purchase_rate": pa.array(customers.purchase_rate),
            "spend_level": pa.array(customers.spend_level),
            "discount_propensity": pa.array(customers.discount_propensity),
            "late_delivery_prob": pa.array(customers.late_prob),
            "defect_prob": pa.array(customers.defect_prob),
            "expectation": pa.array(customers.expectation),
            "base_hazard": pa.array(customers.base_hazard),
            "death_time": death_time,
            "cancellation_time": cancellation_time,
        }
    )
    pq.write_table(traits, folder / "customers.parquet", compression="zstd")
    np.save(folder / "gap.npy", outcome.gap)
    np.save(folder / "activity.npy", outcome.activity)
    meta = {
        "format_version": _TRUTH_FORMAT_VERSION,
        "seed": seed,
        "start": calendar.start.isoformat(),
        "end": calendar.end.isoformat(),
        "months": list(calendar.labels),
        "params": dataclasses.asdict(_P),
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


# ------------------------------------------------------------------------------------------------ oracle


def _oracle_calendar(truth: pd.DataFrame, cutoff: pd.Timestamp, horizon_days: int) -> tuple[_Calendar, float]:
    """The truth's calendar and the cutoff in days since its start, after checking the arguments."""
    period = truth.attrs.get("synthetic")
    if not period:
        raise ConfigError("truth lacks attrs['synthetic']; load it with load_truth(truth_dir).")
    calendar = _calendar(pd.Timestamp(period["start"]).date(), pd.Timestamp(period["end"]).date())
    cutoff = pd.Timestamp(cutoff)
    if not calendar.start <= cutoff < calendar.end:
        raise ConfigError(
            f"cutoff {cutoff} lies outside the simulated period [{calendar.start}, {calendar.end})."
        )
    if horizon_days <= 0:
        raise ConfigError(f"horizon_days must be positive, got {horizon_days}.")
    return calendar, (cutoff - calendar.start) / pd.Timedelta(days=1)


def _projected_activity(activity: np.ndarray, months_ahead: int) -> np.ndarray:
    """The activity whose multiplier equals the expected AR(1) multiplier ``months_ahead`` months on."""
    decay = _P.activity_persistence**months_ahead
    return decay * activity + _stationary_activity_sd() ** 2 * (1.0 - decay**2) / 2.0


def _month_segments(calendar: _Calendar, begin: float, finish: float) -> Iterator[tuple[int, float, float]]:
    """(month index, start day, end day) of the parts of [begin, finish) inside each simulated month."""
    month = calendar.month_of_day(begin)
    while month < calendar.n_months and calendar.edges[month] < finish:
        yield month, max(begin, calendar.edges[month]), min(finish, calendar.edges[month + 1])
        month += 1


@dataclass(frozen=True)
class _OracleState:
    """What the generator knows about each signed-up customer at a cutoff in month ``month``."""

    month: int
    plan: np.ndarray
    base_hazard: np.ndarray
    purchase_rate: np.ndarray
    signup_day: np.ndarray
    signup_month: np.ndarray
    gap: np.ndarray
    activity: np.ndarray

    @staticmethod
    def at_cutoff(truth: pd.DataFrame, calendar: _Calendar, month: int) -> _OracleState:
        """Traits plus the cutoff month's gap and activity of the customers in ``truth``."""
        label = calendar.labels[month]
        signup_day = (truth["signup_date"] - calendar.start).dt.total_seconds().to_numpy() / _SECONDS_PER_DAY
        return _OracleState(
            month=month,
            plan=pd.Categorical(truth["plan"], categories=_PLANS).codes.astype(np.int8),
            base_hazard=truth["base_hazard"].to_numpy(dtype=np.float64),
            purchase_rate=truth["purchase_rate"].to_numpy(dtype=np.float64),
            signup_day=signup_day,
            signup_month=np.searchsorted(calendar.edges, signup_day, side="right") - 1,
            gap=np.nan_to_num(truth[f"gap_{label}"].to_numpy(dtype=np.float64)),
            activity=np.nan_to_num(truth[f"activity_{label}"].to_numpy(dtype=np.float64)),
        )


def _window_churn_probability(
    state: _OracleState, calendar: _Calendar, begin: float, finish: float
) -> np.ndarray:
    """P(churn in [begin, finish)) for customers alive at ``begin``, integrating month by month."""
    n = len(state.plan)
    survive_no_buy, buy_first = np.ones(n), np.zeros(n)
    total_hazard, total_rate = np.zeros(n), np.zeros(n)
    for month, segment_start, segment_end in _month_segments(calendar, begin, finish):
        hazard, rate = _daily_rates(state, calendar, month)
        span = segment_end - segment_start
        both = hazard + rate
        share_buying = np.divide(rate, both, out=np.zeros_like(both), where=both > 0)
        buy_first += survive_no_buy * share_buying * -np.expm1(-both * span)
        survive_no_buy *= np.exp(-both * span)
        total_hazard += hazard * span
        total_rate += rate * span
    silent = 1.0 - buy_first  # no purchase before dying or the window ending
    explicit = 1.0 - np.exp(-total_hazard) * -np.expm1(-total_rate)  # cancels, or survives without buying
    return np.clip(np.where(state.plan == _NONE, silent, explicit), 0.0, 1.0)


def _daily_rates(state: _OracleState, calendar: _Calendar, month: int) -> tuple[np.ndarray, np.ndarray]:
    """(hazard, purchase rate) per day in ``month``: the cutoff's gap held, activity decaying as expected."""
    tenure = np.maximum(calendar.edges[month] - state.signup_day, 0.0) / DAYS_PER_MONTH
    hazard = _monthly_hazard(state.base_hazard, state.plan, tenure, month - state.signup_month, state.gap)
    activity = _projected_activity(state.activity, month - state.month)
    rate = _purchase_rate(state.purchase_rate, activity, state.gap, calendar.month_of_year[month])
    return hazard / DAYS_PER_MONTH, rate / DAYS_PER_MONTH
