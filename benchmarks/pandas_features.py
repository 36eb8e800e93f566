"""A plain pandas implementation of :func:`features.build.feature_table`, the benchmark's baseline.

Same output as :func:`features.engine.compute_features`: one row per customer active at the cutoff (a
signup or purchase within ``ACTIVE_DAYS`` before it, no cancellation before it), columns ``customer_id``,
every base feature in spec order, then the customer attributes; sorted by ``customer_id``. Same semantics:
only events strictly before the cutoff, purchases rolled up to one row per ``(customer_id, order_id)``,
windows ``age < w`` days, SQL null rules (counts and sums of nothing are 0, means and minima of nothing are
NaN). Ages are computed exactly as DuckDB's ``epoch()`` does, so window edges agree to the bit. Return
lines (negative amounts) are no purchases: they are netted into spend (never below 0) and counted as
returned orders, one per (customer_id, order_id).
``tests/features/test_pandas_reference.py`` keeps the two implementations equal.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from features.build import ACTIVE_DAYS
from features.contract import INTERACTION_CHANNELS
from features.loading import Dataset
from features.spec import BASE_FEATURES, WINDOWS

_DAY = 86400.0
_MONTH = 30.4375


def _epoch(stamps: pd.Series) -> np.ndarray:
    """Seconds since 1970 as float64, like DuckDB's ``epoch(timestamp)`` (microseconds / 1e6)."""
    return stamps.astype("datetime64[us]").astype("int64").to_numpy() / 1e6


def _age_days(stamps: pd.Series, cutoff: pd.Timestamp) -> np.ndarray:
    """Days from each event to the cutoff, positive for past events; NaN where the stamp is missing."""
    ages = (_epoch(pd.Series([cutoff]))[0] - _epoch(stamps)) / _DAY
    return np.where(stamps.isna().to_numpy(), np.nan, ages)


def customers_at(dataset: Dataset, cutoff: pd.Timestamp) -> pd.Index:
    """Customers with a signup or a purchase in ``[cutoff - ACTIVE_DAYS, cutoff)`` who have not cancelled."""
    since = cutoff - pd.Timedelta(days=ACTIVE_DAYS)
    cust, tx, canc = dataset.customers, _purchases(dataset), dataset.cancellations
    signed = cust.loc[(cust["signup_date"] < cutoff) & (cust["signup_date"] >= since), "customer_id"]
    bought = tx.loc[(tx["timestamp"] < cutoff) & (tx["timestamp"] >= since), "customer_id"]
    gone = canc.loc[canc["timestamp"] < cutoff, "customer_id"]
    known = pd.Index(pd.concat([signed, bought]).unique())
    return known.difference(pd.Index(gone.unique()), sort=False)


def _purchases(dataset: Dataset) -> pd.DataFrame:
    tx = dataset.transactions
    return tx[tx["amount"] >= 0] if dataset.has_returns else tx


