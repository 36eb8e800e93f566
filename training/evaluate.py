"""Evaluation metrics for churn probability, the revenue forecast over the horizon (``revenue_*``: spend
expected over the horizon, not lifetime value), the value model's purchase probabilities and the business
value of acting on the ranking.

Calibration is binned in one place, :func:`reliability_table`; the ECE, the reliability plot, BG/NBD's
purchase calibration and the notebooks all read it, so "bin 3" means the same customers everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from training.config import BusinessConfig


def _equal_count_bins(p: np.ndarray, bins: int) -> list[np.ndarray]:
    """Positions of ``p`` in ``bins`` equal-count bins, lowest predictions first (stable for ties)."""
    return [chunk for chunk in np.array_split(np.argsort(p, kind="stable"), bins) if len(chunk)]


def reliability_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Calibration by bin of predicted probability: ``bin, mean_predicted, observed, count``.

    Bins are **equal-count** (quantile) bins of the ranked predictions, not equal-width ones: every bin
    holds about ``len(p) / bins`` customers, so no bin's observed rate rests on a handful of customers
    when predictions crowd into one part of [0, 1]. Ties are split by a stable sort, so the table is
    reproducible. Empty bins (fewer customers than bins) are left out."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    rows = [
        {
            "bin": i + 1,
            "mean_predicted": float(p[chunk].mean()),
            "observed": float(y[chunk].mean()),
            "count": len(chunk),
        }
        for i, chunk in enumerate(_equal_count_bins(p, bins))
    ]
    return pd.DataFrame(rows, columns=["bin", "mean_predicted", "observed", "count"])


def _table_ece(table: pd.DataFrame) -> float:
    if table.empty:
        return float("nan")
    gap = (table["observed"] - table["mean_predicted"]).abs()
    return float((gap * table["count"]).sum() / table["count"].sum())


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - mean predicted| over the bins of :func:`reliability_table`, weighted by count."""
    return _table_ece(reliability_table(y, p, bins))


@dataclass(frozen=True)
class PurchaseCalibration:
    """BG/NBD's probability that a customer buys at least once within the horizon, against who did.

    P(alive) itself is never observed: a customer who is alive but buys slowly may not buy within the
    horizon, so the share of "P(alive) = 80%" customers who bought is not meant to be 80%. What BG/NBD does
    promise is its own probability of at least one purchase in ``[cutoff, cutoff + H)``, P(alive) x (1 -
    P(no purchase in H | alive)) (the value part ``value_btyd_keeps``), and the window's orders check that:
    a customer bought when they placed at least one order in it (a return is no purchase; a cancellation
    does not undo an order). ``table`` is :func:`reliability_table` of those (the same equal-count bins)
    with each bin's mean P(alive) beside it, which lies above the bin's predicted purchase probability."""

    horizon_days: int
    table: pd.DataFrame  # bin, mean_predicted, observed, count, mean_p_alive
    ece: float
    mean_predicted: float
    observed: float
    mean_p_alive: float
    customers: int

    def metrics(self) -> dict[str, float]:
        """As MLflow metrics: ``btyd_bgnbd.p_purchase_<H>d.{ece,mean_predicted,observed,customers}`` and
        ``btyd_bgnbd.p_alive.mean`` (next to the ``churn.btyd_bgnbd.*`` and ``revenue.btyd_*`` tables)."""
        name = f"btyd_bgnbd.p_purchase_{self.horizon_days}d"
        return {
            f"{name}.ece": self.ece,
            f"{name}.mean_predicted": self.mean_predicted,
            f"{name}.observed": self.observed,
            f"{name}.customers": float(self.customers),
            "btyd_bgnbd.p_alive.mean": self.mean_p_alive,
        }


def purchase_calibration(
    p_purchase: np.ndarray,
    p_alive: np.ndarray,
    purchased: np.ndarray,
    *,
    horizon_days: int,
    bins: int = 10,
) -> PurchaseCalibration | None:
    """:class:`PurchaseCalibration` of BG/NBD's P(at least one purchase within the horizon) ``p_purchase``
    against ``purchased`` (bought within it), per customer; customers without a prediction are left out,
    and None is returned when none has one (no value model, or no purchase summary)."""
    p, alive = np.asarray(p_purchase, dtype=float), np.asarray(p_alive, dtype=float)
    known = np.isfinite(p) & np.isfinite(alive)
    if not known.any():
        return None
    p, alive, bought = p[known], alive[known], np.asarray(purchased, dtype=bool)[known].astype(float)
    table = reliability_table(bought, p, bins)
    table["mean_p_alive"] = [float(alive[chunk].mean()) for chunk in _equal_count_bins(p, bins)]
    return PurchaseCalibration(
        horizon_days=horizon_days,
        table=table,
        ece=_table_ece(table),
        mean_predicted=float(p.mean()),
        observed=float(bought.mean()),
        mean_p_alive=float(alive.mean()),
        customers=int(known.sum()),
    )


