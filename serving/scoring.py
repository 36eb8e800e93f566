"""The one scoring core: features -> calibrated churn probability -> horizon revenue and lifetime value ->
value at risk -> reasons -> action (by the bundle's learned effects when it has them, else by the
playbook's priors). Batch scoring and the API both end in :meth:`Scorer.score_matrix`; nothing here is
duplicated. Value fields are defined in :mod:`features.value` (method) and
:mod:`serving.encoding` (stored columns)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.bundle import ModelBundle, ModelInfo, records_to_matrix
from features.economics import Columns
from features.model_store import LoadedModel
from features.value import CustomerValue, records_columns
from serving.actions import Effects, Playbook, decide_actions
from serving.encoding import model_json
from serving.explain import top_reasons


def risk_tiers(probability: np.ndarray, thresholds: dict[str, float]) -> np.ndarray:
    return np.where(
        probability >= thresholds["high"],
        "high",
        np.where(probability >= thresholds["medium"], "medium", "low"),
    )


GRACEFUL_EXIT = "graceful exit"


def segments(probability: np.ndarray, clv: np.ndarray, thresholds: dict[str, float]) -> np.ndarray:
    """A small named grid of value x risk, plus "graceful exit": customers whose expected contribution
    over the relationship is <= 0 (NaN value: not known, judged on the grid as low value)."""
    valuable = clv >= thresholds["high_value"]
    at_risk = probability >= thresholds["medium"]
    grid = np.where(
        valuable,
        np.where(at_risk, "valuable, at risk", "valuable, loyal"),
        np.where(at_risk, "low value, at risk", "low value, loyal"),
    )
    return np.where(clv <= 0, GRACEFUL_EXIT, grid)


def _rounded(values: np.ndarray, digits: int) -> list[float | None]:
    """Rounded numbers, None where unknown (value is null, never 0, when it cannot be computed)."""
    return [None if v != v else v for v in np.round(values, digits).tolist()]


def clv_objects(value: CustomerValue, *, basis: str, rate: float, model: str) -> list[dict[str, Any] | None]:
    """The API's ``clv`` object per customer (None where value is unavailable)."""
    rows = zip(
        *(
            _rounded(v, d)
            for v, d in (
                (value.residual_value, 2),
                (value.value_1y, 2),
                (value.historic_value, 2),
                (value.p_alive, 4),
                (value.orders_90d, 3),
                (value.orders_1y, 3),
                (value.order_value, 2),
                (value.p05, 2),
                (value.p95, 2),
            )
        ),
        strict=True,
    )
    out: list[dict[str, Any] | None] = []
    for residual, year, historic, alive, o90, o1y, aov, low, high in rows:
        if residual is None:
            out.append(None)
            continue
        out.append(
            {
                "residual_value": residual,
                "value_1y": year,
                "historic_value": historic,
                "p_alive": alive,
                "expected_orders": {"days_90": o90, "days_365": o1y},
                "expected_order_value": aov,
                "basis": basis,
                "annual_discount_rate": rate,
                "interval": None if low is None else {"p05": low, "p95": high},
                "model": model,
            }
        )
    return out


@dataclass(frozen=True)
class ModelOutputs:
    """What the models say about a matrix: exact TreeSHAP of the churn model (its raw score is their
    sum), the revenue forecast over the horizon and, when the bundle has them, the learned effects of the
    actions (rows x ``bundle.effects.actions``). Computed in LightGBM's C code, which leaves the
    interpreter free meanwhile, so batch scoring computes the next chunk's outputs while it writes this
    chunk's reasons."""

    contributions: np.ndarray
    revenue: np.ndarray  # expected_revenue_{H}d, not lifetime value
    effects: np.ndarray | None = None


