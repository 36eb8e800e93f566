"""The files a run logs next to its model: plots, tables, the model card and the bundle itself."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.bundle import ModelBundle
from training import plots
from training.card import model_card
from training.evaluate import Evaluation
from training.run import RunContext

SHAP_SAMPLE = 3000  # customers explained for the SHAP plots: enough for a stable beeswarm


def write_artifacts(
    folder: Path,
    bundle: ModelBundle,
    *,
    evaluation: Evaluation,
    context: RunContext,
    size_table: pd.DataFrame,
) -> None:
    """Write ``plots/``, ``tables/``, ``model_card.md`` and ``bundle/`` into ``folder`` (which must exist)."""
    plot_dir = folder / "plots"
    plot_dir.mkdir()
    y, scores = evaluation.y, evaluation.churn_scores
    plots.roc_plot(y, scores, plot_dir)
    plots.pr_plot(y, scores, plot_dir)
    plots.reliability_plot(y, scores["churnguard"], plot_dir)
    plots.gains_plot(y, scores, plot_dir)
    plots.revenue_decile_plot(evaluation.deciles, plot_dir)
    sample = evaluation.x.sample(n=min(len(evaluation.x), SHAP_SAMPLE), random_state=context.cfg.seed)
    plots.shap_plots(bundle.contributions(bundle.matrix(sample)), sample, plot_dir)
    if evaluation.backtest is not None:
        plots.backtest_reliability_plots(evaluation.backtest.reliability, plot_dir / "backtest")
    tables = folder / "tables"
    tables.mkdir()
    evaluation.churn_table.to_csv(tables / "churn_metrics.csv", index=False)
    evaluation.revenue_table.to_csv(tables / "revenue_metrics.csv", index=False)
    evaluation.deciles.to_csv(tables / "revenue_deciles.csv", index=False)
    size_table.to_csv(tables / "model_size.csv", index=False)
    if evaluation.backtest is not None:
        evaluation.backtest.table.to_csv(tables / "backtest.csv", index=False)
    samples = (bundle.metadata.get("uplift") or {}).get("samples") or {}
    if samples:  # customers per action received, in the campaigns learned from and those gated on
        pd.DataFrame(samples).fillna(0).astype(int).rename_axis("action").to_csv(
            tables / "uplift_samples.csv"
        )
    card = model_card(bundle=bundle, evaluation=evaluation, context=context, size_table=size_table)
    (folder / "model_card.md").write_text(card)
    bundle.save(folder / "bundle")
