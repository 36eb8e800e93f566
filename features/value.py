"""Customer value over the whole relationship: the BG/NBD + Gamma-Gamma value model and how scoring
combines it with the LightGBM forecasts.

What each part does (the model card repeats this):

- **LightGBM** (the bundle's churn and spend models) knows the most about the next ``H`` days: service
  failures, trends, discounts. It gives the churn probability ``p`` and the spend over the horizon.
- **BG/NBD + Gamma-Gamma** (:mod:`features.btyd`) extrapolate beyond the horizon, where no label exists:
  expected purchases and order value of a customer over the next two years, discounted; the years after
  the second shrink geometrically by the customer's own second-year-to-first-year ratio
  (:func:`geometric_lifetime`), not by BG/NBD's own tail, which overstated how long customers stay.

Combined, per customer, with ``m`` the margin (1 on a revenue basis), ``c`` the yearly cost to serve and
``d_H`` the mean discount factor over the horizon::

    horizon part    = m x expected_revenue_H x d_H - c x (discounted years alive within H)
    beyond part     = BTYD value from H to the end, x k,   k = (1 - p) / (1 - q)   (clipped to [0, 3])
    residual_value  = horizon part + beyond part
    value_1y        = horizon part + BTYD value from H to 365 days, x k

``q`` is BG/NBD's own probability of no purchase in the horizon, so ``k`` moves the long-run value by how
much more (or less) likely the ML model thinks the customer is to stay than BG/NBD does. The value if the
customer is retained, which value at risk multiplies by ``p``, is BG/NBD's residual value (two years and
their continuation) for a customer known to be alive today (that value divided by P(alive)).

The interval (p05, p95) is parameter uncertainty only: at training the parameters are redrawn from their
estimated sampling distribution (normal in log-parameters, standard errors from the observed information)
and each customer's residual value recomputed; the 5th and 95th percentile ratios to the point value are
kept per frequency bin and applied at scoring. It says how sure the fit is of the population's
parameters, not how uncertain one customer's future is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

import numpy as np
import pandas as pd

from features.btyd import (
    BetaGeoModel,
    DiscountedPurchases,
    GammaGammaModel,
    ModelFitError,
    expected_value,
    horizon_edges,
    residual_value,
    rfm_summary,
)
from features.economics import (
    COST_FEATURES,
    DEFAULT_DISCOUNT_RATE,
    Columns,
    EconomicsConfig,
    cost_per_year,
    numeric,
)

# Columns carrying each customer's purchase summary next to its features (batch scoring and training).
INPUT_COLUMNS: Final = ("value_frequency", "value_recency", "value_T", "value_monetary", "value_margin")
FREQUENCY_BINS: Final = (0, 1, 2, 4, 8, 16)  # lower edges of the interval's frequency bins
MAX_RETENTION_RATIO: Final = 3.0
MAX_YEAR_RATIO: Final = 0.95  # of a year's value to the year before it, beyond the second year
SPEND_CAP_QUANTILE: Final = 0.99
_BOOTSTRAP_DRAWS: Final = 20
_BOOTSTRAP_CUSTOMERS: Final = 1000

# Per-customer figures by column name, plain arrays of one length.
Parts: TypeAlias = dict[str, np.ndarray]


@dataclass
class ValueModel:
    """The fitted BTYD pair, the economics it values with, the interval ratios and how it was made."""

    purchases: BetaGeoModel
    spend: GammaGammaModel
    economics: EconomicsConfig | None = None
    interval_low: list[float] = field(default_factory=list)  # per FREQUENCY_BINS; empty: no interval
    interval_high: list[float] = field(default_factory=list)
    method: dict[str, Any] = field(default_factory=dict)

    @property
    def basis(self) -> str:
        return "revenue" if self.economics is None else "contribution"

    @property
    def annual_discount_rate(self) -> float:
        return DEFAULT_DISCOUNT_RATE if self.economics is None else self.economics.annual_discount_rate

    def order_value(self, frequency: np.ndarray, monetary_value: np.ndarray) -> np.ndarray:
        """Gamma-Gamma's expected order value; customers without repeat purchases get the observed mean
        repeat order value instead of the model's population mean, which heavy tails (q near 1) inflate."""
        value = self.spend.expected_order_value(frequency, monetary_value)
        prior = self.method.get("prior_order_value")
        return value if prior is None else np.where(frequency > 0, value, float(prior))

    @property
    def name(self) -> str:
        return f"bg/nbd + gamma-gamma beyond the horizon, lightgbm within it ({self.method.get('spend', '')})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "purchases": self.purchases.to_dict(),
            "spend": self.spend.to_dict(),
            "economics": None if self.economics is None else self.economics.model_dump(),
            "interval_low": self.interval_low,
            "interval_high": self.interval_high,
            "method": self.method,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> ValueModel:
        economics = state.get("economics")
        return cls(
            BetaGeoModel.from_dict(state["purchases"]),
            GammaGammaModel.from_dict(state["spend"]),
            None if economics is None else EconomicsConfig.model_validate(economics),
            [float(v) for v in state.get("interval_low", [])],
            [float(v) for v in state.get("interval_high", [])],
            dict(state.get("method", {})),
        )


