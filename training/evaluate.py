"""Evaluation metrics for churn probability, CLV and the business value of acting on the ranking."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - mean predicted| over equal-count bins, weighted by bin size."""
    order = np.argsort(p, kind="stable")
    total = 0.0
    for chunk in np.array_split(order, bins):
        if len(chunk):
            total += len(chunk) * abs(float(y[chunk].mean()) - float(p[chunk].mean()))
    return total / len(y)


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
    """Mean predicted and actual spend per decile of predicted CLV (decile 10 = highest)."""
    frame = pd.DataFrame({"actual": actual, "predicted": predicted})
    frame["decile"] = pd.qcut(frame["predicted"].rank(method="first"), 10, labels=range(1, 11)).astype(int)
    return (
        frame.groupby("decile")
        .agg(predicted=("predicted", "mean"), actual=("actual", "mean"), customers=("actual", "size"))
        .reset_index()
    )


def business_value(
    churned: np.ndarray,
    future_spend_if_kept: np.ndarray,
    p: np.ndarray,
    clv: np.ndarray,
    contact_cost: float,
    success_rate: float,
    share: float,
    seed: int = 0,
) -> dict[str, float]:
    """Net value of contacting the top share of customers under three rankings.

    Saved value is counted only for customers who really churned, at their predicted value over the
    horizon (what the campaign would keep), times the assumed success rate, less the contact cost.
    """
    churned = np.asarray(churned, dtype=bool)
    saved_if_contacted = churned * success_rate * np.asarray(future_spend_if_kept, dtype=float)
    rng = np.random.default_rng(seed)
    rankings = {"by_value_at_risk": p * clv, "by_churn_probability": p, "random": rng.random(len(p))}
    out: dict[str, float] = {}
    for name, score in rankings.items():
        top = _top(score, share)
        out[f"net_value_{name}"] = float(saved_if_contacted[top].sum() - contact_cost * len(top))
    out["contacted"] = float(len(_top(p, share)))
    return out
