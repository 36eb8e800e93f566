"""Evaluation metrics for churn probability, CLV and the business value of acting on the ranking.

Calibration is binned in one place, :func:`reliability_table`; the ECE, the reliability plot and the
notebooks all read it, so "bin 3" means the same customers everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from training.config import BusinessConfig


def reliability_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Calibration by bin of predicted probability: ``bin, mean_predicted, observed, count``.

    Bins are **equal-count** (quantile) bins of the ranked predictions, not equal-width ones: every bin
    holds about ``len(p) / bins`` customers, so no bin's observed rate rests on a handful of customers
    when predictions crowd into one part of [0, 1]. Ties are split by a stable sort, so the table is
    reproducible. Empty bins (fewer customers than bins) are left out."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    order = np.argsort(p, kind="stable")
    rows = [
        {
            "bin": i + 1,
            "mean_predicted": float(p[chunk].mean()),
            "observed": float(y[chunk].mean()),
            "count": len(chunk),
        }
        for i, chunk in enumerate(np.array_split(order, bins))
        if len(chunk)
    ]
    return pd.DataFrame(rows, columns=["bin", "mean_predicted", "observed", "count"])


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - mean predicted| over the bins of :func:`reliability_table`, weighted by count."""
    table = reliability_table(y, p, bins)
    if table.empty:
        return float("nan")
    gap = (table["observed"] - table["mean_predicted"]).abs()
    return float((gap * table["count"]).sum() / table["count"].sum())


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


def churn_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    y = np.asarray(y, dtype=int)
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    top = _top(p, 0.1)
    base_rate = float(y.mean())
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
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


def clv_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
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


def clv_by_decile(actual: np.ndarray, predicted: np.ndarray) -> pd.DataFrame:
    """Mean predicted and actual spend per decile of predicted CLV (decile 10 = highest), and their ratio:
    the CLV calibration by decile."""
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
    clv: np.ndarray,
    *,
    spend_if_kept: np.ndarray,
    policy: BusinessConfig,
    seed: int = 0,
) -> dict[str, float]:
    """Net value of contacting the top ``policy.top_share`` of customers under three rankings: by value
    at risk (``p * clv``), by churn probability ``p``, and at random.

    Saved value is counted only for customers who really churned, at ``spend_if_kept`` (what the campaign
    would keep over the horizon), times the assumed success rate, less the contact cost."""
    churned = np.asarray(churned, dtype=bool)
    saved_if_contacted = churned * policy.success_rate * np.asarray(spend_if_kept, dtype=float)
    rng = np.random.default_rng(seed)
    rankings = {"by_value_at_risk": p * clv, "by_churn_probability": p, "random": rng.random(len(p))}
    out: dict[str, float] = {}
    for name, score in rankings.items():
        top = _top(score, policy.top_share)
        out[f"net_value_{name}"] = float(saved_if_contacted[top].sum() - policy.contact_cost * len(top))
    out["contacted"] = float(len(_top(p, policy.top_share)))
    return out


@dataclass(frozen=True)
class Backtest:
    """A rolling-origin backtest (see ``training.backtest``): per-origin metrics and reliability."""

    table: pd.DataFrame  # one row per origin: origin, customers, churn_rate, roc_auc, ..., ece, clv ratio
    reliability: dict[str, pd.DataFrame]  # origin (ISO date) -> reliability_table at that origin


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """Everything the out-of-time evaluation produced, for the artifacts, MLflow and the promotion.

    ``churn_scores`` and ``clv_scores`` map model names to per-customer scores on ``frame`` (the candidate
    is ``"churnguard"`` in both); the tables hold the same models' metrics."""

    frame: pd.DataFrame  # the validation snapshot: features, churned, future_spend
    x: pd.DataFrame  # its model input
    y: np.ndarray  # churned (0/1)
    spend: np.ndarray  # actual spend over the horizon
    churn_scores: dict[str, np.ndarray]
    clv_scores: dict[str, np.ndarray]
    churn_table: pd.DataFrame
    clv_table: pd.DataFrame
    business: dict[str, float]
    deciles: pd.DataFrame  # clv_by_decile of the candidate
    backtest: Backtest | None = None
    warnings: tuple[str, ...] = ()  # what a user must know before trusting the model (card, /ready)
    holdout: np.ndarray | None = None  # customers never fitted by any run: the champion comparison's rows

    def headline(self, model: str = "churnguard") -> dict[str, float]:
        """The model's churn and CLV metrics as flat ``churn_*`` / ``clv_*`` keys."""
        churn = self.churn_table.set_index("model").loc[model]
        clv = self.clv_table.set_index("model")
        out = {f"churn_{k}": float(v) for k, v in churn.items()}
        if model in clv.index:
            out.update({f"clv_{k}": float(v) for k, v in clv.loc[model].items()})
        return out