# ------------------------------------------------------------------------------------------- fitting


def fit_value_model(
    transactions: pd.DataFrame, cutoff: pd.Timestamp, *, economics: EconomicsConfig | None, seed: int = 42
) -> ValueModel:
    """BG/NBD and Gamma-Gamma on the purchase summary at ``cutoff`` (days as the time unit).

    Gamma-Gamma refuses heavy-tailed order values (q <= 1); then order values are capped at their 99th
    percentile and fitted again, then a penalizer is added; ``method["spend"]`` says which worked. A
    BG/NBD that does not converge unpenalised is fitted with a small penalizer. Raises ModelFitError
    when nothing works (the caller trains without a value model and says so)."""
    summary = rfm_summary(transactions, cutoff)
    x, t_x, age = summary["frequency"], summary["recency"], summary["T"]
    try:
        purchases, bg_note = BetaGeoModel().fit(x, t_x, age), "unpenalised"
    except ModelFitError:
        purchases, bg_note = BetaGeoModel(penalizer=0.001).fit(x, t_x, age), "penalizer 0.001"
    spend, note = _fit_spend(summary)
    model = ValueModel(purchases, spend, economics)
    model.method = {
        "fitted_at": str(pd.Timestamp(cutoff).date()),
        "customers": len(summary),
        "repeat_customers": int((x > 0).sum()),
        "purchases": f"BG/NBD, {bg_note}",
        "spend": note,
        "interval": "parameter bootstrap, ratios per frequency bin",
        "tail": "BG/NBD's first two years, the years after shrinking by each customer's year-two ratio",
        "prior_order_value": float(
            summary["monetary_value"][x > 0]
            .clip(upper=summary["monetary_value"][x > 0].quantile(SPEND_CAP_QUANTILE))
            .mean()
        ),
    }
    model.interval_low, model.interval_high = _interval_ratios(model, summary, seed)
    return model


def _fit_spend(summary: pd.DataFrame) -> tuple[GammaGammaModel, str]:
    x, m = summary["frequency"], summary["monetary_value"]
    try:
        return GammaGammaModel().fit(x, m), "Gamma-Gamma, unpenalised"
    except ModelFitError:
        pass
    cap = float(m[x > 0].quantile(SPEND_CAP_QUANTILE))
    capped = m.clip(upper=cap)
    try:
        return GammaGammaModel().fit(x, capped), f"Gamma-Gamma, order values capped at {cap:,.2f} (p99)"
    except ModelFitError:
        model = GammaGammaModel(penalizer=0.01).fit(x, capped)
        return model, f"Gamma-Gamma, order values capped at {cap:,.2f} (p99), penalizer 0.01"


