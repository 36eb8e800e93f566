"""Loyalty measured continuously: what each batch run keeps, how far the data drifted, what past runs
really achieved, and whether to retrain.

- :func:`record_run` (called by batch scoring after the store refresh): the run's compact snapshot, its
  summary (segment mix, moves since the previous run, signup cohorts, the value held by loyal customers)
  and its drift against the model's reference.
- :func:`measure_matured_runs` (``churnguard monitor``, also run by ``score``): for every kept run whose
  horizon has passed in the data, the outcomes (labels from the raw tables at the run's as-of date, the
  same definition as training) against what the run said: ROC AUC, Brier, ECE, and the revenue forecast's
  error and total ratio, overall and by value segment.
- :func:`model_health`: the latest drift, the realised performance over time against the validation
  figures the model was promoted with, and the verdict (``ok`` / ``warn`` / ``retrain``) a scheduler acts on.

The drift reference is the bundle's ``metadata["reference"]`` (built by training with
:func:`features.drift.reference_profile`); a model without one takes its first scoring run as reference,
and the health output says so.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.bundle import current_metric_names
from features.drift import (
    OUTPUT_COLUMNS as OUTPUT_COLUMNS,  # what drift compares besides inputs (the API lists it)
)
from features.drift import (
    DriftReport,
    DriftThresholds,
    compare,
    drift_frames,
    history_snapshot,
    model_reference,
    profiles,
    with_outputs,
)
from features.engine import compute_features
from serving.store import ScoreStore

if TYPE_CHECKING:
    from features.bundle import ModelBundle
    from features.loading import Dataset
    from serving.settings import ServingSettings

LOYAL = ("valuable, loyal", "low value, loyal")  # the segments below the medium-risk threshold
MIN_OUTCOMES = 50  # fewer matured customers than this: no realised figures for the run


@dataclass(frozen=True)
class MonitorLimits:
    """When drift or realised performance counts as a problem (``CHURNGUARD_DRIFT_*``/``DEGRADE_*``).

    Degraded: realised ROC AUC below the validation AUC by more than ``auc_drop``, realised ECE above the
    validation ECE by more than ``ece_rise``, or the revenue forecast's total ratio (predicted / actual
    spend over the horizon) off 1 by more than ``revenue_ratio`` (relative, either way)."""

    drift: DriftThresholds = field(default_factory=DriftThresholds)
    auc_drop: float = 0.05
    ece_rise: float = 0.05
    revenue_ratio: float = 0.25

    @classmethod
    def from_settings(cls, settings: ServingSettings) -> MonitorLimits:
        return cls(
            DriftThresholds(settings.drift_psi_warn, settings.drift_psi_alert, settings.drift_p_value),
            settings.degrade_auc_drop,
            settings.degrade_ece_rise,
            settings.degrade_revenue_ratio,
        )


# ------------------------------------------------------------------------------------------ one run
@dataclass(frozen=True)
class HistoryPolicy:
    """How a batch run is kept: the newest ``keep_runs`` runs, drift judged by ``limits``."""

    keep_runs: int = 36
    limits: MonitorLimits = field(default_factory=MonitorLimits)

    @classmethod
    def from_settings(cls, settings: ServingSettings) -> HistoryPolicy:
        return cls(settings.history_runs, MonitorLimits.from_settings(settings))


@dataclass(frozen=True)
class RunInputs:
    """What a scoring run hands to :func:`record_run`: its scores, the features it scored (model inputs by
    name), the dataset (for signup cohorts) and the model."""

    scores: pd.DataFrame
    features: pd.DataFrame
    dataset: Dataset
    as_of: pd.Timestamp
    bundle: ModelBundle
    model: dict[str, Any]
    scored_at: str


def record_run(store: ScoreStore, run: RunInputs, *, keep_runs: int, limits: MonitorLimits) -> int:
    """Keep the run's snapshot and summary, compare it with the model's reference, store the drift report.
    Returns the run id."""
    snapshot = history_snapshot(run.scores)
    kept = store.runs()
    previous = store.snapshot(kept[-1]["run_id"]) if kept else None
    summary = {
        **run_summary(snapshot, previous, run.bundle.thresholds),
        "previous_run": kept[-1]["run_id"] if kept else None,
        "cohorts": signup_cohorts(run.dataset, snapshot, run.as_of),
    }
    record = {
        "as_of": str(run.as_of.date()),
        "scored_at": run.scored_at,
        "model": run.model,
        "summary": summary,
    }
    run_id = store.record_run(snapshot, record, keep_runs)
    frames = drift_frames(run.dataset, run.as_of, with_outputs(run.features, snapshot, run.bundle))
    reference, source = _reference(store, run, run_id, frames)
    report = compare_frames(reference, frames, limits.drift)
    store.save_report(run_id, "drift", {**report.as_dict(), "reference": source})
    return run_id


def _value(snapshot: pd.DataFrame) -> pd.Series:
    """A customer's value for summaries: the lifetime value (``clv``), NaN where it is unknown. The
    revenue forecast over the horizon never stands in for it: it is another quantity (a quarter's revenue,
    not the relationship's value), and sums mixing the two meant nothing."""
    return snapshot["clv"].astype(float)


def _total(values: pd.Series) -> float | None:
    """The sum of the known values; None when none is known (a model without a lifetime-value model)."""
    return float(values.sum()) if values.notna().any() else None


def compare_frames(
    reference: dict[str, Any], frames: dict[str, pd.DataFrame], thresholds: DriftThresholds
) -> DriftReport:
    """:func:`features.drift.compare` of each frame with its part of the reference; event columns are
    named ``table.column``. A plain profile (the bundle's, from training) is the customers' part."""
    parts = reference if "columns" not in reference else {"customers": reference}
    columns, missing = [], []
    for name, frame in frames.items():
        if name not in parts:
            continue
        report = compare(parts[name], frame, thresholds)
        prefix = "" if name == "customers" else f"{name}."
        columns += [dataclasses.replace(c, name=prefix + c.name) for c in report.columns]
        missing += [prefix + m for m in report.missing]
    return DriftReport(columns, thresholds, missing)


def _reference(
    store: ScoreStore, run: RunInputs, run_id: int, frames: dict[str, pd.DataFrame]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(reference, where it came from), in order of preference:

    1. the bundle's ``metadata["reference"]`` (training's :func:`features.drift.reference_profile`);
    2. the one stored for this model version by an earlier run;
    3. rebuilt from this run's data at the model's training cutoffs (``metadata["cutoffs"]``), when the
       data covers them: the training frame's distributions, pooled over its cutoffs (seasons included);
    4. this run itself: the first scoring run of a model version becomes its reference.

    3 and 4 are stored (kind ``reference``) for the runs after this one."""
    version = str(run.model.get("version"))
    shipped = run.bundle.metadata.get("reference")
    if isinstance(shipped, dict) and ("columns" in shipped or "customers" in shipped):
        return shipped, {"source": "training", "model_version": version}
    for reference_run, body in store.reports("reference").items():
        if str(body.get("model_version")) == version:
            return body["profile"], {
                **{k: v for k, v in body.items() if k != "profile"},
                "run_id": reference_run,
            }
    cutoffs = _training_cutoffs(run.bundle.metadata, run.dataset)
    if cutoffs:
        snapshots = {cutoff: compute_features(run.dataset, cutoff) for cutoff in cutoffs}
        profile = model_reference(run.dataset, run.bundle, snapshots)
        note = {"source": "training_cutoffs", "cutoffs": [str(c.date()) for c in cutoffs]}
    else:
        profile = profiles(frames)
        note = {"source": "first_run", "as_of": str(run.as_of.date())}
    store.save_report(run_id, "reference", {**note, "model_version": version, "profile": profile})
    return profile, {**note, "model_version": version, "run_id": run_id}


def _training_cutoffs(metadata: dict[str, Any], dataset: Dataset) -> list[pd.Timestamp]:
    """The model's training and validation cutoffs that ``dataset`` covers (empty if any is outside it)."""
    from features.snapshots import observed_until

    cutoffs = metadata.get("cutoffs")
    if not isinstance(cutoffs, dict):
        return []
    dates = [*cutoffs.get("train", []), *([cutoffs["validation"]] if cutoffs.get("validation") else [])]
    stamps = [pd.Timestamp(d) for d in dates]
    first, end = dataset.transactions["timestamp"].min(), observed_until(dataset)
    return stamps if stamps and all(first < s <= end for s in stamps) else []


def run_summary(
    snapshot: pd.DataFrame, previous: pd.DataFrame | None, thresholds: dict[str, float]
) -> dict[str, Any]:
    """Segment mix, the share of lifetime value (:func:`_value`; summed under ``clv``) held by loyal
    customers and the moves between value segments since the previous run (customers in both runs; ``new``
    and ``gone`` counted apart), each with its value. Value figures are None for a run whose model has no
    lifetime-value model."""
    clv = _value(snapshot)
    total = _total(clv)
    loyal = float(clv[snapshot["churn_probability"] < thresholds.get("medium", 0.3)].sum())
    segments = (
        snapshot.assign(clv=clv)
        .groupby("segment", sort=True)
        .agg(
            customers=("customer_id", "size"),
            clv=("clv", lambda v: v.sum(min_count=1)),
            value_at_risk=("value_at_risk", "sum"),
        )
        .reset_index()
    )
    out: dict[str, Any] = {
        "customers": len(snapshot),
        "clv": total,
        "loyal_clv_share": loyal / total if total is not None and total > 0 else None,
        "segments": _records(segments),
        "moves": [],
        "moved_customers": 0,
        "moved_clv": None if total is None else 0.0,
        "new_customers": len(snapshot),
        "gone_customers": 0,
    }
    if previous is None:
        return out
    both = previous.assign(clv=_value(previous))[["customer_id", "segment", "clv"]].merge(
        snapshot.assign(clv=clv)[["customer_id", "segment", "clv"]],
        on="customer_id",
        how="outer",
        suffixes=("_from", "_to"),
    )
    stayed = both.dropna(subset=["segment_from", "segment_to"])
    moved = stayed[stayed["segment_from"] != stayed["segment_to"]]
    moves = (
        moved.groupby(["segment_from", "segment_to"], sort=True)
        .agg(customers=("customer_id", "size"), clv=("clv_to", lambda v: v.sum(min_count=1)))
        .reset_index()
        .rename(columns={"segment_from": "from", "segment_to": "to"})
    )
    out.update(
        moves=_records(moves),
        moved_customers=len(moved),
        moved_clv=None if total is None else float(moved["clv_to"].sum()),
        new_customers=int(both["segment_from"].isna().sum()),
        gone_customers=int(both["segment_to"].isna().sum()),
    )
    return out


def signup_cohorts(dataset: Dataset, scores: pd.DataFrame, as_of: pd.Timestamp) -> list[dict[str, Any]]:
    """Per signup quarter: customers who had signed up by ``as_of``, how many are still active (scored)
    and their value (:func:`_value`). Empty when the data has no signup dates."""
    customers = dataset.customers
    if "signup_date" not in customers.columns:
        return []
    signup = pd.to_datetime(customers["signup_date"], errors="coerce")
    known = customers.loc[signup < as_of, ["customer_id"]].assign(
        cohort=signup[signup < as_of].dt.to_period("Q").astype(str).to_numpy()
    )
    known["customer_id"] = known["customer_id"].astype(str)
    active = known.merge(
        scores.assign(clv=_value(scores), scored=True)[["customer_id", "clv", "scored"]],
        on="customer_id",
        how="left",
    )
    table = (
        active.groupby("cohort", sort=True)
        .agg(
            signed_up=("customer_id", "size"),
            active=("scored", "count"),
            clv=("clv", lambda v: v.sum(min_count=1)),
        )
        .reset_index()
    )
    return _records(table)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain JSON values: a sum of no known value (NaN) is None, not NaN, which JSON lacks."""

    def plain(value: Any) -> Any:
        value = value.item() if hasattr(value, "item") else value
        return None if isinstance(value, float) and math.isnan(value) else value

    return [{k: plain(v) for k, v in row.items()} for row in frame.to_dict("records")]


# --------------------------------------------------------------------------------- realised performance
def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - mean predicted| over equal-count bins of the ranked predictions, weighted by
    count: training's definition (``training.evaluate``), which serving may not import."""
    order = np.argsort(p, kind="stable")
    gaps = [(abs(y[c].mean() - p[c].mean()), len(c)) for c in np.array_split(order, bins) if len(c)]
    return float(sum(g * n for g, n in gaps) / sum(n for _, n in gaps)) if gaps else math.nan


def outcome_metrics(y: np.ndarray, p: np.ndarray, revenue: np.ndarray, spend: np.ndarray) -> dict[str, Any]:
    """What predictions achieved against outcomes: churn (AUC, Brier, ECE, rates) and spend over the
    horizon (``revenue``: the revenue forecast; MAE and total ratio against the actual spend)."""
    from sklearn.metrics import brier_score_loss, roc_auc_score

    y = np.asarray(y, dtype=int)
    both = 0 < y.sum() < len(y)
    actual = float(spend.sum())
    return {
        "customers": len(y),
        "churn_rate": float(y.mean()) if len(y) else None,
        "mean_probability": float(p.mean()) if len(y) else None,
        "roc_auc": float(roc_auc_score(y, p)) if both else None,
        "brier": float(brier_score_loss(y, p)) if len(y) else None,
        "ece": expected_calibration_error(y, p) if len(y) else None,
        "revenue_mae": float(np.mean(np.abs(revenue - spend))) if len(y) else None,
        "revenue_predicted": float(revenue.sum()),
        "revenue_actual": actual,
        "revenue_total_ratio": float(revenue.sum() / actual) if actual > 0 else None,
    }


# Compatibility: performance reports stored before clv meant lifetime value (issue #13) name the revenue
# forecast's figures clv_* (as old bundles name its metrics) and word its degradation "CLV total ratio".
_OLD_REASON, _REASON = "CLV total ratio", "revenue forecast total ratio"


def stored_performance(report: dict[str, Any]) -> dict[str, Any]:
    """A stored performance report (:func:`measure_matured_runs`) under today's names, whichever version
    stored it (keys renamed as :func:`features.bundle.current_metric_names` renames a bundle's metrics)."""
    out = current_metric_names(report)
    if isinstance(out.get("segments"), dict):
        out["segments"] = {s: stored_performance(f) for s, f in out["segments"].items()}
    if isinstance(out.get("degraded"), list):
        out["degraded"] = [r.replace(_OLD_REASON, _REASON, 1) for r in out["degraded"]]
    return out


def realised_performance(snapshot: pd.DataFrame, labels: pd.DataFrame) -> dict[str, Any]:
    """A run's predictions (its snapshot) against the labels at its as-of date, overall and by segment.
    Customers are those present in both (scored at the run and known to the labels)."""
    joined = snapshot.merge(
        labels[["customer_id", "churned", "future_spend"]].astype({"customer_id": str}), on="customer_id"
    )

    def figures(part: pd.DataFrame) -> dict[str, Any]:
        return outcome_metrics(
            part["churned"].to_numpy(dtype=int),
            part["churn_probability"].to_numpy(dtype=float),
            part["expected_revenue"].to_numpy(dtype=float),
            part["future_spend"].to_numpy(dtype=float),
        )

    return {
        **figures(joined),
        "segments": {str(s): figures(part) for s, part in joined.groupby("segment", sort=True)},
    }


def degradation(realised: dict[str, Any], validation: dict[str, Any], limits: MonitorLimits) -> list[str]:
    """Why realised figures count as degraded against the validation figures (empty: not degraded)."""
    reasons = []
    auc, val_auc = realised.get("roc_auc"), validation.get("churn_roc_auc")
    if auc is not None and isinstance(val_auc, int | float) and auc < val_auc - limits.auc_drop:
        reasons.append(
            f"ROC AUC {auc:.3f} is below the validation {val_auc:.3f} by more than {limits.auc_drop}"
        )
    ece, val_ece = realised.get("ece"), validation.get("churn_ece")
    if ece is not None and isinstance(val_ece, int | float) and ece > val_ece + limits.ece_rise:
        reasons.append(f"ECE {ece:.3f} is above the validation {val_ece:.3f} by more than {limits.ece_rise}")
    ratio = realised.get("revenue_total_ratio")
    if ratio is not None and abs(math.log(max(ratio, 1e-9))) > math.log1p(limits.revenue_ratio):
        reasons.append(
            f"{_REASON} {ratio:.2f} (predicted/actual spend) is off 1 by more than {limits.revenue_ratio:.0%}"
        )
    return reasons


def measure_matured_runs(
    store: ScoreStore, dataset: Dataset, *, limits: MonitorLimits, threads: int = 2
) -> list[int]:
    """Realised performance of every kept run whose horizon has passed in ``dataset`` and that has none
    yet; returns the run ids measured. Labels come from the raw tables (``compute_labels``)."""
    from features.engine import compute_labels
    from features.snapshots import observed_until

    end = observed_until(dataset)
    done = store.reports("performance")
    measured = []
    for run in store.runs():
        horizon = int(run["model"].get("horizon_days") or 0)
        as_of = pd.Timestamp(run["as_of"])
        if run["run_id"] in done or horizon <= 0 or as_of + pd.Timedelta(days=horizon) > end:
            continue
        labels = compute_labels(dataset, as_of, horizon, threads)
        realised = realised_performance(store.snapshot(run["run_id"]), labels)
        if realised["customers"] < MIN_OUTCOMES:
            continue
        validation = run["model"].get("metrics") or {}
        report = {
            **realised,
            "horizon_days": horizon,
            "matured_on": str((as_of + pd.Timedelta(days=horizon)).date()),
            "degraded": degradation(realised, validation, limits),
        }
        store.save_report(run["run_id"], "performance", _finite(report))
        measured.append(run["run_id"])
    return measured


def _finite(value: Any) -> Any:
    """NaN and infinities as None (stored JSON must be standard JSON)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ------------------------------------------------------------------------------------------- health
def model_health(
    store: ScoreStore, validation: dict[str, Any], limits: MonitorLimits, model_version: str | None = None
) -> dict[str, Any]:
    """The health a person or a scheduler reads: the latest run's drift (columns at warn or worse), the
    realised performance of matured runs against ``validation`` (the bundle's ``metadata["metrics"]``, old
    names read as today's: :func:`features.bundle.current_metric_names`), and the verdict: ``retrain`` when
    the latest drift is at alert or the newest matured run degraded, ``warn`` when drift is at warn, else
    ``ok`` (``unknown`` before any run)."""
    runs = store.runs()
    drifts = store.reports("drift")
    performance = {run: stored_performance(body) for run, body in store.reports("performance").items()}
    validation = current_metric_names(validation)
    latest = runs[-1] if runs else None
    drift = drifts.get(latest["run_id"]) if latest else None
    report = DriftReport.from_dict(drift) if drift else None
    timeline = [
        {
            "run_id": r["run_id"],
            "as_of": r["as_of"],
            "model_version": r["model_version"],
            **_headline(performance[r["run_id"]]),
        }
        for r in runs
        if r["run_id"] in performance
    ]
    reasons: list[str] = []
    verdict = "unknown" if latest is None else "ok"
    if report is not None and report.status != "ok":
        flagged = ", ".join(f"{c.name} (PSI {c.psi:.2f})" for c in report.flagged()[:5])
        reasons.append(f"drift {report.status}: {flagged}")
        verdict = "retrain" if report.status == "alert" else "warn"
    if timeline and timeline[-1]["degraded"]:
        reasons += [f"run {timeline[-1]['as_of']}: {r}" for r in timeline[-1]["degraded"]]
        verdict = "retrain"
    return {
        "status": verdict,
        "retrain": verdict == "retrain",
        "reasons": reasons,
        "model_version": model_version,
        "runs": len(runs),
        "latest_run": None
        if latest is None
        else {k: latest[k] for k in ("run_id", "as_of", "model_version")},
        "drift": None
        if report is None or drift is None
        else {
            "status": report.status,
            "reference": drift.get("reference"),
            "thresholds": asdict(report.thresholds),
            "flagged": [asdict(c) for c in report.flagged()],
            "columns": [asdict(c) for c in report.columns],
        },
        "performance": timeline,
        "validation": {
            k: validation.get(k)
            for k in ("churn_roc_auc", "churn_brier", "churn_ece", "revenue_predicted_to_actual")
        },
        "limits": {
            "auc_drop": limits.auc_drop,
            "ece_rise": limits.ece_rise,
            "revenue_ratio": limits.revenue_ratio,
        },
    }


def _headline(report: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "customers",
        "churn_rate",
        "roc_auc",
        "brier",
        "ece",
        "revenue_mae",
        "revenue_total_ratio",
        "matured_on",
        "degraded",
    )
    return {k: report.get(k) for k in keys}