def orders_before(dataset: Dataset, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Purchases before the cutoff, one row per (customer_id, order_id), with the order's age in days."""
    tx = _purchases(dataset)
    tx = tx[tx["timestamp"] < cutoff]
    if dataset.rows_are_orders:  # the same shortcut the Ibis build takes: each row is already an order
        orders = tx[["customer_id", "timestamp", "amount", "discount", "channel"]].assign(
            returned=tx["returned"].astype("int64"), delay=tx["delivery_delay_days"]
        )
        orders["age"] = _age_days(orders["timestamp"], cutoff)
        return orders.reset_index(drop=True)
    orders = tx.groupby(["customer_id", "order_id"], sort=False, observed=True).agg(
        timestamp=("timestamp", "min"),
        amount=("amount", "sum"),
        discount=("discount", "sum"),
        discount_rows=("discount", "count"),
        returned=("returned", "max"),
        delay=("delivery_delay_days", "max"),
        channel=("channel", "min"),
    )
    orders = orders.reset_index()
    orders["discount"] = orders["discount"].where(
        orders.pop("discount_rows") > 0
    )  # SQL: sum of nulls is null
    orders["returned"] = orders["returned"].astype("int64")
    orders["age"] = _age_days(orders["timestamp"], cutoff)
    return orders


def return_features(dataset: Dataset, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Per customer: returns before the cutoff (one per order id, or per line) and the credits by window."""
    tx = dataset.transactions
    lines = tx[(tx["amount"] < 0) & (tx["timestamp"] < cutoff)]
    if dataset.rows_are_orders:
        returns = lines[["customer_id", "timestamp", "amount"]]
    else:
        returns = (
            lines.groupby(["customer_id", "order_id"], sort=False, observed=True)
            .agg(timestamp=("timestamp", "min"), amount=("amount", "sum"))
            .reset_index()
        )
    age = pd.Series(_age_days(returns["timestamp"], cutoff), index=returns.index)
    key, amount = returns["customer_id"], returns["amount"]
    out = pd.DataFrame(
        {
            "_returns_total": key.groupby(key, sort=False).size(),
            "_returns_365d": _count(age < 365, key),
            "_credit_total": amount.groupby(key, sort=False).sum(),
            "_credit_prev_180d": amount.where((age >= 180) & (age < 360), 0.0).groupby(key, sort=False).sum(),
        }
    )
    for w in WINDOWS:
        out[f"_credit_{w}d"] = amount.where(age < w, 0.0).groupby(key, sort=False).sum()
    return out


def _net_of_returns(j: pd.DataFrame) -> pd.DataFrame:
    credit = [c for c in j.columns if c.startswith(("_credit_", "_returns_"))]
    j[credit] = j[credit].fillna(0)
    n = j["orders_total"].astype("float64")
    for name, credit_name in (
        ("spend_total", "_credit_total"),
        ("spend_prev_180d", "_credit_prev_180d"),
        *((f"spend_{w}d", f"_credit_{w}d") for w in WINDOWS),
    ):
        j[name] = (j[name] + j[credit_name]).clip(lower=0.0)
    j["returns_365d"] = j["returns_365d"] + j["_returns_365d"].astype("int64")
    j["return_share"] = (j["return_share"] + j["_returns_total"] / n).clip(upper=1.0).where(n > 0)
    return j.drop(columns=credit)


def _masked_sum(values: pd.Series, mask: pd.Series, keys: pd.Series) -> pd.Series:
    return values.where(mask).groupby(keys, sort=False).sum(min_count=1)


def _count(mask: pd.Series, keys: pd.Series) -> pd.Series:
    return mask.astype("int64").groupby(keys, sort=False).sum()


def purchase_features(orders: pd.DataFrame) -> pd.DataFrame:
    """Per-customer aggregates over the orders; columns missing for a customer are filled in later."""
    o, key = orders, orders["customer_id"]
    grouped = o.groupby("customer_id", sort=False)
    age, delay, discount = o["age"], o["delay"], o["discount"]
    late = (delay > 0).astype("int64")
    months = np.floor(age / _MONTH).where(age < 365)
    out = pd.DataFrame(
        {
            "recency_days": grouped["age"].min(),
            "first_age": grouped["age"].max(),
            "orders_total": grouped.size(),
            "spend_total": grouped["amount"].sum(),
            "discount_total": grouped["discount"].sum(min_count=1),
            "discounted_order_share": (discount > 0)
            .astype("float64")
            .where(discount.notna())
            .groupby(key)
            .mean(),
            "return_share": grouped["returned"].mean(),
            "channels_used": grouped["channel"].nunique(),
            "late_deliveries_90d": _count((late == 1) & (age < 90), key),
            "late_deliveries_365d": _count((late == 1) & (age < 365), key),
            "mean_delay_days_365d": delay.where(age < 365).groupby(key, sort=False).mean(),
            "returns_365d": _count((o["returned"] == 1) & (age < 365), key),
            "orders_prev_90d": _count((age >= 90) & (age < 180), key),
            "spend_prev_180d": _masked_sum(o["amount"], (age >= 180) & (age < 360), key),
            "active_months_365d": months.groupby(key, sort=False).nunique(),
        }
    )
    for w in WINDOWS:
        out[f"orders_{w}d"] = _count(age < w, key)
        out[f"spend_{w}d"] = _masked_sum(o["amount"], age < w, key)
    gaps = o.sort_values(["customer_id", "timestamp"], kind="stable")
    gap = gaps.groupby("customer_id", sort=False)["age"].shift(1) - gaps["age"]
    out["gap_std"] = gap.groupby(gaps["customer_id"], sort=False).std(ddof=0)
    per_channel = o.groupby(["customer_id", "channel"], sort=False, observed=True).size()
    out["main_channel_orders"] = per_channel.groupby(level="customer_id", sort=False).max()
    return out


def _last(values: pd.Series, interactions: pd.DataFrame) -> pd.Series:
    """The latest non-null value per customer (first row in data order among equal timestamps)."""
    rows = interactions[values.notna()]
    latest = rows.groupby("customer_id", sort=False)["timestamp"].idxmax()
    return pd.Series(values.loc[latest.to_numpy()].to_numpy(), index=latest.index)


def service_features(dataset: Dataset, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Per-customer aggregates over service interactions before the cutoff."""
    it = dataset.interactions.reset_index(drop=True)
    it = it[it["timestamp"] < cutoff]
    key = it["customer_id"]
    age = pd.Series(_age_days(it["timestamp"], cutoff), index=it.index)
    kind = it["type"]
    complaint, contact = kind == "complaint", kind != "survey"
    unresolved = complaint & ~it["resolved"].fillna(False).astype(bool)
    out = pd.DataFrame(
        {
            "complaints_90d": _count(complaint & (age < 90), key),
            "complaints_365d": _count(complaint & (age < 365), key),
            "support_90d": _count((kind == "support") & (age < 90), key),
            "support_365d": _count((kind == "support") & (age < 365), key),
            "inquiries_365d": _count((kind == "inquiry") & (age < 365), key),
            "contacts_90d": _count(contact & (age < 90), key),
            "unresolved_complaints_90d": _count(unresolved & (age < 90), key),
            "unresolved_complaints_365d": _count(unresolved & (age < 365), key),
            "mean_resolution_hours_365d": it["resolution_hours"]
            .where(contact & (age < 365))
            .groupby(key)
            .mean(),
            "days_since_last_complaint": age.where(complaint).groupby(key, sort=False).min(),
            "last_satisfaction": _last(it["satisfaction"], it),
            "mean_satisfaction_365d": it["satisfaction"].where(age < 365).groupby(key, sort=False).mean(),
            "last_nps": _last(it["nps"], it),
        }
    )
    for channel in INTERACTION_CHANNELS:
        out[f"contacts_{channel}_365d"] = _count(contact & (it["channel"] == channel) & (age < 365), key)
    return out


_COUNTS = [
    "orders_total",
    "channels_used",
    "late_deliveries_90d",
    "late_deliveries_365d",
    "returns_365d",
    "orders_prev_90d",
    "active_months_365d",
    *(f"orders_{w}d" for w in WINDOWS),
    "complaints_90d",
    "complaints_365d",
    "support_90d",
    "support_365d",
    "inquiries_365d",
    "contacts_90d",
    "unresolved_complaints_90d",
    "unresolved_complaints_365d",
    *(f"contacts_{c}_365d" for c in INTERACTION_CHANNELS),
]
_SUMS = ["spend_total", "spend_prev_180d", *(f"spend_{w}d" for w in WINDOWS)]


def _derived(j: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    n = j["orders_total"].astype("float64")
    mean_gap = ((j["first_age"] - j["recency_days"]) / (n - 1)).where(n > 1)
    mean_gap = mean_gap.where(mean_gap != 0)
    list_value = j["spend_total"] + j["discount_total"]
    signup_age = pd.Series(_age_days(j["signup_date"], cutoff), index=j.index)
    return j.assign(
        tenure_days=np.fmax(signup_age, j["first_age"]),
        avg_order_value=(j["spend_total"] / n).where(n > 0),
        order_trend_90d=(j["orders_90d"] + 1.0) / (j["orders_prev_90d"] + 1.0),
        spend_trend_180d=(j["spend_180d"] + 1.0) / (j["spend_prev_180d"] + 1.0),
        mean_gap_days=mean_gap,
        gap_variability=j["gap_std"] / mean_gap,
        overdue_ratio=j["recency_days"] / mean_gap,
        discount_rate=(j["discount_total"] / list_value).where(list_value > 0),
        main_channel_share=(j["main_channel_orders"] / n).where(n > 0),
        service_failures_per_order_365d=(j["complaints_365d"] + j["late_deliveries_365d"] + j["returns_365d"])
        / j["orders_365d"].clip(lower=1).astype("float64"),
    )


def compute_features_pandas(dataset: Dataset, as_of: datetime | pd.Timestamp) -> pd.DataFrame:
    """The pandas twin of ``features.engine.compute_features(dataset, as_of)``."""
    cutoff = pd.Timestamp(as_of)
    base = pd.DataFrame(index=customers_at(dataset, cutoff).rename("customer_id"))
    joined = base.join(purchase_features(orders_before(dataset, cutoff))).join(
        service_features(dataset, cutoff)
    )
    for column in _COUNTS:
        joined[column] = joined[column].fillna(0).astype("int64")
    for column in _SUMS:
        joined[column] = joined[column].fillna(0.0).astype("float64")
    if dataset.has_returns:
        joined = _net_of_returns(joined.join(return_features(dataset, cutoff)))
    joined = joined.join(dataset.customers.set_index("customer_id"))
    out = _derived(joined, cutoff).reset_index()
    columns = ["customer_id", *(f.name for f in BASE_FEATURES), *dataset.attribute_columns]
    out = out[columns].sort_values("customer_id", kind="stable").reset_index(drop=True)
    return out.astype({f.name: "float64" for f in BASE_FEATURES if f.name not in _COUNTS})


def compare(expected: pd.DataFrame, actual: pd.DataFrame, tolerance: float = 1e-6) -> list[str]:
    """Differences between two feature frames after sorting by customer_id; empty when they agree.

    Floats agree within ``tolerance`` (relative and absolute); NaN equals NaN; everything else exactly.
    """
    if list(expected.columns) != list(actual.columns):
        return [f"columns differ: {list(expected.columns)} vs {list(actual.columns)}"]
    a = expected.sort_values("customer_id", kind="stable").reset_index(drop=True)
    b = actual.sort_values("customer_id", kind="stable").reset_index(drop=True)
    if len(a) != len(b) or not a["customer_id"].equals(b["customer_id"]):
        only = set(a["customer_id"]) ^ set(b["customer_id"])
        return [f"customers differ: {len(a)} vs {len(b)} rows, e.g. {sorted(only)[:5]}"]
    problems = []
    for column in a.columns:
        left, right = a[column], b[column]
        if pd.api.types.is_float_dtype(left) or pd.api.types.is_float_dtype(right):
            x, y = left.to_numpy(dtype="float64"), right.to_numpy(dtype="float64")
            same = np.isclose(x, y, rtol=tolerance, atol=tolerance, equal_nan=True)
        else:
            same = (left.astype(str) == right.astype(str)).to_numpy()
        if not same.all():
            bad = np.flatnonzero(~same)[:3]
            shown = [(a["customer_id"].iloc[i], left.iloc[i], right.iloc[i]) for i in bad]
            problems.append(f"{column}: {int((~same).sum())} rows differ, e.g. {shown}")
        elif left.dtype != right.dtype:
            problems.append(f"{column}: dtype {left.dtype} vs {right.dtype}")
    return problems
