"""The model card: what a reviewer needs to trust (or distrust) a registered version."""

from __future__ import annotations

from typing import Any

import pandas as pd

from features.bundle import FeatureInfo


def _table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def model_card(
    *,
    name: str,
    horizon_days: int,
    fingerprint: dict[str, Any],
    cutoffs: dict[str, Any],
    features: list[FeatureInfo],
    churn_table: pd.DataFrame,
    clv_table: pd.DataFrame,
    business: dict[str, float],
    size_table: pd.DataFrame,
    calibration: str,
) -> str:
    rows = fingerprint["rows"]
    feature_rows = pd.DataFrame(
        [
            {
                "feature": f.name,
                "meaning": f.description,
                "group": f.group,
                "typical (stayed)": f.typical if f.typical is not None else "-",
            }
            for f in features
        ]
    )
    files = "\n".join(
        f"- `{k}`: {v['path']} (sha256 {v['sha256'][:16]}…)" for k, v in fingerprint["files"].items()
    )
    return f"""# Model card: {name}

Predicts, for every customer known at a cutoff, the probability of churning (no purchase, or a
cancellation) in the next **{horizon_days} days**, the spend expected over those days (CLV), and why.

## Data
{files}

Rows: {rows}. Events from {fingerprint["first_date"]} to {fingerprint["last_date"]}.
Training cutoffs: {", ".join(cutoffs["train"])}; validation cutoff (out of time): {cutoffs["validation"]}.

## Churn model vs baselines (validation cutoff)
{_table(churn_table)}

Calibration: {calibration}. Model size chosen for accuracy per unit of explanation cost:

{_table(size_table)}

## CLV model vs baseline (validation cutoff)
{_table(clv_table)}

## Business view (contact top {business.get("contacted", 0):,.0f} customers)
{_table(pd.DataFrame([{k: v for k, v in business.items() if k.startswith("net_value")}]))}

## Features
{_table(feature_rows)}

## Known limits
- Customer attributes are taken as they are now, not as they were at each cutoff.
- CLV is spend (revenue) over the horizon, not margin: weigh it with your own margins.
- "Churn" for non-contract customers means no purchase within the horizon; seasonal buyers with longer
  natural gaps can look at risk when they are not.
- Evaluated on one out-of-time cutoff; expect drift as customer behaviour changes: retrain regularly.
"""
