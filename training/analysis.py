"""Analysis behind the analyst notebooks: data profiles, churn over time, service vs churn, model report.

Every function takes its dates explicitly (or derives them from the data, never from the clock), returns
DataFrames or matplotlib figures, and prints nothing. The notebooks in ``notebooks/`` only call these
functions and show what they return, so every number in a notebook can be reproduced and tested here.

Churn, features and labels are always computed by :mod:`features.engine`, with the same definitions as
training: a customer counts at a cutoff when active in the year before it, and churned when they made
no purchase in ``[cutoff, cutoff + horizon)`` or cancelled in it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pandas.api.typing import DataFrameGroupBy

from features.bundle import ModelBundle, ModelInfo
from features.contract import INTERACTION_TYPES, TABLES
from features.engine import compute_labels
from features.errors import DataValidationError
from features.loading import Dataset
from features.settings import ChurnguardSettings
from features.snapshots import build_snapshot, build_snapshots, observed_until, snapshot_cutoffs
from features.spec import BASE_BY_NAME
from serving.actions import Playbook, load_playbook
from serving.scoring import score_features
from training import evaluate as ev
from training import fit
from training.config import BusinessConfig, TrainConfig

if TYPE_CHECKING:
    import shap

DATA_ENV = "CHURNGUARD_DATA"
DEFAULT_DATA = "data/demo"
TABLE_NAMES = ("transactions", "customers", "interactions", "cancellations")
TABLE_SPECS = {spec.name: spec for spec in TABLES}
_Z95 = 1.959964


# ----------------------------------------------------------------------------------------- locations


def project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: the working folder) holding pyproject.toml.

    Notebooks run from ``notebooks/``; relative defaults such as ``data/demo`` and ``models`` mean the
    project root, as they do for the ``churnguard`` command. Falls back to ``start`` when none is found.
    """
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").exists():
            return folder
    return here


def resolve_data_dir(value: str | None = None, root: Path | None = None) -> Path:
    """The data folder to analyse: ``value``, else $CHURNGUARD_DATA, else ``data/demo``.

    A relative path is taken relative to ``root`` (default: :func:`project_root`)."""
    path = Path(value or os.environ.get(DATA_ENV) or DEFAULT_DATA).expanduser()
    return path if path.is_absolute() else (root or project_root()) / path


# ------------------------------------------------------------------------------------------ profiles


def _tables(dataset: Dataset) -> dict[str, pd.DataFrame]:
    return {name: getattr(dataset, name) for name in TABLE_NAMES}


def _date_column(name: str) -> str:
    return "signup_date" if name == "customers" else "timestamp"


def table_profile(dataset: Dataset) -> pd.DataFrame:
    """One row per table: supplied or not, rows, columns, distinct customers, share of empty cells, dates.

    ``first``/``last`` span the table's date column (``signup_date`` for customers; NaT when absent)."""
    rows = []
    for name, frame in _tables(dataset).items():
        dates = frame[_date_column(name)] if _date_column(name) in frame.columns else pd.Series([], "M8[us]")
        cells = frame.size
        rows.append(
            {
                "table": name,
                "provided": name in dataset.provided,
                "rows": len(frame),
                "columns": frame.shape[1],
                "customers": int(frame["customer_id"].nunique()) if len(frame) else 0,
                "null_share": float(frame.isna().to_numpy().sum() / cells) if cells else 0.0,
                "first": dates.min(),
                "last": dates.max(),
            }
        )
    return pd.DataFrame(rows)


def column_profile(dataset: Dataset) -> pd.DataFrame:
    """One row per column of every table: type, whether the user supplied it, empties, distinct, range.

    Columns the user did not supply hold contract defaults (``provided`` False): features built from
    them are left out of the model."""
    rows = []
    for name, frame in _tables(dataset).items():
        contract = {c.name for c in TABLE_SPECS[name].columns}
        for column in frame.columns:
            values = frame[column]
            numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
            dated = pd.api.types.is_datetime64_any_dtype(values)
            rows.append(
                {
                    "table": name,
                    "column": column,
                    "dtype": str(values.dtype),
                    "provided": name in dataset.provided
                    and (column not in contract or f"{name}.{column}" in dataset.provided),
                    "nulls": int(values.isna().sum()),
                    "null_share": float(values.isna().mean()) if len(values) else 0.0,
                    "distinct": int(values.nunique()),
                    "min": values.min() if (numeric or dated) and len(values) else None,
                    "max": values.max() if (numeric or dated) and len(values) else None,
                }
            )
    return pd.DataFrame(rows)


def orders(dataset: Dataset) -> pd.DataFrame:
    """Transactions rolled up to one row per order, as the features see them (rows sharing an order id).

    Columns: customer_id, order_id, timestamp (first line), amount, discount, returned, late, channel."""
    tx = dataset.transactions
    if dataset.rows_are_orders:  # each row is already an order: number them instead of grouping
        out = tx[["customer_id", "timestamp", "amount", "discount", "returned"]].assign(
            delay=tx["delivery_delay_days"], channel=tx["channel"]
        )
        out.insert(1, "order_id", pd.RangeIndex(len(tx)).astype(str))
    else:
        out = (
            tx.groupby(["customer_id", "order_id"], sort=False, observed=True)
            .agg(
                timestamp=("timestamp", "min"),
                amount=("amount", "sum"),
                discount=("discount", "sum"),
                returned=("returned", "max"),
                delay=("delivery_delay_days", "max"),
                channel=("channel", "min"),
            )
            .reset_index()
        )
    out["returned"] = out["returned"].fillna(False).astype(bool)
    out["late"] = out["delay"].fillna(0) > 0
    return out.drop(columns="delay").sort_values("timestamp", kind="stable").reset_index(drop=True)


def _month(stamps: pd.Series) -> pd.Series:
    return stamps.dt.to_period("M").dt.to_timestamp()