def _interval_ratios(model: ValueModel, summary: pd.DataFrame, seed: int) -> tuple[list[float], list[float]]:
    """5th and 95th percentile of (redrawn-parameter value / point value) per frequency bin."""
    ses = {**model.purchases.standard_errors_, **model.spend.standard_errors_}
    if not all(math.isfinite(v) for v in ses.values()):
        return [], []
    rng = np.random.default_rng(seed)
    sample = summary.sample(min(len(summary), _BOOTSTRAP_CUSTOMERS), random_state=seed)
    rate = model.annual_discount_rate
    point = residual_value(model.purchases, model.spend, sample, annual_discount_rate=rate).to_numpy()
    draws = []
    for _ in range(_BOOTSTRAP_DRAWS):
        bg = BetaGeoModel.from_dict(
            _redrawn(model.purchases.to_dict(), model.purchases.standard_errors_, rng)
        )
        gg = GammaGammaModel.from_dict(_redrawn(model.spend.to_dict(), model.spend.standard_errors_, rng))
        if gg.params_["q"] <= 1:
            continue
        draws.append(residual_value(bg, gg, sample, annual_discount_rate=rate).to_numpy())
    if len(draws) < 10:
        return [], []
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.array(draws) / np.where(point > 0, point, np.nan)
    low, high = np.nanpercentile(ratio, 5, axis=0), np.nanpercentile(ratio, 95, axis=0)
    bins = _frequency_bin(sample["frequency"].to_numpy())
    lows, highs = [], []
    for b in range(len(FREQUENCY_BINS)):
        inside = (bins == b) & np.isfinite(low) & np.isfinite(high)
        lows.append(float(np.median(low[inside])) if inside.any() else float(np.nanmedian(low)))
        highs.append(float(np.median(high[inside])) if inside.any() else float(np.nanmedian(high)))
    return lows, highs


def _redrawn(state: dict[str, Any], ses: dict[str, float], rng: np.random.Generator) -> dict[str, Any]:
    params = {
        k: float(v * math.exp(rng.normal(0.0, ses[k] / v))) if v > 0 else v
        for k, v in state["params"].items()
    }
    return {**state, "params": params}


def _frequency_bin(frequency: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.asarray(FREQUENCY_BINS), frequency, side="right") - 1


# -------------------------------------------------------------------------------------------- inputs


def value_inputs(
    transactions: pd.DataFrame,
    as_of: pd.Timestamp,
    customer_ids: pd.Series,
    economics: EconomicsConfig | None = None,
) -> pd.DataFrame:
    """Each customer's purchase summary at ``as_of`` in :data:`INPUT_COLUMNS`, aligned with ``customer_ids``.

    A customer without a purchase yet is valued as a new customer (no repeat purchase, age 0): the
    population's prior. ``value_margin`` is the customer's spend-weighted margin over the channels they
    bought through when the config gives channel margins, else the gross margin (1 without a config)."""
    summary = rfm_summary(transactions, as_of)
    ids = customer_ids.astype(str)
    summary.index = summary.index.astype(str)
    aligned = summary.reindex(ids.to_numpy())
    frame = pd.DataFrame(
        {
            "value_frequency": aligned["frequency"].fillna(0).to_numpy(float),
            "value_recency": aligned["recency"].fillna(0).to_numpy(float),
            "value_T": aligned["T"].fillna(0).to_numpy(float),
            "value_monetary": aligned["monetary_value"].fillna(0).to_numpy(float),
            "value_margin": _margins(transactions, as_of, ids, economics),
        },
        index=customer_ids.index,
    )
    return frame


def _margins(
    transactions: pd.DataFrame, as_of: pd.Timestamp, ids: pd.Series, economics: EconomicsConfig | None
) -> np.ndarray:
    if economics is None:
        return np.ones(len(ids))
    by_channel = economics.channel_margins()
    if not by_channel or "channel" not in transactions.columns:
        return np.full(len(ids), economics.gross_margin)
    tx = transactions.loc[(transactions["timestamp"] < as_of) & (transactions["amount"] > 0)]
    margin = (
        tx["channel"].astype(str).str.lower().map(by_channel).astype(float).fillna(economics.gross_margin)
    )
    weighted = (tx["amount"] * margin).groupby(tx["customer_id"].astype(str)).sum()
    spend = tx["amount"].groupby(tx["customer_id"].astype(str)).sum()
    per_customer = (weighted / spend).reindex(ids.to_numpy())
    return per_customer.fillna(economics.gross_margin).to_numpy(float)


