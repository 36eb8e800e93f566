"""Distribution drift: a compact reference profile of a frame, and how far another frame moved from it.

The reference is built once, from the frame the model was trained on (:func:`reference_profile`, JSON-able
so it can travel in the model bundle's ``metadata["reference"]``), and each scoring run is compared with it
(:func:`compare`). Two measures per column:

- **PSI** (population stability index) over the reference's own quantile bins (deciles; ties merged,
  point masses such as "no late delivery" and missing values in bins of their own), categorical levels as
  bins. Practitioners' thresholds, used as defaults:
  below 0.1 stable, 0.1 to 0.2 **warn** (a moderate shift), 0.2 and above **alert** (a shift large enough
  to doubt the model's inputs).
- a **two-sample test**: Kolmogorov-Smirnov for numeric columns (``scipy.stats.ks_2samp``, the reference
  side a 201-point quantile sketch), chi-square for categorical ones (``scipy.stats.chisquare`` of the
  current counts against the reference shares). At a million customers any difference is "significant", so
  the test's p-value is reported, never alerted on alone: the status comes from the PSI.

scipy is already a dependency: the statistics are a few dozen lines on top of it, where evidently,
nannyml or alibi-detect would add hundreds of MB of dependencies (and pins on pandas/numpy) for the same two
measures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from features.bundle import ModelBundle
    from features.loading import Dataset

PROFILE_FORMAT = 1
PSI_BINS = 10
SKETCH_POINTS = 201  # quantiles kept for the KS test (0%, 0.5%, ... 100%)
TEST_SAMPLE = 50_000  # current rows given to the KS test (deterministic sample); PSI uses every row
POINT_MASS = 0.02  # a value held by this share of the reference gets a bin of its own
_FLOOR = 1e-4  # share given to an empty bin, so PSI stays finite
_MISSING = "__missing__"
_OTHER = "__other__"

Status = Literal["ok", "warn", "alert"]
_RANK: dict[str, int] = {"ok": 0, "warn": 1, "alert": 2}


@dataclass(frozen=True)
class DriftThresholds:
    """PSI bounds of warn and alert, and the p-value below which a test calls a difference significant."""

    psi_warn: float = 0.1
    psi_alert: float = 0.2
    p_value: float = 0.01

    def status(self, psi: float) -> Status:
        if psi >= self.psi_alert:
            return "alert"
        return "warn" if psi >= self.psi_warn else "ok"


@dataclass(frozen=True)
class ColumnDrift:
    """One column's drift: PSI, the two-sample test and the resulting status."""

    name: str
    kind: Literal["numeric", "categorical"]
    psi: float
    test: Literal["ks", "chi2"]
    statistic: float
    p_value: float
    significant: bool
    status: Status
    rows: int


@dataclass(frozen=True)
class DriftReport:
    """Every compared column; ``status`` is the worst column's. ``missing`` lists reference columns the
    frame does not have (not compared)."""

    columns: list[ColumnDrift]
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)
    missing: list[str] = field(default_factory=list)

    @property
    def status(self) -> Status:
        statuses: list[Status] = ["ok", *(c.status for c in self.columns)]
        return max(statuses, key=_RANK.__getitem__)

    def flagged(self, at_least: Status = "warn") -> list[ColumnDrift]:
        """Columns at ``at_least`` or worse, largest PSI first."""
        chosen = [c for c in self.columns if _RANK[c.status] >= _RANK[at_least]]
        return sorted(chosen, key=lambda c: -c.psi)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "thresholds": asdict(self.thresholds),
            "columns": [asdict(c) for c in self.columns],
            "missing": list(self.missing),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftReport:
        return cls(
            [ColumnDrift(**c) for c in data.get("columns", [])],
            DriftThresholds(**data.get("thresholds", {})),
            list(data.get("missing", [])),
        )