def model_outputs(bundle: ModelBundle, matrix: np.ndarray) -> ModelOutputs:
    effects = None if bundle.effects is None else bundle.effects.estimate(matrix)
    return ModelOutputs(bundle.contributions(matrix), bundle.revenue(matrix), effects)


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
        frame: Columns | None = None,
    ) -> dict[str, list[Any]]:
        """Score a model-input matrix; columns of the result are lists aligned with ``customer_ids``.

        ``encoded`` gives reasons, action and model as the JSON text a file or the store keeps (written
        once, never decoded), plus the flat action_name, expected_net_value and top_reason (the strongest
        reason's sentence) and the reasons' compact stored form, stored_reasons; otherwise they are
        dicts, as the API returns them. ``outputs`` are the matrix's model outputs when already computed.
        ``frame``: the rows' features (a DataFrame, with precomputed value parts when batch scoring, or
        column name -> values), for the lifetime value; without it (or without a value model) value fields are null."""
        bundle = self.bundle
        outputs = outputs or model_outputs(bundle, matrix)
        contrib, revenue = outputs.contributions, outputs.revenue
        probability = bundle.probability(contrib.sum(axis=1))
        reasons = top_reasons(bundle, matrix, contrib, self.top_k)
        n = len(customer_ids)
        value = None if frame is None else bundle.customer_value(frame, probability, revenue)
        model = bundle.value_model
        nan = np.full(n, np.nan)
        lifetime = nan if value is None else value.residual_value
        at_risk = nan if value is None else value.value_at_risk(probability)
        decisions = decide_actions(
            self.playbook,
            probability,
            np.where(np.isnan(at_risk), probability * revenue, at_risk),
            reasons.risk_groups,
            basis="revenue" if model is None else model.basis,
            lifetime=lifetime,
            effects=self._effects(matrix, outputs, value, revenue),
        )
        basis = None if model is None else model.basis
        details = (
            [None] * n
            if value is None or model is None
            else clv_objects(value, basis=model.basis, rate=model.annual_discount_rate, model=model.name)
        )
        known = ~np.isnan(lifetime)
        columns: dict[str, list[Any]] = {
            "customer_id": list(customer_ids),
            "as_of": [as_of] * n,
            "churn_probability": np.round(probability, 6).tolist(),
            "risk_tier": risk_tiers(probability, bundle.thresholds).tolist(),
            "clv": _rounded(lifetime, 2),
            "value_at_risk": _rounded(at_risk, 2),
            "segment": segments(probability, np.where(known, lifetime, revenue), bundle.thresholds).tolist(),
            "expected_revenue_90d": np.round(revenue, 2).tolist(),
            "value_1y": _rounded(nan if value is None else value.value_1y, 2),
            "p_alive": _rounded(nan if value is None else value.p_alive, 4),
            "value_basis": [basis if k else None for k in known.tolist()],
        }
        if not encoded:
            return columns | {
                "clv": details,
                "reasons": reasons.as_dicts(),
                "action": decisions.as_dicts(),
                "model": [self.info.as_dict()] * n,
            }
        return columns | {
            "clv_detail": [None if d is None else json.dumps(d) for d in details],
            "reasons": reasons.text,
            "action": decisions.text,
            "model": [model_json(self.info.as_dict())] * n,
            "action_name": decisions.name,
            "expected_net_value": decisions.expected_net_value,
            "top_reason": reasons.first_sentence,
            "stored_reasons": reasons.stored,
        }

    def _effects(
        self, matrix: np.ndarray, outputs: ModelOutputs, value: CustomerValue | None, revenue: np.ndarray
    ) -> Effects | None:
        """The learned effects of the bundle's actions for these rows, or None (the playbook's priors decide)."""
        learned = self.bundle.effects
        if learned is None:
            return None
        estimates = outputs.effects if outputs.effects is not None else learned.estimate(matrix)
        return Effects(learned.actions, estimates, self.bundle.retained_value(value, revenue))

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
        columns = self.score_matrix(ids, matrix, as_of, encoded=encoded, outputs=outputs, frame=frame)
        # Only the store reads the stored reasons: kept as Python text, not converted to a text column.
        return pd.DataFrame(
            {k: pd.Series(v, dtype=object) if k == "stored_reasons" else v for k, v in columns.items()}
        )

    def score_records(
        self, customer_ids: list[str], records: list[dict[str, object]], as_of: str
    ) -> list[dict[str, object]]:
        """Score a few records given as dicts (the API path), one result dict per record."""
        matrix = records_to_matrix(records, self.bundle.features)
        values = records_columns(records) if self.bundle.value_model is not None else None
        columns = self.score_matrix(customer_ids, matrix, as_of, frame=values)
        keys = list(columns)
        return [dict(zip(keys, row, strict=True)) for row in zip(*columns.values(), strict=True)]