PURCHASE_COLUMNS = ("value_btyd_keeps", "value_p_alive", "future_orders")


def purchase_calibration_of(
    frame: pd.DataFrame, horizon_days: int, bins: int = 10
) -> PurchaseCalibration | None:
    """:func:`purchase_calibration` of a labelled frame carrying the value parts (``value_btyd_keeps``,
    ``value_p_alive``: :func:`features.value.attach_parts`) and the orders placed within the horizon
    (``future_orders``: :func:`features.engine.compute_labels`); None when any of them is missing."""
    if any(c not in frame.columns for c in PURCHASE_COLUMNS):
        return None
    orders = pd.to_numeric(frame["future_orders"], errors="coerce").fillna(0).to_numpy(float)
    return purchase_calibration(
        frame["value_btyd_keeps"].to_numpy(float),
        frame["value_p_alive"].to_numpy(float),
        orders > 0,
        horizon_days=horizon_days,
        bins=bins,
    )


def gains_table(y: np.ndarray, score: np.ndarray, points: int = 100) -> pd.DataFrame:
    """Cumulative gains of one ranking: ``contacted_share, churners_reached``, ``points`` steps plus the origin.

    Customers are contacted highest score first (ties in a stable order); ``churners_reached`` is the share
    of all churners among those contacted."""
    y = np.asarray(y, dtype=float)
    n, total = len(y), max(float(y.sum()), 1.0)
    shares = np.linspace(0, 1, points + 1)
    cum = np.concatenate([[0.0], np.cumsum(y[np.argsort(-np.asarray(score), kind="stable")])])
    reached = cum[np.round(shares * n).astype(int)] / total
    return pd.DataFrame({"contacted_share": shares, "churners_reached": reached})


def _top(scores: np.ndarray, share: float) -> np.ndarray:
    k = max(1, round(len(scores) * share))
    return np.argsort(-scores, kind="stable")[:k]


def _clipped(score: Callable[..., Any]) -> Callable[[np.ndarray, np.ndarray], float]:
    def judged(y: np.ndarray, p: np.ndarray) -> float:
        return float(score(np.asarray(y, dtype=int), np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)))

    return judged


# The promotion metrics alone, as churn_metrics computes them (for resampling, where the rest would cost).
METRIC_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "roc_auc": _clipped(roc_auc_score),
    "pr_auc": _clipped(average_precision_score),
    "brier": _clipped(brier_score_loss),
    "log_loss": _clipped(lambda y, p: log_loss(y, p, labels=[0, 1])),
}


def churn_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    y = np.asarray(y, dtype=int)
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    top = _top(p, 0.1)
    base_rate = float(y.mean())
    return {
        **{name: judged(y, p) for name, judged in METRIC_FUNCTIONS.items()},
        "ece": expected_calibration_error(y, p),
        "top_decile_lift": float(y[top].mean() / base_rate) if base_rate > 0 else float("nan"),
        "top_decile_capture": float(y[top].sum() / max(y.sum(), 1)),
        "churn_rate": base_rate,
    }


def normalized_gini(actual: np.ndarray, predicted: np.ndarray) -> float:
    def gini(a: np.ndarray, s: np.ndarray) -> float:
        order = np.argsort(-s, kind="stable")
        cum = np.cumsum(a[order]) / max(a.sum(), 1e-12)
        return float(cum.sum() / len(a) - (len(a) + 1) / (2 * len(a)))

    best = gini(actual, actual)
    return gini(actual, predicted) / best if best else float("nan")


