"""Data profiles behind ``notebooks/01_explore.ipynb``: what a data folder holds, how customers buy and
contact service, how many leave, and whether service problems come before leaving, with their figures.

Every function takes its dates explicitly (or derives them from the data, never from the clock), returns
DataFrames or matplotlib figures, and prints nothing: the notebook only calls these functions and shows
what they return, so every number in it can be reproduced and tested here.

Orders, churn, features and labels come from :mod:`features.engine`, with the same definitions as
training: a customer counts at a cutoff when active in the year before it, and churned when they made
no purchase in ``[cutoff, cutoff + horizon)`` or cancelled in it. The model report
(``training.analysis``) and the scored-customer summaries (``serving.insights``) build on the locations,
intervals and figure helpers defined here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pandas.api.typing import DataFrameGroupBy

from features.build import order_rows as order_table  # the features' own order roll-up, not a copy
from features.contract import INTERACTION_TYPES, TABLES
from features.engine import compute_labels, duckdb_tables, to_frame
from features.errors import DataProblem, DataValidationError
from features.loading import Dataset
from features.snapshots import build_snapshots, observed_until
from features.spec import BASE_BY_NAME

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


ORDER_COLUMNS = ["customer_id", "timestamp", "amount", "discount", "returned", "late", "channel"]


def orders(dataset: Dataset, threads: int = 1) -> pd.DataFrame:
    """Purchases rolled up to one row per order, exactly as the features see them (the engine's own order
    roll-up over all the data): lines sharing an order id are one order, return lines are none.

    Columns: :data:`ORDER_COLUMNS`; ``late`` is a delivery delay above zero. Sorted by time."""
    columns = ("customer_id", "timestamp", "amount", "discount", "returned", "delay", "channel")
    with duckdb_tables(dataset, threads) as tables:
        out = to_frame(order_table(tables, observed_until(dataset).to_pydatetime(), columns))
    out["returned"] = out["returned"].fillna(0).astype(bool)
    out["late"] = out["delay"].fillna(0) > 0
    return out[ORDER_COLUMNS].sort_values("timestamp", kind="stable").reset_index(drop=True)


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
        orders=("customer_id", "size"),
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
        orders=("customer_id", "size"),
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


def wilson_interval(successes: pd.Series, n: pd.Series) -> tuple[pd.Series, pd.Series]:
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
    out["churn_rate_low"], out["churn_rate_high"] = wilson_interval(out["churned"], out["customers"])
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

    Raises :class:`DataValidationError` without cutoffs (:func:`label_cutoffs` finds none when the data
    is shorter than the horizon plus one step)."""
    if not len(cutoffs):
        file = str(dataset.files.get("transactions", "transactions"))
        problem = f"too short to observe a {horizon_days}-day churn window after a cutoff"
        hint = "supply a longer history, or look at a shorter horizon"
        raise DataValidationError([DataProblem(file, "timestamp", problem, hint)])
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


# ------------------------------------------------------------------------------------------------ figures


def new_figure(rows: int = 1, cols: int = 1, size: tuple[float, float] = (7.0, 4.0)) -> tuple[Figure, Any]:
    """A figure not registered with pyplot (returned, shown once by the notebook, never leaked) and an
    array of ``rows`` x ``cols`` axes in the house style; the model report draws with it too."""
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    return fig, axes


def activity_figure(monthly: pd.DataFrame) -> Figure:
    """Orders and buyers, revenue, new customers and service contacts per month; partial months shaded."""
    fig, axes = new_figure(2, 2, (11.0, 6.5))
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
    fig, axes = new_figure(1, 3, (12.0, 3.6))
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
    fig, axes = new_figure(1, 1, (9.0, 4.0))
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
    fig, axes = new_figure(1, 1, (11.0, max(3.0, 0.32 * len(table) + 1.5)))
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
        fig, axes = new_figure(1, 1, (6.0, 2.0))
        axes[0, 0].set_axis_off()
        axes[0, 0].text(0.5, 0.5, "No service data: no delivery delays or interactions supplied", ha="center")
        return fig
    fig, axes = new_figure(1, max(len(factors), 1), (3.6 * max(len(factors), 1), 3.8))
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
