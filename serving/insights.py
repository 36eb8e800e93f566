"""Scored-customer summaries behind ``notebooks/02_model_report.ipynb`` (segments and actions, individual
explanations): the validation customers scored exactly as the API and batch scoring score them.

Scoring goes through the one scoring core (:class:`serving.scoring.Scorer`); everything else here only
groups and formats its output. The model arrives as anything holding a ``bundle`` and its registry ``info`` (a
:class:`features.model_store.LoadedModel`, or the champion the notebook loads), so serving stays free of
training. Functions return DataFrames and print nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import pandas as pd

from features.bundle import ModelBundle, ModelInfo
from serving.actions import Playbook, load_playbook
from serving.scoring import Scorer


class ScoredModel(Protocol):
    """A loaded model version: its bundle and what the registry says about it."""

    @property
    def bundle(self) -> ModelBundle: ...

    @property
    def info(self) -> ModelInfo: ...


def score_frame(
    model: ScoredModel, frame: pd.DataFrame, playbook: Playbook | None = None, top_k: int = 5
) -> pd.DataFrame:
    """Score ``frame`` exactly as the API would: probability, tier, lifetime value, segment, reasons and
    action.

    ``as_of`` is the frame's cutoff. ``playbook`` defaults to the shipped one."""
    as_of = str(pd.Timestamp(frame["cutoff"].iloc[0]).date()) if len(frame) else ""
    return Scorer(model.bundle, playbook or load_playbook(), model.info, top_k).score_frame(frame, as_of)


def _residual_value(scores: pd.DataFrame) -> pd.Series:
    """Each customer's discounted residual value (``clv.residual_value``; NaN without a value model)."""
    return scores["clv"].map(lambda v: v["residual_value"] if isinstance(v, dict) else v).astype(float)


def _action_columns(scores: pd.DataFrame) -> pd.DataFrame:
    actions = pd.DataFrame(scores["action"].tolist(), index=scores.index)
    return scores.assign(
        action_name=actions["name"],
        expected_net_value=actions["expected_net_value"],
        action_cost=actions["cost"],
        residual_value=_residual_value(scores),
    )


def segment_action_summary(scores: pd.DataFrame, outcomes: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per segment and recommended action: customers, share, mean risk and value, totals.

    ``outcomes`` (customer_id, churned), when known, adds the observed churn rate of each group: the
    check that the segments the model calls at risk really left more often."""
    frame = _action_columns(scores)
    if outcomes is not None:
        frame = frame.merge(outcomes[["customer_id", "churned"]], on="customer_id", how="left")
    aggregations: dict[str, Any] = {
        "customers": ("customer_id", "size"),
        "mean_churn_probability": ("churn_probability", "mean"),
        "mean_residual_value": ("residual_value", "mean"),
        "mean_expected_revenue_90d": ("expected_revenue_90d", "mean"),
        "value_at_risk": ("value_at_risk", "sum"),
        "expected_net_value": ("expected_net_value", "sum"),
        "campaign_cost": ("action_cost", "sum"),
    }
    if outcomes is not None:
        aggregations["observed_churn_rate"] = ("churned", lambda s: float(s.astype(float).mean()))
    out = frame.groupby(["segment", "action_name"]).agg(**aggregations).reset_index()
    out.insert(3, "share", out["customers"] / max(len(frame), 1))
    return out.rename(columns={"action_name": "action"}).sort_values(
        ["segment", "customers"], ascending=[True, False], kind="stable", ignore_index=True
    )


def risk_tier_summary(scores: pd.DataFrame, outcomes: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per risk tier (low, medium, high): customers, mean predicted and, if known, observed churn."""
    frame = (
        scores if outcomes is None else scores.merge(outcomes[["customer_id", "churned"]], on="customer_id")
    )
    aggregations: dict[str, Any] = {
        "customers": ("customer_id", "size"),
        "mean_churn_probability": ("churn_probability", "mean"),
        "value_at_risk": ("value_at_risk", "sum"),
    }
    if outcomes is not None:
        aggregations["observed_churn_rate"] = ("churned", lambda s: float(s.astype(float).mean()))
    out = frame.groupby("risk_tier").agg(**aggregations)
    return out.reindex([t for t in ("low", "medium", "high") if t in out.index]).reset_index()


def _score_of(scores: pd.DataFrame, customer_id: str) -> pd.Series:
    row = scores.loc[scores["customer_id"] == customer_id]
    if row.empty:
        raise KeyError(f"customer {customer_id} is not in the scores")
    return row.iloc[0]


def example_customers(scores: pd.DataFrame, n: int = 2) -> list[str]:
    """Customers worth explaining: the at-risk customer with the most value at risk, then the riskiest.

    Further picks alternate between the two orders. Deterministic (ties broken by customer id), no
    repeats; "at risk" means the medium or high tier (everyone, when nobody is at risk)."""
    at_risk = scores.loc[scores["risk_tier"] != "low"]
    pool = at_risk if len(at_risk) else scores
    by_value = pool.sort_values(["value_at_risk", "customer_id"], ascending=[False, True], kind="stable")
    by_risk = scores.sort_values(["churn_probability", "customer_id"], ascending=[False, True], kind="stable")
    chosen: list[str] = []
    for a, b in zip(by_value["customer_id"], by_risk["customer_id"], strict=False):
        for cid in (str(a), str(b)):
            if cid not in chosen and len(chosen) < n:
                chosen.append(cid)
        if len(chosen) >= n:
            break
    return chosen


def reasons_table(scores: pd.DataFrame, customer_id: str) -> pd.DataFrame:
    """One customer's reasons as a table: feature, value, typical, contribution, direction, sentence."""
    columns = ["feature", "value", "typical", "contribution", "direction", "sentence"]
    return pd.DataFrame(_score_of(scores, customer_id)["reasons"], columns=columns)


def customer_card(scores: pd.DataFrame, customer_id: str) -> pd.Series:
    """One customer's score in a few readable fields, including the recommended action and why."""
    row = _score_of(scores, customer_id)
    return pd.Series(
        {
            "customer_id": customer_id,
            "churn probability": f"{row['churn_probability']:.1%} ({row['risk_tier']} risk)",
            "expected revenue, next 90 days": f"{row['expected_revenue_90d']:,.2f}",
            "lifetime value (residual, discounted)": (
                "unknown" if not isinstance(row["clv"], dict) else f"{row['clv']['residual_value']:,.2f}"
            ),
            "value at risk": f"{row['value_at_risk']:,.2f}",
            "segment": row["segment"],
            "action": row["action"]["label"],
            "why": row["action"]["why"],
        }
    )


def rows_of(frame: pd.DataFrame, customer_ids: Sequence[str]) -> pd.DataFrame:
    """The rows of ``frame`` for ``customer_ids``, in that order."""
    indexed = frame.set_index("customer_id", drop=False)
    return indexed.loc[list(customer_ids)].reset_index(drop=True)