def inputs_from_features(features: Columns, rows: int, economics: EconomicsConfig | None = None) -> Parts:
    """The purchase summary approximated from model features, for callers that send features only.

    ``frequency = orders_total - 1``, ``T = tenure_days``, ``recency = T - recency_days``, order value
    ``spend_total / orders_total``. Orders stand in for purchase days and the join date for the first
    purchase, so the value is close to, not equal to, what batch scoring gives. Rows lacking one of
    these features get NaN (value unavailable, never 0)."""

    def column(name: str) -> np.ndarray:
        return numeric(features[name]) if name in features else np.full(rows, np.nan)

    orders, tenure, recency = column("orders_total"), column("tenure_days"), column("recency_days")
    spend = column("spend_total")
    frequency = np.maximum(np.floor(orders) - 1, 0)
    age = np.maximum(tenure, 0)
    last = np.where(frequency > 0, np.clip(age - np.nan_to_num(recency, nan=np.inf), 0, age), 0.0)
    last = np.where(np.isnan(recency) & (frequency > 0), np.nan, last)
    with np.errstate(divide="ignore", invalid="ignore"):
        monetary = np.where(orders > 0, np.maximum(spend, 0) / np.maximum(orders, 1), 0.0)
    unknown = np.isnan(orders) | np.isnan(tenure) | np.isnan(spend) | np.isnan(last)
    inputs = {
        "value_frequency": frequency,
        "value_recency": last,
        "value_T": age,
        "value_monetary": monetary,
        "value_margin": np.full(rows, 1.0 if economics is None else economics.gross_margin),
    }
    return {name: np.where(unknown, np.nan, values) for name, values in inputs.items()}


# -------------------------------------------------------------------------------------------- values

# What the purchase models say per customer, independent of the LightGBM forecasts: computed once for a
# whole batch (BTYD works per distinct (frequency, T) pair, so one call over all customers is far cheaper
# than one per chunk) and combined chunk by chunk with the forecasts (:func:`combine`).
PART_COLUMNS: Final = (
    "value_margin",
    "value_cost",
    "value_historic",
    "value_p_alive",
    "value_btyd_keeps",
    "value_lifetime",
    "value_btyd_horizon",
    "value_btyd_year",
    "value_horizon_cost",
    "value_orders_90d",
    "value_orders_1y",
    "value_order_value",
    "value_frequency",
)

# The features the value reads when no exact summary is given: the summary's stand-ins and cost to serve.
FEATURE_INPUTS: Final = (
    "orders_total",
    "tenure_days",
    "recency_days",
    "spend_total",
    *COST_FEATURES,
    "return_share",
    "orders_365d",
)


@dataclass(frozen=True)
class ServeCosts:
    """Per customer: yearly cost to serve and net spend so far (for the historic value)."""

    cost_per_year: np.ndarray
    historic_spend: np.ndarray


def value_parts(model: ValueModel, inputs: Columns, costs: ServeCosts, *, horizon_days: int) -> Parts:
    """The BTYD side of each customer's value in :data:`PART_COLUMNS` (NaN rows: inputs unavailable)."""
    columns = [np.asarray(inputs[name], dtype=float) for name in INPUT_COLUMNS]
    known = np.logical_and.reduce([~np.isnan(c) for c in columns])
    rows = len(known)
    parts = {name: np.full(rows, np.nan) for name in PART_COLUMNS}
    if known.any():
        figures = _btyd_parts(
            model,
            [c[known] for c in columns],
            ServeCosts(costs.cost_per_year[known], costs.historic_spend[known]),
            float(horizon_days),
        )
        for name, values in figures.items():
            parts[name][known] = values
    return parts


