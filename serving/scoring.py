"""The one scoring core: features -> calibrated churn probability -> CLV -> value at risk -> reasons ->
action. Batch scoring and the API both end in :func:`score_matrix`; nothing here is duplicated."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.bundle import ModelBundle, ModelInfo, records_to_matrix
from serving.actions import Playbook, decide_actions
from serving.explain import top_reasons


def risk_tiers(probability: np.ndarray, thresholds: dict[str, float]) -> np.ndarray:
    return np.where(
        probability >= thresholds["high"],
        "high",
        np.where(probability >= thresholds["medium"], "medium", "low"),
    )


def segments(probability: np.ndarray, clv: np.ndarray, thresholds: dict[str, float]) -> np.ndarray:
    """A small named grid of value x risk."""
    valuable = clv >= thresholds["high_value"]
    at_risk = probability >= thresholds["medium"]
    return np.where(
        valuable,
        np.where(at_risk, "valuable, at risk", "valuable, loyal"),
        np.where(at_risk, "low value, at risk", "low value, loyal"),
    )


@dataclass(frozen=True)
class ModelOutputs:
    """What the two models say about a matrix: exact TreeSHAP of the churn model (its raw score is their
    sum) and the CLV. Computed in LightGBM's C code, which leaves the interpreter free meanwhile, so batch
    scoring computes the next chunk's outputs while it writes this chunk's reasons."""

    contributions: np.ndarray
    clv: np.ndarray


def model_outputs(bundle: ModelBundle, matrix: np.ndarray) -> ModelOutputs:
    return ModelOutputs(bundle.contributions(matrix), bundle.clv(matrix))


def score_matrix(
    bundle: ModelBundle,
    customer_ids: list[str],
    matrix: np.ndarray,
    playbook: Playbook,
    model: ModelInfo,
    as_of: str,
    top_k: int = 5,
    *,
    encoded: bool = False,
    outputs: ModelOutputs | None = None,
) -> dict[str, list[Any]]:
    """Score a model-input matrix; columns of the result are lists aligned with ``customer_ids``.

    Exact TreeSHAP is computed once: the raw score is the sum of the contributions, so the probability
    and its reasons always agree. ``encoded`` gives reasons, action and model as the JSON text a file or
    the store keeps (written once, never decoded), plus the flat action_name, expected_net_value and
    top_reason (the strongest reason's sentence) and the reasons' compact stored form, stored_reasons;
    otherwise they are dicts, as the API returns them. ``outputs`` are the matrix's model outputs when
    already computed."""
    outputs = outputs or model_outputs(bundle, matrix)
    contrib, clv = outputs.contributions, outputs.clv
    probability = bundle.probability(contrib.sum(axis=1))
    reasons = top_reasons(bundle, matrix, contrib, top_k)
    decisions = decide_actions(playbook, probability, clv, reasons.risk_groups)
    n = len(customer_ids)
    columns: dict[str, list[Any]] = {
        "customer_id": list(customer_ids),
        "as_of": [as_of] * n,
        "churn_probability": np.round(probability, 6).tolist(),
        "risk_tier": risk_tiers(probability, bundle.thresholds).tolist(),
        "clv": np.round(clv, 2).tolist(),
        "value_at_risk": np.round(probability * clv, 2).tolist(),
        "segment": segments(probability, clv, bundle.thresholds).tolist(),
    }
    if not encoded:
        return columns | {
            "reasons": reasons.as_dicts(),
            "action": decisions.as_dicts(),
            "model": [model.as_dict()] * n,
        }
    return columns | {
        "reasons": reasons.json,
        "action": decisions.json,
        "model": [json.dumps(model.as_dict(), default=str)] * n,
        "action_name": decisions.name,
        "expected_net_value": decisions.expected_net_value,
        "top_reason": reasons.first_sentence,
        "stored_reasons": reasons.stored,
    }


def score_features(
    bundle: ModelBundle,
    frame: pd.DataFrame,
    playbook: Playbook,
    model: ModelInfo,
    as_of: str,
    top_k: int = 5,
    *,
    encoded: bool = False,
    matrix: np.ndarray | None = None,
    outputs: ModelOutputs | None = None,
) -> pd.DataFrame:
    """Score rows of feature values (with a ``customer_id`` column) into a DataFrame of scores.

    ``matrix`` (the frame's model input) and ``outputs`` (its model outputs) may be passed when known."""
    ids = frame["customer_id"].astype(str).tolist()
    matrix = bundle.matrix(frame) if matrix is None else matrix
    columns = score_matrix(
        bundle, ids, matrix, playbook, model, as_of, top_k, encoded=encoded, outputs=outputs
    )
    # Only the store reads the stored reasons: kept as Python text, not converted to a text column.
    return pd.DataFrame(
        {k: pd.Series(v, dtype=object) if k == "stored_reasons" else v for k, v in columns.items()}
    )


def score_records(
    bundle: ModelBundle,
    customer_ids: list[str],
    records: list[dict[str, object]],
    playbook: Playbook,
    model: ModelInfo,
    as_of: str,
    top_k: int = 5,
) -> list[dict[str, object]]:
    """Score a few records given as dicts (the API path), one result dict per record."""
    columns = score_matrix(
        bundle, customer_ids, records_to_matrix(records, bundle.features), playbook, model, as_of, top_k
    )
    keys = list(columns)
    return [dict(zip(keys, row, strict=True)) for row in zip(*columns.values(), strict=True)]
