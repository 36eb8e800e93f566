"""The one scoring core: features -> calibrated churn probability -> CLV -> value at risk -> reasons ->
action. Batch scoring and the API both end in :meth:`Scorer.score_matrix`; nothing here is duplicated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.bundle import ModelBundle, ModelInfo, records_to_matrix
from features.model_store import LoadedModel
from serving.actions import Playbook, decide_actions
from serving.encoding import model_json
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


@dataclass(frozen=True)
class Scorer:
    """Scores with one model and playbook: the one path batch and online scoring share.

    Exact TreeSHAP is computed once per row: the raw score is the sum of the contributions, so the
    probability and its reasons always agree. Build it with :meth:`for_model` from a loaded model."""

    bundle: ModelBundle
    playbook: Playbook
    info: ModelInfo
    top_k: int = 5

    @classmethod
    def for_model(cls, model: LoadedModel, playbook: Playbook, top_k: int = 5) -> Scorer:
        return cls(model.bundle, playbook, model.info, top_k)

    def score_matrix(
        self,
        customer_ids: list[str],
        matrix: np.ndarray,
        as_of: str,
        *,
        encoded: bool = False,
        outputs: ModelOutputs | None = None,
    ) -> dict[str, list[Any]]:
        """Score a model-input matrix; columns of the result are lists aligned with ``customer_ids``.

        ``encoded`` gives reasons, action and model as the JSON text a file or the store keeps (written
        once, never decoded), plus the flat action_name, expected_net_value and top_reason (the strongest
        reason's sentence) and the reasons' compact stored form, stored_reasons; otherwise they are
        dicts, as the API returns them. ``outputs`` are the matrix's model outputs when already computed."""
        bundle = self.bundle
        outputs = outputs or model_outputs(bundle, matrix)
        contrib, clv = outputs.contributions, outputs.clv
        probability = bundle.probability(contrib.sum(axis=1))
        reasons = top_reasons(bundle, matrix, contrib, self.top_k)
        decisions = decide_actions(self.playbook, probability, clv, reasons.risk_groups)
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
                "model": [self.info.as_dict()] * n,
            }
        return columns | {
            "reasons": reasons.text,
            "action": decisions.text,
            "model": [model_json(self.info.as_dict())] * n,
            "action_name": decisions.name,
            "expected_net_value": decisions.expected_net_value,
            "top_reason": reasons.first_sentence,
            "stored_reasons": reasons.stored,
        }

    def score_frame(
        self,
        frame: pd.DataFrame,
        as_of: str,
        *,
        encoded: bool = False,
        matrix: np.ndarray | None = None,
        outputs: ModelOutputs | None = None,
    ) -> pd.DataFrame:
        """Score rows of feature values (with a ``customer_id`` column; missing features are unknown) into
        a DataFrame of scores. ``matrix`` (the frame's model input) and ``outputs`` (its model outputs)
        may be passed when known."""
        ids = frame["customer_id"].astype(str).tolist()
        matrix = self.bundle.matrix(frame) if matrix is None else matrix
        columns = self.score_matrix(ids, matrix, as_of, encoded=encoded, outputs=outputs)
        # Only the store reads the stored reasons: kept as Python text, not converted to a text column.
        return pd.DataFrame(
            {k: pd.Series(v, dtype=object) if k == "stored_reasons" else v for k, v in columns.items()}
        )

    def score_records(
        self, customer_ids: list[str], records: list[dict[str, object]], as_of: str
    ) -> list[dict[str, object]]:
        """Score a few records given as dicts (the API path), one result dict per record."""
        matrix = records_to_matrix(records, self.bundle.features)
        columns = self.score_matrix(customer_ids, matrix, as_of)
        keys = list(columns)
        return [dict(zip(keys, row, strict=True)) for row in zip(*columns.values(), strict=True)]