def _is_numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def reference_profile(frame: pd.DataFrame, columns: Iterable[str] | None = None) -> dict[str, Any]:
    """The reference distributions of ``columns`` (default: every column but ``customer_id``), JSON-able.

    Numeric: the decile cut points (ties merged) with the share of rows in each bin and the missing share,
    plus a quantile sketch for the KS test. Categorical: each level's share, missing included. A few KiB
    per column, whatever the frame's size."""
    names = [c for c in (columns if columns is not None else frame.columns) if c != "customer_id"]
    profile: dict[str, Any] = {"format": PROFILE_FORMAT, "rows": len(frame), "columns": {}}
    for name in names:
        values = frame[name]
        if _is_numeric(values):
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            present = numbers[np.isfinite(numbers)]
            if present.size:
                edges = np.unique(np.quantile(present, np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
                points = edges[[np.mean(present == e) >= POINT_MASS for e in edges]]
                sketch = np.quantile(present, np.linspace(0, 1, SKETCH_POINTS))
            else:
                edges, points, sketch = np.array([]), np.array([]), np.array([])
            profile["columns"][name] = {
                "kind": "numeric",
                "edges": edges.tolist(),
                "points": points.tolist(),
                "shares": _numeric_shares(numbers, edges, points).tolist(),
                "sketch": sketch.tolist(),
            }
        else:
            profile["columns"][name] = {"kind": "categorical", "shares": _level_shares(values)}
    return profile


def _numeric_shares(numbers: np.ndarray, edges: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Shares of rows in each bin: ``len(edges) + 1`` bins split at the edges (a value equal to an edge
    goes to the bin above it), then one bin per point mass (values equal to a point), then the missing bin.

    Point masses have bins of their own because counts and shares are often zero-inflated: when 90% of
    customers had no late delivery, every decile edge is 0 and "0" and "3 late deliveries" would share a bin,
    hiding a logistics failure."""
    finite = numbers[np.isfinite(numbers)]
    bins = np.searchsorted(edges, finite, side="right")
    if len(points):
        above = np.searchsorted(points, finite).clip(max=len(points) - 1)
        below = (above - 1).clip(min=0)
        nearest = np.where(np.abs(points[below] - finite) < np.abs(points[above] - finite), below, above)
        # equal up to rounding (stored scores carry 6 decimals; calibrated probabilities are steps)
        on_point = np.isclose(points[nearest], finite, rtol=1e-6, atol=1e-6)
        bins = np.where(on_point, len(edges) + 1 + nearest, bins)
    counts = np.bincount(bins, minlength=len(edges) + 1 + len(points)).astype(float)
    counts = np.append(counts, len(numbers) - len(finite))
    return counts / max(len(numbers), 1)


def _level_shares(values: pd.Series) -> dict[str, float]:
    text = values.astype("string").fillna(_MISSING)
    return {str(k): float(v) for k, v in text.value_counts(normalize=True, sort=False).items()}


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins (empty bins floored)."""
    e = np.clip(np.asarray(expected, dtype=float), _FLOOR, None)
    a = np.clip(np.asarray(actual, dtype=float), _FLOOR, None)
    return float(np.sum((a - e) * np.log(a / e)))


def compare(
    reference: Mapping[str, Any], frame: pd.DataFrame, thresholds: DriftThresholds | None = None
) -> DriftReport:
    """How far ``frame`` moved from ``reference`` (a :func:`reference_profile`), column by column.

    Columns of the reference missing from the frame are listed in ``missing``; extra frame columns are
    ignored. An empty frame compares nothing."""
    from scipy import stats

    limits = thresholds or DriftThresholds()
    out: list[ColumnDrift] = []
    missing: list[str] = []
    for name, spec in reference.get("columns", {}).items():
        if name not in frame.columns:
            missing.append(name)
            continue
        values = frame[name]
        if not len(values):
            continue
        if spec["kind"] == "numeric":
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            edges = np.asarray(spec["edges"], dtype=float)
            points = np.asarray(spec.get("points", []), dtype=float)
            value = psi(np.asarray(spec["shares"]), _numeric_shares(numbers, edges, points))
            present = numbers[np.isfinite(numbers)]
            if len(present) > TEST_SAMPLE:
                present = np.random.default_rng(0).choice(present, TEST_SAMPLE, replace=False)
            if present.size and spec["sketch"]:
                result = stats.ks_2samp(np.asarray(spec["sketch"]), present)
                statistic, p = float(result.statistic), float(result.pvalue)
            else:
                statistic, p = 0.0, 1.0
            test: Literal["ks", "chi2"] = "ks"
            kind: Literal["numeric", "categorical"] = "numeric"
        else:
            value, statistic, p = _categorical(spec["shares"], values, stats)
            test, kind = "chi2", "categorical"
        out.append(
            ColumnDrift(
                name,
                kind,
                round(value, 6),
                test,
                round(statistic, 6),
                p,
                p < limits.p_value,
                limits.status(value),
                len(values),
            )
        )
    return DriftReport(out, limits, missing)


def _categorical(shares: Mapping[str, float], values: pd.Series, stats: Any) -> tuple[float, float, float]:
    """(PSI, chi-square statistic, p-value) of a categorical column; levels unseen in the reference
    share one extra bin."""
    current = _level_shares(values)
    levels = list(shares)
    expected = np.array([shares[k] for k in levels] + [0.0])
    actual = np.array(
        [current.get(k, 0.0) for k in levels] + [sum(v for k, v in current.items() if k not in shares)]
    )
    value = psi(expected, actual)
    n = len(values)
    observed = actual * n
    wanted = np.clip(expected, _FLOOR, None)
    wanted = wanted / wanted.sum() * observed.sum()
    if len(levels) < 1 or n == 0:
        return value, 0.0, 1.0
    result = stats.chisquare(observed, wanted)
    return value, float(result.statistic), float(result.pvalue)


# ------------------------------------------------------------------------------- what a run is compared on

OUTPUT_COLUMNS = ("churn_probability", "expected_revenue", "clv", "value_at_risk")  # compared besides inputs
REFERENCE_SAMPLE = 20_000  # customers per cutoff a reference is profiled on (deterministic sample)
EVENT_WINDOW_DAYS = 30  # raw events compared: those of the month before the as-of date
EVENT_TABLES = ("transactions", "interactions")
_NOT_COMPARED = {"customer_id", "timestamp", "order_id"}


def history_snapshot(scores: pd.DataFrame) -> pd.DataFrame:
    """What a run keeps per customer (:data:`serving.store.HISTORY_COLUMNS`) from its scores or from
    ``ModelBundle.predict``: the revenue forecast over the horizon is ``expected_revenue_<H>d``; the lifetime
    value is ``clv`` (scores) or ``residual_value`` (predict), when there is a value model. Compatibility:
    scores from before the lifetime-value fields (issue #13) have no ``expected_revenue_<H>d``, and their
    ``clv`` is the revenue forecast: it is kept as that, and their lifetime value is unknown."""
    revenue_columns = [c for c in scores.columns if c.startswith("expected_revenue_")]
    nan = pd.Series(np.nan, index=scores.index)
    if revenue_columns:
        revenue = scores[revenue_columns[0]]
        clv = scores["residual_value"] if "residual_value" in scores.columns else scores.get("clv", nan)
    else:  # compatibility: scores from before issue #13, whose clv is the revenue forecast
        revenue, clv = scores["clv"], nan
    probability = scores["churn_probability"]
    at_risk = scores["value_at_risk"] if "value_at_risk" in scores.columns else probability * revenue
    return pd.DataFrame(
        {
            "customer_id": scores["customer_id"].astype(str) if "customer_id" in scores.columns else nan,
            "churn_probability": probability.astype(float),
            "expected_revenue": pd.to_numeric(revenue, errors="coerce"),
            "clv": pd.to_numeric(clv, errors="coerce"),
            "value_at_risk": pd.to_numeric(at_risk, errors="coerce"),
            "segment": scores["segment"] if "segment" in scores.columns else nan,
            "action_name": scores["action_name"] if "action_name" in scores.columns else nan,
        }
    ).reset_index(drop=True)


def with_outputs(features: pd.DataFrame, outputs: pd.DataFrame, bundle: ModelBundle) -> pd.DataFrame:
    """The model inputs the features hold, then the model's outputs (``OUTPUT_COLUMNS``)."""
    names = [n for n in bundle.feature_names if n in features.columns]
    frame = features[names].reset_index(drop=True)
    for column in OUTPUT_COLUMNS:
        frame[column] = outputs[column].to_numpy()
    return frame


def drift_frames(dataset: Dataset, as_of: pd.Timestamp, customers: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """What drift compares: one row per customer (model inputs and outputs), and the raw events of the
    ``EVENT_WINDOW_DAYS`` before ``as_of`` per event table. The events show a change in the data within
    a month (a logistics failure quadruples late deliveries at once), where 90-day customer features
    dilute it for a quarter."""
    frames = {"customers": customers}
    for table in EVENT_TABLES:
        events = getattr(dataset, table, None)
        if events is None or not len(events):
            continue
        stamps = events["timestamp"]
        window = events[(stamps >= as_of - pd.Timedelta(days=EVENT_WINDOW_DAYS)) & (stamps < as_of)]
        frames[table] = window[[c for c in window.columns if c not in _NOT_COMPARED]].reset_index(drop=True)
    return frames


def profiles(frames: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    return {name: reference_profile(frame) for name, frame in frames.items()}


def model_reference(
    dataset: Dataset, bundle: ModelBundle, snapshots: Mapping[pd.Timestamp, pd.DataFrame]
) -> dict[str, Any]:
    """The drift reference of a model: at each of its training cutoffs, the customers' model inputs and
    outputs and the month of raw events before it, pooled (seasons included), one profile per part.

    ``snapshots`` are the features at each cutoff (training has them; serving rebuilds them when a model
    came without a reference). At most :data:`REFERENCE_SAMPLE` customers per cutoff are scored: a
    profile keeps deciles and a quantile sketch, which a sample of that size pins down."""
    pooled: dict[str, list[pd.DataFrame]] = {}
    for cutoff, features in snapshots.items():
        if len(features) > REFERENCE_SAMPLE:
            features = features.sample(REFERENCE_SAMPLE, random_state=0)
        features = features.reset_index(drop=True)
        outputs = history_snapshot(bundle.predict(features).reset_index(drop=True))
        for name, frame in drift_frames(dataset, cutoff, with_outputs(features, outputs, bundle)).items():
            pooled.setdefault(name, []).append(frame)
    return profiles({name: pd.concat(frames, ignore_index=True) for name, frames in pooled.items()})
