"""The model card: what a reviewer needs to trust (or distrust) a registered version."""

from __future__ import annotations

import pandas as pd

from features.bundle import ModelBundle
from training.evaluate import Evaluation
from training.run import RunContext


def _table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def _warnings(warnings: list[str]) -> str:
    if not warnings:
        return ""
    lines = "\n".join(f"> - {w}" for w in warnings)
    return f"\n> **WARNING: read before use**\n>\n{lines}\n"


def _backtest(evaluation: Evaluation) -> str:
    if evaluation.backtest is None:
        return ""
    return (
        "\n## Rolling-origin backtest\nEach origin: fitted on the cutoffs whose outcomes were known by then, "
        "calibrated on the newest of them, evaluated at the origin.\n\n"
        f"{_table(evaluation.backtest.table)}\n"
    )


def _value_section(bundle: ModelBundle) -> str:
    model = bundle.value_model
    if model is None:
        return "\nNo lifetime value model: `clv` and `value_at_risk` are null (see the warnings).\n"
    m = model.method
    return f"""
## Lifetime value: what each part does
- **LightGBM** gives the churn probability p and the spend within the {bundle.horizon_days}-day horizon,
  where its features (service, trends, discounts) know most.
- **BG/NBD + Gamma-Gamma** ({m.get("purchases")}; {m.get("spend")}), fitted on the purchase summary at
  {m.get("fitted_at")} ({m.get("customers")} customers, {m.get("repeat_customers")} with repeat purchases),
  extrapolate beyond the horizon: discounted expected purchases x expected order value over two years; later
  years shrink by each customer's year-two-to-year-one ratio.
- `residual_value` = LightGBM's horizon spend (discounted, x margin, less cost to serve) + BTYD's value beyond
  the horizon x (1 - p) / BTYD's own P(purchase in the horizon), the ratio clipped to [0, 3]: the ML model's
  view of whether the customer stays moves the long-run value.
- `value_at_risk` = p x BTYD's residual value for a customer known to be alive (value if retained).
- Basis: **{model.basis}**, discounted at {model.annual_discount_rate:.0%} a year. Customers whose residual
  value is <= 0 are a graceful exit: never a paid action.
- Interval: {m.get("interval")} (parameter uncertainty only). Customers without a repeat purchase get the
  mean observed repeat order value ({m.get("prior_order_value", 0):,.2f}), not Gamma-Gamma's population
  mean, which heavy-tailed order values inflate.
"""


def _actions_section(meta: dict) -> str:
    """Which policy decides the retention action, why, and the gate's figures."""
    uplift = meta.get("uplift")
    if not uplift:
        return ""
    lines = [
        "\n## Retention actions: learned effects or the playbook's priors",
        f"Actions are decided by **{uplift['decided_by']}**: {uplift['reason']}.",
    ]
    gate = uplift.get("gate")
    if gate:
        lines.append(
            "\nPolicy gate (doubly robust value per customer on the newest campaigns' randomised log, "
            "learned policy - playbook, 95% paired interval; the lower bound must be above zero and every "
            f"action it picks needs enough customers): gain {gate['gain_per_customer']:+,.2f} "
            f"[{gate['low']:+,.2f}, {gate['high']:+,.2f}]; {gate['reason']}."
        )
    campaigns = uplift.get("campaigns") or {}
    if campaigns:
        lines.append(
            f"\nLearned from campaigns {', '.join(campaigns.get('fit', [])) or '-'}; judged on "
            f"{', '.join(campaigns.get('gate', [])) or '-'}."
        )
    samples = uplift.get("samples") or {}
    if samples:
        actions = sorted(set(samples.get("fit", {})) | set(samples.get("gate", {})))
        frame = pd.DataFrame(
            [
                {
                    "action received": a,
                    "customers (learning)": samples.get("fit", {}).get(a, 0),
                    "customers (gate)": samples.get("gate", {}).get(a, 0),
                }
                for a in actions
            ]
        )
        lines.append("\n" + _table(frame))
    for action, why in (uplift.get("skipped") or {}).items():
        lines.append(f"- {action}: {why}")
    if uplift.get("used"):
        lines.append(
            "\nEach customer's action is the one with the largest estimated incremental retention x value if "
            "retained - cost (no action always possible); customers every action is estimated to push away "
            "are marked do-not-contact and never get a paid action."
        )
    return "\n".join(lines) + "\n"


def model_card(
    *, bundle: ModelBundle, evaluation: Evaluation, context: RunContext, size_table: pd.DataFrame
) -> str:
    fingerprint, cutoffs, meta = context.fingerprint, context.cutoffs, bundle.metadata
    rows = fingerprint["rows"]
    feature_rows = pd.DataFrame(
        [
            {
                "feature": f.name,
                "meaning": f.description,
                "group": f.group,
                "typical (stayed)": f.typical if f.typical is not None else "-",
            }
            for f in bundle.features
        ]
    )
    files = "\n".join(
        f"- `{k}`: {v['path']} (sha256 {v['sha256'][:16]}…)" for k, v in fingerprint["files"].items()
    )
    business = evaluation.business
    refit = meta.get("refit", {})
    refit_line = (
        f"\nThe deployed model was then refitted through the newest labelled cutoff: {refit['summary']}.\n"
        if refit
        else ""
    )
    return f"""# Model card: {context.settings.model_name}
{_warnings(list(meta.get("warnings", [])))}
Predicts, for every customer known at a cutoff, the probability of churning (no purchase, or a
cancellation) in the next **{bundle.horizon_days} days**, the spend expected over those days
(`expected_revenue_{bundle.horizon_days}d`), the customer's lifetime value (`clv`), and why.
{_value_section(bundle)}{_actions_section(meta)}
## Data
{files}

Rows: {rows}. Events from {fingerprint["first_date"]} to {fingerprint["last_date"]}.
Training cutoffs: {", ".join(cutoffs["train"])}; validation cutoff (out of time): {cutoffs["validation"]}.
{refit_line}
## Churn model vs baselines (validation cutoff)
{_table(evaluation.churn_table)}

Calibration: {bundle.calibration.method}. Model size chosen for accuracy per unit of explanation cost:

{_table(size_table)}
{_backtest(evaluation)}
## Spend over the horizon: LightGBM vs BG/NBD + Gamma-Gamma vs run rate (validation cutoff)
{_table(evaluation.revenue_table)}

Revenue forecast calibration by decile of the forecast:

{_table(evaluation.deciles)}

## Business view (contact top {business.get("contacted", 0):,.0f} customers)
{_table(pd.DataFrame([{k: v for k, v in business.items() if k.startswith("net_value")}]))}

## Features
{_table(feature_rows)}

## Known limits
- Customer attributes are taken as they are now, not as they were at each cutoff.
- `expected_revenue_{bundle.horizon_days}d` is revenue over the horizon; lifetime value (`clv`) is
  contribution only when training was given an economics config (see "Lifetime value").
- "Churn" for non-contract customers means no purchase within the horizon; seasonal buyers with longer
  natural gaps can look at risk when they are not.
- Expect drift as customer behaviour changes: retrain regularly.
"""
