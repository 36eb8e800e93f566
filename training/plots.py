"""Evaluation plots logged with every run: figures a person would rather look at than read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve

from training.evaluate import gains_table, reliability_table

_STYLE: Any = {
    "figure.figsize": (6.4, 4.4),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "font.size": 10,
}


def _save(fig: plt.Figure, folder: Path, name: str) -> Path:
    path = folder / name
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def roc_plot(y: np.ndarray, scores: dict[str, np.ndarray], folder: Path) -> Path:
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots()
        for name, p in scores.items():
            fpr, tpr, _ = roc_curve(y, p)
            ax.plot(fpr, tpr, label=name)
        ax.plot([0, 1], [0, 1], ls=":", c="grey", label="chance")
        ax.set(
            xlabel="false positive rate", ylabel="true positive rate", title="ROC: churn model vs baselines"
        )
        ax.legend()
        return _save(fig, folder, "roc.png")


def pr_plot(y: np.ndarray, scores: dict[str, np.ndarray], folder: Path) -> Path:
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots()
        for name, p in scores.items():
            precision, recall, _ = precision_recall_curve(y, p)
            ax.plot(recall, precision, label=name)
        ax.axhline(float(np.mean(y)), ls=":", c="grey", label="churn rate")
        ax.set(xlabel="recall (share of churners found)", ylabel="precision", title="Precision-recall")
        ax.legend()
        return _save(fig, folder, "precision_recall.png")


def reliability_plot(y: np.ndarray, p: np.ndarray, folder: Path, bins: int = 10) -> Path:
    """Observed churn rate against mean predicted probability per equal-count bin
    (:func:`training.evaluate.reliability_table`)."""
    return _reliability(
        reliability_table(y, p, bins), folder / "reliability.png", "Reliability: does 30% mean 30%?"
    )


def _reliability(table: pd.DataFrame, path: Path, title: str) -> Path:
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1], ls=":", c="grey", label="perfect calibration")
        ax.plot(table["mean_predicted"], table["observed"], marker="o", label="calibrated churn model")
        ax.set(xlabel="predicted churn probability", ylabel="observed churn rate", title=title)
        ax.legend()
        return _save(fig, path.parent, path.name)


def backtest_reliability_plots(tables: dict[str, pd.DataFrame], folder: Path) -> list[Path]:
    """One reliability plot per backtest origin (``reliability_<origin>.png``)."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        _reliability(table, folder / f"reliability_{origin}.png", f"Reliability at backtest origin {origin}")
        for origin, table in tables.items()
    ]


def gains_plot(y: np.ndarray, scores: dict[str, np.ndarray], folder: Path) -> Path:
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots()
        for name, p in scores.items():
            gains = gains_table(y, p)
            ax.plot(gains["contacted_share"], gains["churners_reached"], label=name)
        ax.plot([0, 1], [0, 1], ls=":", c="grey", label="random")
        ax.set(
            xlabel="share of customers contacted (highest risk first)",
            ylabel="share of churners reached",
            title="Cumulative gains",
        )
        ax.legend()
        return _save(fig, folder, "cumulative_gains.png")


def revenue_decile_plot(deciles: pd.DataFrame, folder: Path) -> Path:
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots()
        width = 0.4
        ax.bar(deciles["decile"] - width / 2, deciles["predicted"], width, label="predicted")
        ax.bar(deciles["decile"] + width / 2, deciles["actual"], width, label="actual")
        ax.set(
            xlabel="decile of the revenue forecast (10 = highest)",
            ylabel="mean spend over the horizon",
            title="Revenue forecast: predicted vs actual by decile",
            xticks=list(range(1, 11)),
        )
        ax.legend()
        return _save(fig, folder, "revenue_deciles.png")


def shap_plots(contrib: np.ndarray, x: pd.DataFrame, folder: Path) -> list[Path]:
    """Beeswarm summary and mean |SHAP| importance of the churn model (log-odds units)."""
    import shap

    values = shap.Explanation(
        values=contrib[:, :-1],
        base_values=contrib[:, -1],
        data=x.apply(lambda c: c.cat.codes if hasattr(c, "cat") else c).to_numpy(float),
        feature_names=list(x.columns),
    )
    paths = []
    shap.plots.beeswarm(values, max_display=15, show=False)
    fig = plt.gcf()
    fig.suptitle("What drives churn risk (SHAP, log-odds)")
    paths.append(_save(fig, folder, "shap_summary.png"))
    importance = pd.Series(np.abs(contrib[:, :-1]).mean(axis=0), index=x.columns).nlargest(15)[::-1]
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(6.4, 5.2))
        ax.barh(importance.index, importance.to_numpy())
        ax.set(xlabel="mean |SHAP value| (log-odds)", title="Feature importance")
        paths.append(_save(fig, folder, "feature_importance.png"))
    return paths