def _joined(dataset: Dataset) -> pd.Series:
    """When each customer joined: signup date, else the first purchase."""
    first = dataset.transactions.groupby("customer_id")["timestamp"].min()
    signup = dataset.customers.set_index("customer_id")["signup_date"]
    ids = signup.index.union(first.index)
    joined = signup.reindex(ids).fillna(first.reindex(ids)).rename("joined")
    joined.index.name = "customer_id"
    return joined


def monthly_activity(dataset: Dataset) -> pd.DataFrame:
    """One row per calendar month: orders, buyers, revenue, new customers, service contacts, cancellations.

    ``partial`` marks the first and last month when the data covers them only in part: their counts
    are low because of the data's edges, not because customers left. Interactions appear as
    ``contacts_<type>``; late and returned are shares of the month's orders."""
    o = orders(dataset)
    o["month"] = _month(o["timestamp"])
    per = o.groupby("month").agg(
        orders=("order_id", "size"),
        buyers=("customer_id", "nunique"),
        revenue=("amount", "sum"),
        late_share=("late", "mean"),
        return_share=("returned", "mean"),
    )
    per["avg_order_value"] = per["revenue"] / per["orders"]
    joined = _joined(dataset).dropna()
    per = per.join(_month(joined).value_counts().rename("new_customers"), how="outer")
    inter = dataset.interactions
    if len(inter):
        kinds = inter["type"].astype(str).where(inter["type"].isin(INTERACTION_TYPES), "other")
        counts = pd.crosstab(_month(inter["timestamp"]), kinds).add_prefix("contacts_")
        per = per.join(counts, how="outer")
    canc = dataset.cancellations
    per = per.join(_month(canc["timestamp"]).value_counts().rename("cancellations"), how="outer")
    per = per.sort_index()
    per.index.name = "month"
    counts = [c for c in per.columns if c not in ("late_share", "return_share", "avg_order_value")]
    per[counts] = per[counts].fillna(0)
    start, end = dataset.transactions["timestamp"].min(), observed_until(dataset)
    months = per.index.to_series()
    per["partial"] = (months < start) | (months + pd.offsets.MonthBegin(1) > end)
    return per.reset_index()


def customer_purchases(dataset: Dataset) -> pd.DataFrame:
    """One row per customer with purchases: orders, spend, first and last order, mean days between orders."""
    o = orders(dataset)
    per = o.groupby("customer_id").agg(
        orders=("order_id", "size"),
        spend=("amount", "sum"),
        first_order=("timestamp", "min"),
        last_order=("timestamp", "max"),
    )
    span = (per["last_order"] - per["first_order"]).dt.total_seconds() / 86400
    per["mean_gap_days"] = (span / (per["orders"] - 1)).where(per["orders"] > 1)
    per["avg_order_value"] = per["spend"] / per["orders"]
    return per.reset_index()


def purchase_gaps(dataset: Dataset) -> pd.Series:
    """Days between consecutive orders of the same customer (one value per repeat order)."""
    o = orders(dataset).sort_values(["customer_id", "timestamp"], kind="stable")
    gaps = o.groupby("customer_id")["timestamp"].diff().dt.total_seconds() / 86400
    return gaps.dropna().rename("gap_days").reset_index(drop=True)


def purchase_rhythm(gaps: pd.Series, horizon_days: int) -> pd.DataFrame:
    """How the usual time between orders compares with the churn horizon (one row of figures).

    When many repeat orders come more than a horizon apart, "no purchase within the horizon" also
    happens to customers who stay: churn labels get noisy and a longer horizon may suit the business."""
    return pd.DataFrame(
        [
            {
                "repeat_orders": len(gaps),
                "median_gap_days": float(gaps.median()) if len(gaps) else np.nan,
                "p90_gap_days": float(gaps.quantile(0.9)) if len(gaps) else np.nan,
                "horizon_days": horizon_days,
                "share_of_gaps_beyond_horizon": float((gaps > horizon_days).mean()) if len(gaps) else np.nan,
            }
        ]
    )


def interaction_summary(dataset: Dataset) -> pd.DataFrame:
    """One row per interaction type: contacts, customers, share resolved, hours to resolve, satisfaction.

    Empty when the dataset has no interactions table."""
    inter = dataset.interactions
    columns = ["type", "contacts", "customers", "resolved_share", "median_resolution_hours", "satisfaction"]
    if not len(inter):
        return pd.DataFrame(columns=columns)
    kinds = inter["type"].astype(str).where(inter["type"].isin(INTERACTION_TYPES), "other").rename("type")
    out = inter.groupby(kinds).agg(
        contacts=("customer_id", "size"),
        customers=("customer_id", "nunique"),
        resolved_share=(
            "resolved",
            lambda s: float(s.dropna().astype(float).mean()) if s.notna().any() else np.nan,
        ),
        median_resolution_hours=("resolution_hours", "median"),
        satisfaction=("satisfaction", "mean"),
    )
    return out.sort_values("contacts", ascending=False).reset_index()[columns]


# -------------------------------------------------------------------------------------- churn history