def _btyd_parts(
    model: ValueModel, inputs: list[np.ndarray], costs: ServeCosts, horizon: float
) -> dict[str, np.ndarray]:
    x, t_x, age, monetary, margin = inputs  # in the order of INPUT_COLUMNS
    bg, rate, cost = model.purchases, model.annual_discount_rate, costs.cost_per_year
    steps = DiscountedPurchases(bg, x, t_x, age, annual_discount_rate=rate)
    order_value = model.order_value(x, monetary)
    with_cost = bool((cost > 0).any())

    def sales(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Discounted revenue over the steps, and the discounted cost to serve."""
        orders, alive_years = steps.over(edges, alive_years=with_cost)
        return orders * order_value, cost * alive_years

    def contribution(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        revenue, serve = sales(edges)
        return margin * revenue - serve, serve

    r, alpha, unit = bg.params_["r"], bg.params_["alpha"], bg.unit_days_
    no_purchase_if_alive = ((alpha + age) / (alpha + age + horizon / unit)) ** (r + x)
    (revenue_1, serve_1), (revenue_2, serve_2) = sales(horizon_edges(365.0)), sales(horizon_edges(730.0))
    lifetime = margin * geometric_lifetime(revenue_1, revenue_2 - revenue_1) - geometric_lifetime(
        serve_1, serve_2 - serve_1
    )
    first_year = margin * revenue_1 - serve_1
    btyd_horizon, horizon_cost = contribution(horizon_edges(horizon))
    return {
        "value_margin": margin,
        "value_cost": cost,
        "value_historic": np.maximum(costs.historic_spend, 0.0) * margin,
        "value_p_alive": steps.p_alive,
        "value_btyd_keeps": steps.p_alive * (1 - no_purchase_if_alive),
        "value_lifetime": lifetime,
        "value_btyd_horizon": btyd_horizon,
        "value_btyd_year": first_year if horizon < 365 else btyd_horizon,
        "value_horizon_cost": horizon_cost,
        "value_orders_90d": steps.expected_purchases(90.0),
        "value_orders_1y": steps.expected_purchases(365.0),
        "value_order_value": order_value,
        "value_frequency": x,
    }


def geometric_lifetime(first_year: np.ndarray, second_year: np.ndarray) -> np.ndarray:
    """Discounted revenue (or cost to serve) to the end from the first two years' (both discounted to
    today): the years after the second shrink by the ratio of the second to the first, per customer
    (capped at :data:`MAX_YEAR_RATIO`); a second year worth nothing ends the relationship there.

    BG/NBD's own tail (its DERT) is not used: on the generator's base, seasonal and shop_export worlds its
    first two years came within 0.74-1.06 of what customers then booked, but its value beyond the first
    year was 1.4 to 1.9 times the truth's (dropout only at a purchase keeps a slowly buying customer alive
    for decades). Continuing the second year geometrically put BG/NBD's residual value a year before the
    scoring date at 0.95-1.13 of the truth's (base, seasonal, purchase_log, shop_export) instead of
    1.35-1.66, with the same ranking."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(first_year > 0, second_year / first_year, 0.0)
    ratio = np.clip(np.nan_to_num(ratio), 0.0, MAX_YEAR_RATIO)
    return first_year + np.maximum(second_year, 0.0) / (1.0 - ratio)


@dataclass(frozen=True)
class CustomerValue:
    """Per-customer value figures (NaN where the inputs were unavailable); see the module docstring."""

    residual_value: np.ndarray
    value_1y: np.ndarray
    value_if_retained: np.ndarray
    historic_value: np.ndarray
    p_alive: np.ndarray
    orders_90d: np.ndarray
    orders_1y: np.ndarray
    order_value: np.ndarray
    p05: np.ndarray
    p95: np.ndarray

    @property
    def available(self) -> np.ndarray:
        return ~np.isnan(self.residual_value)

    def value_at_risk(self, churn_probability: np.ndarray) -> np.ndarray:
        """p(churn within H) x the value if retained; nothing is at risk when that value is <= 0."""
        return churn_probability * np.maximum(self.value_if_retained, 0.0)


def combine(
    model: ValueModel,
    parts: pd.DataFrame,
    *,
    churn_probability: np.ndarray,
    expected_revenue: np.ndarray,
    horizon_days: int,
) -> CustomerValue:
    """LightGBM within the horizon, BTYD beyond it, scaled by the two models' retention odds (module doc)."""
    col = {name: np.asarray(parts[name], dtype=float) for name in PART_COLUMNS}
    rate, horizon = model.annual_discount_rate, float(horizon_days)
    delta = math.log1p(rate) / 365.25
    mean_factor = -math.expm1(-delta * horizon) / (delta * horizon)
    keeps = np.clip(
        (1 - churn_probability) / np.maximum(col["value_btyd_keeps"], 1e-3), 0.0, MAX_RETENTION_RATIO
    )
    horizon_part = col["value_margin"] * expected_revenue * mean_factor - col["value_horizon_cost"]
    residual = horizon_part + keeps * (col["value_lifetime"] - col["value_btyd_horizon"])
    p_alive = col["value_p_alive"]
    with np.errstate(divide="ignore", invalid="ignore"):
        if_retained = np.where(p_alive > 0, col["value_lifetime"] / p_alive, 0.0)
    if_retained = np.where(np.isnan(p_alive), np.nan, if_retained)
    low, high = _interval(model, col["value_frequency"], residual)
    return CustomerValue(
        residual_value=residual,
        value_1y=horizon_part + keeps * (col["value_btyd_year"] - col["value_btyd_horizon"]),
        value_if_retained=if_retained,
        historic_value=col["value_historic"],
        p_alive=p_alive,
        orders_90d=col["value_orders_90d"],
        orders_1y=col["value_orders_1y"],
        order_value=col["value_order_value"],
        p05=low,
        p95=high,
    )