def revenue_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    actual = np.asarray(actual, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    top = _top(predicted, 0.1)
    rho = spearmanr(actual, predicted).statistic if np.std(predicted) > 0 else 0.0
    return {
        "mae": float(np.mean(np.abs(actual - predicted))),
        "rmse": float(np.sqrt(np.mean((actual - predicted) ** 2))),
        "spearman": float(rho),
        "gini": normalized_gini(actual, predicted),
        "top_decile_spend_capture": float(actual[top].sum() / max(actual.sum(), 1e-12)),
        "predicted_to_actual": float(predicted.sum() / max(actual.sum(), 1e-12)),
    }


def revenue_by_decile(actual: np.ndarray, predicted: np.ndarray) -> pd.DataFrame:
    """Mean predicted and actual spend per decile of the revenue forecast (decile 10 = highest), and their
    ratio: the forecast's calibration by decile."""
    frame = pd.DataFrame({"actual": actual, "predicted": predicted})
    frame["decile"] = pd.qcut(frame["predicted"].rank(method="first"), 10, labels=range(1, 11)).astype(int)
    out = (
        frame.groupby("decile")
        .agg(predicted=("predicted", "mean"), actual=("actual", "mean"), customers=("actual", "size"))
        .reset_index()
    )
    out["predicted_to_actual"] = out["predicted"] / out["actual"].where(out["actual"] > 0)
    return out


def business_value(
    churned: np.ndarray,
    p: np.ndarray,
    revenue: np.ndarray,
    *,
    spend_if_kept: np.ndarray,
    policy: BusinessConfig,
    seed: int = 0,
) -> dict[str, float]:
    """Net value of contacting the top ``policy.top_share`` of customers under three rankings: by value
    at risk (``p * revenue``, the revenue forecast), by churn probability ``p``, and at random.

    Saved value is counted only for customers who really churned, at ``spend_if_kept`` (what the campaign
    would keep over the horizon), times the assumed success rate, less the contact cost."""
    churned = np.asarray(churned, dtype=bool)
    saved_if_contacted = churned * policy.success_rate * np.asarray(spend_if_kept, dtype=float)
    rng = np.random.default_rng(seed)
    rankings = {"by_value_at_risk": p * revenue, "by_churn_probability": p, "random": rng.random(len(p))}
    out: dict[str, float] = {}
    for name, score in rankings.items():
        top = _top(score, policy.top_share)
        out[f"net_value_{name}"] = float(saved_if_contacted[top].sum() - policy.contact_cost * len(top))
    out["contacted"] = float(len(_top(p, policy.top_share)))
    return out


@dataclass(frozen=True)
class Backtest:
    """A rolling-origin backtest (see ``training.backtest``): per-origin metrics and reliability."""

    # one row per origin: origin, customers, churn_rate, roc_auc, ..., ece, revenue_total_ratio, ...
    table: pd.DataFrame
    reliability: dict[str, pd.DataFrame]  # origin (ISO date) -> reliability_table at that origin


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """Everything the out-of-time evaluation produced, for the artifacts, MLflow and the promotion.

    ``churn_scores`` and ``revenue_scores`` map model names to per-customer scores on ``frame`` (the candidate
    is ``"churnguard"`` in both); the tables hold the same models' metrics."""

    frame: pd.DataFrame  # the validation snapshot: features, churned, future_spend
    x: pd.DataFrame  # its model input
    y: np.ndarray  # churned (0/1)
    spend: np.ndarray  # actual spend over the horizon
    churn_scores: dict[str, np.ndarray]
    revenue_scores: dict[str, np.ndarray]
    churn_table: pd.DataFrame
    revenue_table: pd.DataFrame
    business: dict[str, float]
    deciles: pd.DataFrame  # revenue_by_decile of the candidate
    backtest: Backtest | None = None
    warnings: tuple[str, ...] = ()  # what a user must know before trusting the model (card, /ready)
    holdout: np.ndarray | None = None  # customers never fitted by any run: the champion comparison's rows
    purchase_calibration: PurchaseCalibration | None = None  # BG/NBD's P(purchase within H) vs who bought

    def headline(self, model: str = "churnguard") -> dict[str, float]:
        """The model's churn and revenue forecast metrics as flat ``churn_*`` / ``revenue_*`` keys."""
        churn = self.churn_table.set_index("model").loc[model]
        revenue = self.revenue_table.set_index("model")
        out = {f"churn_{k}": float(v) for k, v in churn.items()}
        if model in revenue.index:
            out.update({f"revenue_{k}": float(v) for k, v in revenue.loc[model].items()})
        return out