def label_cutoffs(dataset: Dataset, horizon_days: int, step_days: int = 30) -> list[pd.Timestamp]:
    """Cutoffs every ``step_days`` whose label window is fully observed, oldest first.

    Anchored at the newest such cutoff (``observed_until - horizon``, the validation cutoff of training)
    and going back while at least ``step_days`` of history precede the cutoff."""
    newest = observed_until(dataset) - pd.Timedelta(days=horizon_days)
    first = dataset.transactions["timestamp"].min().normalize() + pd.Timedelta(days=step_days)
    count = max(0, (newest - first).days // step_days + 1)
    return [newest - pd.Timedelta(days=step_days * k) for k in reversed(range(count))]


def training_cutoffs(
    dataset: Dataset, horizon_days: int, config: TrainConfig | None = None
) -> list[pd.Timestamp]:
    """The cutoffs ``churnguard train`` would use on this data: training cutoffs, then validation.

    Snapshot count and spacing come from ``config`` (default: the training defaults). Empty when the
    data is too short to train with this horizon."""
    config = config or TrainConfig()
    try:
        train, validation = snapshot_cutoffs(dataset, horizon_days, config.snapshots, config.step_days)
    except DataValidationError:
        return []
    return [*train, validation]


def labels_at(
    dataset: Dataset, cutoffs: Iterable[pd.Timestamp], horizon_days: int, threads: int = 1
) -> pd.DataFrame:
    """Churn labels at each cutoff, stacked: cutoff, customer_id, churned, cancelled, future_spend."""
    parts = []
    for cutoff in cutoffs:
        labels = compute_labels(dataset, cutoff, horizon_days, threads)
        labels.insert(0, "cutoff", pd.Timestamp(cutoff))
        parts.append(labels[["cutoff", "customer_id", "churned", "cancelled", "future_spend"]])
    columns = ["cutoff", "customer_id", "churned", "cancelled", "future_spend"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def _wilson(successes: pd.Series, n: pd.Series) -> tuple[pd.Series, pd.Series]:
    """95% Wilson interval of a rate: honest about small groups (never outside [0, 1])."""
    n = n.astype(float)
    p = successes / n
    centre = (p + _Z95**2 / (2 * n)) / (1 + _Z95**2 / n)
    half = _Z95 * np.sqrt(p * (1 - p) / n + _Z95**2 / (4 * n**2)) / (1 + _Z95**2 / n)
    return (centre - half).clip(0, 1), (centre + half).clip(0, 1)


def _rates(grouped: DataFrameGroupBy) -> pd.DataFrame:
    """customers, churned, churn_rate and its 95% interval per group (needs a boolean ``churned``)."""
    out = grouped.agg(customers=("churned", "size"), churned=("churned", "sum"))
    out["churned"] = out["churned"].astype(int)
    out["churn_rate"] = out["churned"] / out["customers"]
    out["churn_rate_low"], out["churn_rate_high"] = _wilson(out["churned"], out["customers"])
    return out


def churn_rate_over_time(
    dataset: Dataset, horizon_days: int, step_days: int = 30, *, labels: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Observed churn rate at each cutoff of :func:`label_cutoffs` (or of the ``labels`` given).

    One row per cutoff: customers active at the cutoff, how many churned within the horizon, the rate
    with its 95% interval, the share that cancelled a contract, and spend per customer in the window."""
    if labels is None:
        labels = labels_at(dataset, label_cutoffs(dataset, horizon_days, step_days), horizon_days)
    frame = labels.assign(churned=labels["churned"].astype(bool), cancelled=labels["cancelled"].astype(bool))
    out = _rates(frame.groupby("cutoff"))
    extra = frame.groupby("cutoff").agg(
        cancelled_share=("cancelled", "mean"), spend_per_customer=("future_spend", "mean")
    )
    out = out.join(extra).reset_index()
    out.insert(1, "window_end", out["cutoff"] + pd.Timedelta(days=horizon_days))
    return out


def churn_by_cohort(
    dataset: Dataset,
    horizon_days: int,
    step_days: int = 30,
    *,
    labels: pd.DataFrame | None = None,
    freq: str = "Q",
) -> pd.DataFrame:
    """Churn rate by signup cohort (calendar quarter by default) at each cutoff.

    Long format: cohort (e.g. ``2024Q1``), cutoff, tenure_months at the cutoff, customers, churned,
    churn_rate and its interval. Customers without a signup date join the cohort of their first order."""
    if labels is None:
        labels = labels_at(dataset, label_cutoffs(dataset, horizon_days, step_days), horizon_days)
    joined = _joined(dataset)
    frame = labels.merge(joined.reset_index(), on="customer_id")
    frame = frame.assign(churned=frame["churned"].astype(bool), cohort=frame["joined"].dt.to_period(freq))
    out = _rates(frame.groupby(["cohort", "cutoff"])).reset_index()
    start = out["cohort"].dt.start_time
    out.insert(2, "tenure_months", ((out["cutoff"] - start).dt.days / 30.44).round().astype(int))
    out["cohort"] = out["cohort"].astype(str)
    return out


# ------------------------------------------------------------------------------------ service vs churn


@dataclass(frozen=True)
class ServiceFactor:
    """A service experience at the cutoff, grouped into levels: ``cap`` and above form one level."""

    feature: str
    label: str
    cap: int | None = None  # counts: 0, 1, ..., cap+ ; None: rounded score, missing as 'no answer'


SERVICE_FACTORS: tuple[ServiceFactor, ...] = (
    ServiceFactor("late_deliveries_365d", "late deliveries, last 365 days", cap=3),
    ServiceFactor("unresolved_complaints_365d", "unresolved complaints, last 365 days", cap=2),
    ServiceFactor("complaints_90d", "complaints, last 90 days", cap=2),
    ServiceFactor("last_satisfaction", "latest satisfaction score (1-5)"),
)
ACTIVITY_FEATURE = "orders_365d"
SERVICE_COLUMNS = [
    "factor",
    "feature",
    "level",
    "customers",
    "churned",
    "churn_rate",
    "churn_rate_low",
    "churn_rate_high",
    "adjusted_churn_rate",
    "share",
]


def _levels(values: pd.Series, factor: ServiceFactor) -> tuple[pd.Series, pd.Series]:
    """(level label, sort order) per customer."""
    if factor.cap is None:
        order = values.round().fillna(99).astype(int)
        label = order.astype(str).where(values.notna(), "no answer")
        return label, order
    order = values.fillna(0).clip(upper=factor.cap).astype(int)
    label = order.astype(str).where(order < factor.cap, f"{factor.cap}+")
    return label, order


def _activity_bands(activity: pd.Series, bands: int) -> pd.Series:
    """Up to ``bands`` bands of order volume with about equal counts; equal values share a band."""
    values = activity.fillna(0)
    if values.nunique() < 2:
        return pd.Series(0, index=values.index)
    return pd.qcut(values, bands, labels=False, duplicates="drop")


def _standardised(frame: pd.DataFrame, level: str, band: str) -> pd.Series:
    """Churn rate per level as if every level had the overall mix of activity bands.

    Direct standardisation: the level's churn rate within each band, weighted by the band's share of
    all customers (renormalised over the bands the level occurs in)."""
    weights = frame[band].value_counts(normalize=True)
    within = frame.groupby([level, band])["churned"].mean().rename("rate").reset_index()
    within["weight"] = within[band].map(weights)
    weighted = within.assign(product=within["rate"] * within["weight"]).groupby(level)
    return weighted["product"].sum() / weighted["weight"].sum()


def service_frame(
    dataset: Dataset, cutoffs: Sequence[pd.Timestamp], horizon_days: int, threads: int = 1
) -> pd.DataFrame:
    """Features and churn labels of the customers active at each cutoff, stacked (one row per pair).

    Raises ValueError without cutoffs (:func:`label_cutoffs` finds none when the data is shorter than
    the horizon plus one step)."""
    if not len(cutoffs):
        raise ValueError("no cutoffs: the data is too short to observe any churn window")
    snapshots = build_snapshots(dataset, [pd.Timestamp(c) for c in cutoffs], horizon_days, threads)
    return pd.concat([s.frame for s in snapshots], ignore_index=True)


def service_vs_churn(
    dataset: Dataset,
    cutoffs: pd.Timestamp | Sequence[pd.Timestamp],
    horizon_days: int,
    *,
    factors: Sequence[ServiceFactor] = SERVICE_FACTORS,
    activity_bands: int = 5,
    frame: pd.DataFrame | None = None,
    threads: int = 1,
) -> pd.DataFrame:
    """How service problems before a cutoff relate to churning after it.

    One row per factor and level: customers, churned, the raw churn rate with its 95% interval, and
    ``adjusted_churn_rate``, the rate among customers who buy as often as average (standardised over
    ``activity_bands`` bands of orders in the last year). Adjusting matters: only customers who buy can
    suffer late deliveries or complain, and buyers churn less, so raw rates understate the harm.

    Several cutoffs pool their customers (a customer counts once per cutoff): at one cutoff few
    customers have service problems, so pool cutoffs one horizon apart (:func:`label_cutoffs` with
    ``step_days=horizon_days``). Factors whose source data the dataset does not provide are left out.
    ``frame`` (from :func:`service_frame` at the same cutoffs) skips recomputing the features.
    """
    stamps = [cutoffs] if isinstance(cutoffs, pd.Timestamp | str) else list(cutoffs)
    data = frame if frame is not None else service_frame(dataset, stamps, horizon_days, threads)
    data = data.assign(churned=data["churned"].astype(bool))
    data["_band"] = _activity_bands(data[ACTIVITY_FEATURE], activity_bands)
    parts = []
    for factor in factors:
        if not all(r in dataset.provided for r in BASE_BY_NAME[factor.feature].requires):
            continue
        label, order = _levels(data[factor.feature], factor)
        levelled = data.assign(_level=label, _order=order)
        out = _rates(levelled.groupby(["_order", "_level"])).reset_index(level="_order")
        out["adjusted_churn_rate"] = _standardised(levelled, "_level", "_band")
        out = out.reset_index().sort_values("_order").rename(columns={"_level": "level"})
        out.insert(0, "factor", factor.label)
        out.insert(1, "feature", factor.feature)
        out["share"] = out["customers"] / len(data)
        parts.append(out[SERVICE_COLUMNS])
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=SERVICE_COLUMNS)


# ---------------------------------------------------------------------------------------- the champion


@dataclass(frozen=True)
class Champion:
    """A registered model version loaded for analysis: its bundle and what the registry says about it."""

    bundle: ModelBundle
    info: ModelInfo
    run_id: str | None
    tags: dict[str, str]
    run_metrics: dict[str, float]
    tracking_uri: str


def load_champion(settings: ChurnguardSettings, alias: str = "champion") -> Champion:
    """Load the version behind ``models:/<model_name>@<alias>`` from the tracking store in ``settings``.

    Raises :class:`features.errors.ModelNotFoundError` when no version holds the alias."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from features.errors import ModelNotFoundError
    from features.model_store import load_model
    from training.registry import configure_mlflow

    uri = configure_mlflow(settings)
    client, name = MlflowClient(), settings.model_name
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise ModelNotFoundError(
            f"no version of '{name}' holds the alias '{alias}' in {uri}: train one with `churnguard train`"
        ) from exc
    bundle = load_model(f"models:/{name}/{version.version}").bundle
    run_metrics = dict(client.get_run(version.run_id).data.metrics) if version.run_id else {}
    info = ModelInfo(
        name=name,
        version=str(version.version),
        alias=alias,
        trained_at=str(bundle.metadata.get("trained_at", "unknown")),
        horizon_days=bundle.horizon_days,
        uri=f"models:/{name}@{alias}",
    )
    return Champion(bundle, info, version.run_id, dict(version.tags or {}), run_metrics, uri)


def champion_overview(champion: Champion) -> pd.DataFrame:
    """The facts a reader needs before trusting the report, one per row (item, value)."""
    bundle, meta = champion.bundle, champion.bundle.metadata
    cutoffs = meta.get("cutoffs", {})
    items = {
        "model": f"{champion.info.name} version {champion.info.version} (@{champion.info.alias})",
        "trained at": champion.info.trained_at,
        "horizon (days)": bundle.horizon_days,
        "training cutoffs": ", ".join(cutoffs.get("train", [])),
        "validation cutoff": cutoffs.get("validation", "unknown"),
        "features": len(bundle.features),
        "calibration": bundle.calibration.method,
        "risk thresholds": ", ".join(f"{k} {v:,.3g}" for k, v in bundle.thresholds.items()),
        "promotion": champion.tags.get("promotion", "unknown"),
        "MLflow run": champion.run_id or "unknown",
        "tracking store": champion.tracking_uri,
    }
    return pd.DataFrame({"item": list(items), "value": [str(v) for v in items.values()]})


def validation_frame(
    dataset: Dataset, bundle: ModelBundle, cutoff: pd.Timestamp | None = None, threads: int = 1
) -> pd.DataFrame:
    """Features and outcomes at the newest fully observed cutoff (``observed_until - horizon``).

    On the data the model was trained on this is its validation cutoff; on newer data it is a later,
    truly unseen one. One row per active customer: customer_id, cutoff, features, churned, future_spend."""
    if cutoff is None:
        cutoff = observed_until(dataset) - pd.Timedelta(days=bundle.horizon_days)
    return build_snapshot(dataset, pd.Timestamp(cutoff), bundle.horizon_days, threads).frame


def baseline_frame(
    dataset: Dataset, bundle: ModelBundle, validation_cutoff: pd.Timestamp, threads: int = 1
) -> pd.DataFrame:
    """Training rows for the baselines: the snapshot one horizon before the validation cutoff.

    Its label window ends where the validation window begins, so the baselines, like the model, learn
    nothing about validation outcomes."""
    cutoff = pd.Timestamp(validation_cutoff) - pd.Timedelta(days=bundle.horizon_days)
    return build_snapshot(dataset, cutoff, bundle.horizon_days, threads).frame


@dataclass
class EvaluationReport:
    """Out-of-time evaluation of a bundle against the baselines every churnguard report uses."""

    cutoff: pd.Timestamp
    churn: pd.DataFrame  # one row per model: roc_auc, pr_auc, brier, log_loss, ece, lift, capture, rate
    clv: pd.DataFrame  # one row per model: mae, rmse, spearman, gini, capture, predicted_to_actual
    business: pd.DataFrame  # one row per ranking: net value of contacting the top share
    scores: pd.DataFrame  # customer_id, churned, future_spend, one probability column per model, clv...
    models: list[str] = field(default_factory=list)  # churn score columns, the bundle's first


def evaluation_report(
    bundle: ModelBundle,
    frame: pd.DataFrame,
    history: pd.DataFrame,
    business: BusinessConfig | None = None,
    seed: int = 42,
) -> EvaluationReport:
    """Metrics of ``bundle`` on ``frame`` (features with outcomes) next to the recency and RFM baselines.

    The baselines are fitted on ``history`` (e.g. :func:`baseline_frame`), which must hold no outcome
    from ``frame``'s window. CLV is compared with the run-rate baseline; ``business`` prices the value
    of contacting the top share of customers by value at risk, by probability and at random."""
    business = business or BusinessConfig()
    y = frame["churned"].astype(bool).to_numpy(int)
    y_hist = history["churned"].astype(bool).to_numpy(int)
    predicted = bundle.predict(frame)
    churn_scores = {
        "churnguard": predicted["churn_probability"].to_numpy(),
        "rfm_logistic": fit.predict_rfm_logistic(fit.rfm_logistic_baseline(history, y_hist, seed), frame),
        "recency_rule": fit.predict_recency(fit.recency_baseline(history, y_hist), frame),
    }
    spend = frame["future_spend"].to_numpy(float)
    clv_scores = {
        "churnguard": predicted["clv"].to_numpy(),
        "run_rate": fit.run_rate_clv(frame, bundle.horizon_days),
    }
    churn = pd.DataFrame([{"model": k, **ev.churn_metrics(y, v)} for k, v in churn_scores.items()])
    clv = pd.DataFrame([{"model": k, **ev.clv_metrics(spend, v)} for k, v in clv_scores.items()])
    value = ev.business_value(
        y.astype(bool),
        clv_scores["run_rate"],
        churn_scores["churnguard"],
        clv_scores["churnguard"],
        business.contact_cost,
        business.success_rate,
        business.top_share,
        seed,
    )
    contacted = value.pop("contacted")
    value_table = pd.DataFrame(
        {"ranking": [k.removeprefix("net_value_") for k in value], "net_value": list(value.values())}
    ).assign(contacted=int(contacted))
    scores = pd.DataFrame(
        {
            "customer_id": frame["customer_id"].to_numpy(),
            "churned": y.astype(bool),
            "future_spend": spend,
            **churn_scores,
            "clv": clv_scores["churnguard"],
            "clv_run_rate": clv_scores["run_rate"],
        }
    )
    cutoff = pd.Timestamp(frame["cutoff"].iloc[0]) if "cutoff" in frame.columns and len(frame) else pd.NaT
    return EvaluationReport(cutoff, churn, clv, value_table, scores, list(churn_scores))


def recorded_vs_recomputed(bundle: ModelBundle, report: EvaluationReport) -> pd.DataFrame:
    """Churn metrics recorded at training next to those recomputed now (metric, recorded, recomputed).

    On the training data and its validation cutoff both columns agree: the model and the features are
    reproducible. Differences mean newer data, another cutoff or changed feature code."""
    recorded = {
        k.removeprefix("churn_"): v
        for k, v in bundle.metadata.get("metrics", {}).items()
        if k.startswith("churn_")
    }
    now = report.churn.set_index("model").loc["churnguard"]
    rows = [
        {"metric": k, "recorded": recorded.get(k, np.nan), "recomputed": float(now[k])} for k in now.index
    ]
    out = pd.DataFrame(rows)
    out["difference"] = out["recomputed"] - out["recorded"]
    return out


def reliability_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Equal-count bins of predicted probability: mean predicted, observed churn rate and its interval.

    The same binning as :func:`training.evaluate.expected_calibration_error`."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    order = np.argsort(p, kind="stable")
    rows = [
        {"bin": i + 1, "customers": len(c), "predicted": float(p[c].mean()), "churned": int(y[c].sum())}
        for i, c in enumerate(np.array_split(order, bins))
        if len(c)
    ]
    out = pd.DataFrame(rows)
    out["observed"] = out["churned"] / out["customers"]
    out["observed_low"], out["observed_high"] = _wilson(out["churned"], out["customers"])
    return out


def gains_table(y: np.ndarray, scores: dict[str, np.ndarray], points: int = 100) -> pd.DataFrame:
    """Cumulative gains: share of churners reached when contacting the riskiest share of customers first.

    Long format (model, contacted_share, churners_reached), ``points`` steps per model plus the origin."""
    y = np.asarray(y, dtype=float)
    n, total = len(y), max(float(y.sum()), 1.0)
    shares = np.linspace(0, 1, points + 1)
    counts = np.round(shares * n).astype(int)
    parts = []
    for name, p in scores.items():
        cum = np.concatenate([[0.0], np.cumsum(y[np.argsort(-np.asarray(p), kind="stable")])])
        parts.append(
            pd.DataFrame({"model": name, "contacted_share": shares, "churners_reached": cum[counts] / total})
        )
    return pd.concat(parts, ignore_index=True)


# ------------------------------------------------------------------------------------------ explanations


def _display_values(bundle: ModelBundle, frame: pd.DataFrame) -> np.ndarray:
    """Feature values as a reader knows them: category names, numbers rounded for the plots."""
    x = bundle.model_input(frame)
    columns = [
        x[c].astype(object) if isinstance(x[c].dtype, pd.CategoricalDtype) else x[c].round(2) for c in x
    ]
    return pd.concat(columns, axis=1).to_numpy(dtype=object)


def shap_explanation(
    bundle: ModelBundle, frame: pd.DataFrame, max_rows: int | None = 2000, seed: int = 0
) -> shap.Explanation:
    """Exact TreeSHAP of the churn model (log-odds units) for the rows of ``frame``, as a shap.Explanation.

    At most ``max_rows`` rows, sampled reproducibly with ``seed``; rows keep their order in ``frame``.
    ``data`` holds the model input (categories as codes) for colouring; ``display_data`` the readable
    values; base value plus a row's values equals its raw score exactly."""
    import shap

    rows = frame
    if max_rows is not None and len(frame) > max_rows:
        positions = np.random.default_rng(seed).choice(len(frame), size=max_rows, replace=False)
        rows = frame.iloc[np.sort(positions)]
    matrix = bundle.matrix(rows)
    contrib = bundle.contributions(matrix)
    return shap.Explanation(
        values=contrib[:, :-1],
        base_values=contrib[:, -1],
        data=matrix,
        display_data=_display_values(bundle, rows),
        feature_names=bundle.feature_names,
    )


def shap_importance(explanation: shap.Explanation, top: int | None = None) -> pd.DataFrame:
    """Features by mean |SHAP| (log-odds), largest first, with the share of total importance."""
    values = np.abs(np.asarray(explanation.values)).mean(axis=0)
    out = pd.DataFrame({"feature": explanation.feature_names, "mean_abs_shap": values})
    out["share"] = out["mean_abs_shap"] / max(out["mean_abs_shap"].sum(), 1e-12)
    out = out.sort_values("mean_abs_shap", ascending=False, kind="stable").reset_index(drop=True)
    return out.head(top) if top else out


def numeric_top_features(bundle: ModelBundle, importance: pd.DataFrame, n: int = 3) -> list[str]:
    """The ``n`` most important numeric features: the ones a dependence plot shows best."""
    numeric = {f.name for f in bundle.features if f.categories is None}
    return [f for f in importance["feature"] if f in numeric][:n]


# --------------------------------------------------------------------------------- scores and actions


def score_frame(
    champion: Champion, frame: pd.DataFrame, playbook: Playbook | None = None, top_k: int = 5
) -> pd.DataFrame:
    """Score ``frame`` exactly as the API would: probability, tier, CLV, segment, reasons and action.

    ``as_of`` is the frame's cutoff. ``playbook`` defaults to the shipped one."""
    as_of = str(pd.Timestamp(frame["cutoff"].iloc[0]).date()) if len(frame) else ""
    return score_features(champion.bundle, frame, playbook or load_playbook(), champion.info, as_of, top_k)


def _action_columns(scores: pd.DataFrame) -> pd.DataFrame:
    actions = pd.DataFrame(scores["action"].tolist(), index=scores.index)
    return scores.assign(
        action_name=actions["name"],
        expected_net_value=actions["expected_net_value"],
        action_cost=actions["cost"],
    )


def segment_action_summary(scores: pd.DataFrame, outcomes: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per segment and recommended action: customers, share, mean risk and value, totals.

    ``outcomes`` (customer_id, churned), when known, adds the observed churn rate of each group: the
    check that the segments the model calls at risk really left more often."""
    frame = _action_columns(scores)
    if outcomes is not None:
        frame = frame.merge(outcomes[["customer_id", "churned"]], on="customer_id", how="left")
    aggregations: dict[str, Any] = {
        "customers": ("customer_id", "size"),
        "mean_churn_probability": ("churn_probability", "mean"),
        "mean_clv": ("clv", "mean"),
        "value_at_risk": ("value_at_risk", "sum"),
        "expected_net_value": ("expected_net_value", "sum"),
        "campaign_cost": ("action_cost", "sum"),
    }
    if outcomes is not None:
        aggregations["observed_churn_rate"] = ("churned", lambda s: float(s.astype(float).mean()))
    out = frame.groupby(["segment", "action_name"]).agg(**aggregations).reset_index()
    out.insert(3, "share", out["customers"] / max(len(frame), 1))
    return out.rename(columns={"action_name": "action"}).sort_values(
        ["segment", "customers"], ascending=[True, False], kind="stable", ignore_index=True
    )


def risk_tier_summary(scores: pd.DataFrame, outcomes: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per risk tier (low, medium, high): customers, mean predicted and, if known, observed churn."""
    frame = (
        scores if outcomes is None else scores.merge(outcomes[["customer_id", "churned"]], on="customer_id")
    )
    aggregations: dict[str, Any] = {
        "customers": ("customer_id", "size"),
        "mean_churn_probability": ("churn_probability", "mean"),
        "value_at_risk": ("value_at_risk", "sum"),
    }
    if outcomes is not None:
        aggregations["observed_churn_rate"] = ("churned", lambda s: float(s.astype(float).mean()))
    out = frame.groupby("risk_tier").agg(**aggregations)
    return out.reindex([t for t in ("low", "medium", "high") if t in out.index]).reset_index()


def example_customers(scores: pd.DataFrame, n: int = 2) -> list[str]:
    """Customers worth explaining: the at-risk customer with the most value at risk, then the riskiest.

    Further picks alternate between the two orders. Deterministic (ties broken by customer id), no
    repeats; "at risk" means the medium or high tier (everyone, when nobody is at risk)."""
    at_risk = scores.loc[scores["risk_tier"] != "low"]
    pool = at_risk if len(at_risk) else scores
    by_value = pool.sort_values(["value_at_risk", "customer_id"], ascending=[False, True], kind="stable")
    by_risk = scores.sort_values(["churn_probability", "customer_id"], ascending=[False, True], kind="stable")
    chosen: list[str] = []
    for a, b in zip(by_value["customer_id"], by_risk["customer_id"], strict=False):
        for cid in (str(a), str(b)):
            if cid not in chosen and len(chosen) < n:
                chosen.append(cid)
        if len(chosen) >= n:
            break
    return chosen


def reasons_table(scores: pd.DataFrame, customer_id: str) -> pd.DataFrame:
    """One customer's reasons as a table: feature, value, typical, contribution, direction, sentence."""
    row = scores.loc[scores["customer_id"] == customer_id]
    if row.empty:
        raise KeyError(f"customer {customer_id} is not in the scores")
    columns = ["feature", "value", "typical", "contribution", "direction", "sentence"]
    return pd.DataFrame(row.iloc[0]["reasons"], columns=columns)


def customer_card(scores: pd.DataFrame, customer_id: str) -> pd.Series:
    """One customer's score in a few readable fields, including the recommended action and why."""
    row = scores.loc[scores["customer_id"] == customer_id].iloc[0]
    return pd.Series(
        {
            "customer_id": customer_id,
            "churn probability": f"{row['churn_probability']:.1%} ({row['risk_tier']} risk)",
            "CLV over the horizon": f"{row['clv']:,.2f}",
            "value at risk": f"{row['value_at_risk']:,.2f}",
            "segment": row["segment"],
            "action": row["action"]["label"],
            "why": row["action"]["why"],
        }
    )


def rows_of(frame: pd.DataFrame, customer_ids: Sequence[str]) -> pd.DataFrame:
    """The rows of ``frame`` for ``customer_ids``, in that order."""
    indexed = frame.set_index("customer_id", drop=False)
    return indexed.loc[list(customer_ids)].reset_index(drop=True)


# ------------------------------------------------------------------------------------------------ figures


def _figure(rows: int = 1, cols: int = 1, size: tuple[float, float] = (7.0, 4.0)) -> tuple[Figure, Any]:
    """A figure not registered with pyplot: returned, shown once by the notebook, never leaked."""
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    return fig, axes


def activity_figure(monthly: pd.DataFrame) -> Figure:
    """Orders and buyers, revenue, new customers and service contacts per month; partial months shaded."""
    fig, axes = _figure(2, 2, (11.0, 6.5))
    full = monthly.loc[~monthly["partial"]]
    month = monthly["month"]
    axes[0, 0].plot(month, monthly["orders"], label="orders")
    axes[0, 0].plot(month, monthly["buyers"], label="buyers")
    axes[0, 0].set(title="Orders and buyers per month")
    axes[0, 1].plot(month, monthly["revenue"], color="tab:green")
    axes[0, 1].set(title="Revenue per month")
    axes[1, 0].bar(month, monthly["new_customers"], width=20, color="tab:purple", label="new customers")
    if "cancellations" in monthly:
        axes[1, 0].plot(month, monthly["cancellations"], color="tab:red", label="cancellations")
    axes[1, 0].set(title="Customers joining and cancelling")
    for column in [c for c in monthly.columns if c.startswith("contacts_")]:
        axes[1, 1].plot(month, monthly[column], label=column.removeprefix("contacts_"))
    axes[1, 1].set(title="Service contacts per month by type")
    for ax in axes.flat:
        for stamp in monthly.loc[monthly["partial"], "month"]:
            ax.axvspan(stamp, stamp + pd.offsets.MonthBegin(1), color="grey", alpha=0.15, lw=0)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.tick_params(axis="x", labelrotation=30)
    if full.empty:
        fig.suptitle("No complete month in the data")
    return fig


def distribution_figure(purchases: pd.DataFrame, gaps: pd.Series) -> Figure:
    """Orders per customer, average order value and days between orders (log-scaled where skewed)."""
    fig, axes = _figure(1, 3, (12.0, 3.6))
    axes[0, 0].hist(
        purchases["orders"], bins=np.unique(np.geomspace(1, max(purchases["orders"].max(), 2), 30).round())
    )
    axes[0, 0].set(xscale="log", title="Orders per customer", xlabel="orders", ylabel="customers")
    aov = purchases["avg_order_value"].clip(lower=0.01)
    axes[0, 1].hist(aov, bins=np.geomspace(aov.min(), max(aov.max(), aov.min() * 1.01), 40))
    axes[0, 1].set(xscale="log", title="Average order value", xlabel="per customer", ylabel="customers")
    axes[0, 2].hist(gaps.clip(upper=gaps.quantile(0.99) if len(gaps) else 0), bins=50)
    median = float(gaps.median()) if len(gaps) else float("nan")
    axes[0, 2].axvline(median, color="black", ls=":", label=f"median {median:.0f} days")
    axes[0, 2].set(title="Days between orders", xlabel="days (top 1% clipped)", ylabel="repeat orders")
    axes[0, 2].legend(fontsize=8)
    return fig


def churn_over_time_figure(
    rates: pd.DataFrame, marks: Sequence[pd.Timestamp] = (), marks_label: str = "training cutoffs"
) -> Figure:
    """Churn rate per cutoff with its 95% band and the number of active customers behind it.

    ``marks`` are drawn as dotted lines (e.g. :func:`training_cutoffs`)."""
    fig, axes = _figure(1, 1, (9.0, 4.0))
    ax = axes[0, 0]
    ax.plot(rates["cutoff"], rates["churn_rate"], marker="o", ms=3, label="churn rate")
    ax.fill_between(
        rates["cutoff"], rates["churn_rate_low"], rates["churn_rate_high"], alpha=0.2, label="95% interval"
    )
    for i, stamp in enumerate(marks):
        ax.axvline(pd.Timestamp(stamp), color="grey", ls=":", lw=1, label=marks_label if i == 0 else None)
    ax.set(ylabel="share churned within the horizon", xlabel="cutoff", ylim=(0, 1))
    twin = ax.twinx()
    twin.bar(rates["cutoff"], rates["customers"], width=10, color="grey", alpha=0.25)
    twin.set(ylabel="active customers")
    ax.set_zorder(twin.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Observed churn rate at each cutoff")
    return fig


def cohort_figure(cohorts: pd.DataFrame, min_customers: int = 20) -> Figure:
    """Heat map of churn rate by signup cohort (rows) and cutoff (columns); small cells left blank."""
    shown = cohorts.loc[cohorts["customers"] >= min_customers]
    table = shown.pivot(index="cohort", columns="cutoff", values="churn_rate").sort_index()
    fig, axes = _figure(1, 1, (11.0, max(3.0, 0.32 * len(table) + 1.5)))
    ax = axes[0, 0]
    ax.grid(False)
    image = ax.imshow(table.to_numpy(float), aspect="auto", cmap="magma_r", vmin=0, vmax=1)
    ax.set_yticks(range(len(table)), table.index)
    step = max(1, len(table.columns) // 12)
    ax.set_xticks(range(0, len(table.columns), step), [c.strftime("%Y-%m") for c in table.columns[::step]])
    ax.tick_params(axis="x", labelrotation=45)
    ax.set(
        xlabel="cutoff",
        ylabel="signup cohort",
        title=f"Churn rate by cohort (cells with ≥{min_customers} customers)",
    )
    fig.colorbar(image, ax=ax, label="churn rate")
    return fig


def service_figure(service: pd.DataFrame) -> Figure:
    """One panel per service factor: raw churn rate (with 95% interval) and activity-adjusted churn rate."""
    factors = list(dict.fromkeys(service["factor"]))
    if not factors:
        fig, axes = _figure(1, 1, (6.0, 2.0))
        axes[0, 0].set_axis_off()
        axes[0, 0].text(0.5, 0.5, "No service data: no delivery delays or interactions supplied", ha="center")
        return fig
    fig, axes = _figure(1, max(len(factors), 1), (3.6 * max(len(factors), 1), 3.8))
    for ax, factor in zip(axes.flat, factors, strict=False):
        part = service.loc[service["factor"] == factor]
        x = np.arange(len(part))
        err = np.vstack(
            [part["churn_rate"] - part["churn_rate_low"], part["churn_rate_high"] - part["churn_rate"]]
        )
        ax.bar(x - 0.2, part["churn_rate"], 0.4, yerr=err, capsize=2, label="raw", color="tab:blue")
        ax.bar(x + 0.2, part["adjusted_churn_rate"], 0.4, label="same order volume", color="tab:orange")
        labels = [f"{lv}\n(n={n})" for lv, n in zip(part["level"], part["customers"], strict=True)]
        ax.set_xticks(x, labels, fontsize=7)
        ax.set(title=factor, ylim=(0, 1))
        ax.title.set_fontsize(9)
    axes[0, 0].set_ylabel("churn rate")
    axes[0, 0].legend(fontsize=8)
    return fig


def reliability_figure(report: EvaluationReport, bins: int = 10) -> Figure:
    """Reliability diagram of the bundle's calibrated probability: does 30% mean 30%?"""
    table = reliability_table(
        report.scores["churned"].to_numpy(), report.scores["churnguard"].to_numpy(), bins
    )
    fig, axes = _figure(1, 1, (5.5, 5.0))
    ax = axes[0, 0]
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="perfect calibration")
    err = np.vstack([table["observed"] - table["observed_low"], table["observed_high"] - table["observed"]])
    ax.errorbar(table["predicted"], table["observed"], yerr=err, marker="o", capsize=3, label="churnguard")
    ax.set(xlabel="predicted churn probability", ylabel="observed churn rate", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(f"Reliability at {report.cutoff.date()} ({bins} equal-count bins)")
    ax.legend()
    return fig


def gains_figure(report: EvaluationReport) -> Figure:
    """Cumulative gains of every churn model: churners reached per share of customers contacted."""
    y = report.scores["churned"].to_numpy()
    table = gains_table(y, {m: report.scores[m].to_numpy() for m in report.models})
    fig, axes = _figure(1, 1, (6.0, 4.5))
    ax = axes[0, 0]
    for model, part in table.groupby("model", sort=False):
        ax.plot(part["contacted_share"], part["churners_reached"], label=model)
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="random")
    ax.set(xlabel="share of customers contacted (riskiest first)", ylabel="share of churners reached")
    ax.set_title("Cumulative gains")
    ax.legend()
    return fig