def _interval(model: ValueModel, frequency: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not model.interval_low:
        nan = np.full(len(value), np.nan)
        return nan, nan
    bins = _frequency_bin(np.nan_to_num(frequency))
    a = value * np.asarray(model.interval_low)[bins]
    b = value * np.asarray(model.interval_high)[bins]
    return np.minimum(a, b), np.maximum(a, b)


def parts_for_frame(model: ValueModel, frame: Columns, *, rows: int, horizon_days: int) -> Parts:
    """The BTYD parts of ``rows`` rows of features (a DataFrame or column name -> values): precomputed ones
    (:data:`PART_COLUMNS`) as they are, else from the exact purchase summary (:data:`INPUT_COLUMNS`),
    else approximated from the features (:func:`inputs_from_features`)."""
    if all(c in frame for c in PART_COLUMNS):
        return {c: numeric(frame[c]) for c in PART_COLUMNS}
    if all(c in frame for c in INPUT_COLUMNS):
        inputs = {c: numeric(frame[c]) for c in INPUT_COLUMNS}
    else:
        inputs = inputs_from_features(frame, rows, model.economics)
    costs = ServeCosts(cost_per_year(frame, rows, model.economics), _spend_so_far(frame, rows))
    return value_parts(model, inputs, costs, horizon_days=horizon_days)


def records_columns(records: list[dict[str, object]]) -> dict[str, np.ndarray]:
    """The columns the value reads, from a few records (the API path): no DataFrame is built."""
    present = {name for record in records for name in record}
    wanted = (*FEATURE_INPUTS, *INPUT_COLUMNS, *PART_COLUMNS)
    return {name: numeric([record.get(name) for record in records]) for name in wanted if name in present}


def _spend_so_far(frame: Columns, rows: int) -> np.ndarray:
    return numeric(frame["spend_total"]) if "spend_total" in frame else np.full(rows, np.nan)


def attach_parts(
    model: ValueModel,
    features: pd.DataFrame,
    transactions: pd.DataFrame,
    as_of: pd.Timestamp,
    *,
    horizon_days: int,
) -> pd.DataFrame:
    """``features`` with each customer's BTYD parts from the exact purchase summary at ``as_of`` (batch
    scoring and training: one BTYD computation for all customers, read chunk by chunk later)."""
    rows = len(features)
    inputs = value_inputs(transactions, as_of, features["customer_id"], model.economics)
    costs = ServeCosts(cost_per_year(features, rows, model.economics), _spend_so_far(features, rows))
    parts = value_parts(model, inputs, costs, horizon_days=horizon_days)
    return pd.concat(
        [
            features.drop(columns=list(PART_COLUMNS), errors="ignore"),
            pd.DataFrame(parts, index=features.index),
        ],
        axis=1,
    )


def revenue_field(horizon_days: int) -> str:
    """The name of the LightGBM spend forecast, horizon included so no one mistakes it for lifetime value."""
    return f"expected_revenue_{horizon_days}d"


def btyd_horizon_revenue(model: ValueModel, inputs: pd.DataFrame, horizon_days: int) -> np.ndarray:
    """BTYD's undiscounted expected revenue over the horizon (to compare with LightGBM's on a holdout)."""
    summary = pd.DataFrame(
        {
            "frequency": inputs["value_frequency"].to_numpy(float),
            "recency": inputs["value_recency"].to_numpy(float),
            "T": inputs["value_T"].to_numpy(float),
            "monetary_value": inputs["value_monetary"].to_numpy(float),
        }
    )
    summary.attrs["unit_days"] = model.purchases.unit_days_
    x, m = summary["frequency"].to_numpy(), summary["monetary_value"].to_numpy()
    per_order = model.order_value(x, m) / np.maximum(model.spend.expected_order_value(x, m), 1e-12)
    value = expected_value(
        model.purchases, model.spend, summary, horizon_days=horizon_days, annual_discount_rate=0.0
    )
    return value.to_numpy() * per_order
