"""The short evaluation table printed at the end of ``churnguard train``."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from features.settings import ChurnguardSettings


def print_result(console: Console, result: Any, settings: ChurnguardSettings) -> None:
    churn = result.churn_table
    table = Table(title="Churn, out-of-time validation")
    columns = ["roc_auc", "pr_auc", "brier", "log_loss", "ece", "top_decile_lift", "top_decile_capture"]
    table.add_column("model")
    for c in columns:
        table.add_column(c, justify="right")
    for row in churn.to_dict("records"):
        table.add_row(row["model"], *(f"{row[c]:.4f}" for c in columns))
    console.print(table)
    revenue = result.revenue_table
    table = Table(title="Revenue forecast over the horizon (undiscounted; not lifetime value)")
    columns = ["mae", "rmse", "spearman", "gini", "top_decile_spend_capture", "predicted_to_actual"]
    table.add_column("model")
    for c in columns:
        table.add_column(c, justify="right")
    for row in revenue.to_dict("records"):
        table.add_row(row["model"], *(f"{row[c]:,.3f}" for c in columns))
    console.print(table)
    print_purchase_calibration(console, getattr(result, "purchase_calibration", None))
    business = result.business
    console.print(
        f"Contacting the top {business['contacted']:,.0f}: net value by value at risk "
        f"{business['net_value_by_value_at_risk']:,.0f}, by churn probability "
        f"{business['net_value_by_churn_probability']:,.0f}, at random {business['net_value_random']:,.0f}"
    )
    console.print(
        f"registered [bold]{settings.model_name}[/] version {result.version} "
        f"(run {result.run_id}); {result.promotion_reason}"
    )
    uplift = getattr(result, "uplift", "")
    if uplift and uplift not in getattr(result, "warnings", []):  # which policy decides actions, and why
        console.print(f"actions: {uplift}")
    for warning in getattr(result, "warnings", []):
        console.print(f"[bold red]WARNING[/] {warning}")
    console.print(f"MLflow UI: mlflow ui --backend-store-uri {settings.resolved_tracking_uri()}")


def print_purchase_calibration(console: Console, calibration: Any) -> None:
    """BG/NBD's probability of a purchase within the horizon against who bought, by equal-count bin."""
    if calibration is None:
        return
    table = Table(
        title=f"P(alive) check: BG/NBD's P(a purchase within {calibration.horizon_days} days) vs who bought"
    )
    for column in ("bin", "customers", "mean P(alive)", "predicted", "observed"):
        table.add_column(column, justify="right")
    for row in calibration.table.to_dict("records"):
        table.add_row(
            str(row["bin"]),
            f"{row['count']:,}",
            f"{row['mean_p_alive']:.3f}",
            f"{row['mean_predicted']:.3f}",
            f"{row['observed']:.3f}",
        )
    console.print(table)
    console.print(
        f"P(purchase within {calibration.horizon_days} days): ECE {calibration.ece:.4f}, mean predicted "
        f"{calibration.mean_predicted:.3f} vs observed {calibration.observed:.3f} on {calibration.customers:,} "
        "customers (P(alive) itself is not a purchase probability: alive customers need not buy in the horizon)"
    )
