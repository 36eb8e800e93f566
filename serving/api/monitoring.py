"""Score history of a customer and the model's health (drift, realised performance, retrain signal).

Both read what batch runs stored (:mod:`serving.monitor`); neither costs model work. ``/ready`` never
fails on drift: this is where drift is said.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import BaseModel, Field

from features.contract import INTERACTIONS, TRANSACTIONS
from serving.api.deps import ApiKeyDep, StateDep
from serving.monitor import OUTPUT_COLUMNS, MonitorLimits, model_health
from serving.schemas import ErrorResponse
from serving.state import AppState

router = APIRouter(prefix="/v1", tags=["monitoring"])
EVENT_COLUMNS = {f"{t.name}.{c.name}" for t in (TRANSACTIONS, INTERACTIONS) for c in t.columns}
_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorResponse},
    403: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
}


class HistoryPoint(BaseModel):
    """The customer's score at one batch run."""

    run_id: int
    as_of: str = Field(description="The run's as-of date (events before it were used).")
    model_version: str | None
    churn_probability: float
    expected_revenue: float | None = Field(description="Spend expected over the model's horizon.")
    clv: float | None = Field(description="Lifetime value (null for models without a value model).")
    value_at_risk: float | None
    segment: str | None
    action_name: str | None


class CustomerHistory(BaseModel):
    customer_id: str
    runs: list[HistoryPoint] = Field(
        description="Oldest first; runs that did not score the customer are absent."
    )
    segment_moves: int = Field(description="How many times the value segment changed between the runs shown.")


class ModelHealth(BaseModel):
    """Drift of the latest run, realised performance of matured runs and the retrain verdict."""

    status: str = Field(description="ok, warn, retrain, or unknown (no batch run kept yet).")
    retrain: bool
    reasons: list[str]
    model_version: str | None
    runs: int
    latest_run: dict[str, Any] | None
    drift: dict[str, Any] | None = Field(
        description="status, reference (where it came from: training, training_cutoffs or first_run), "
        "thresholds, flagged and all columns with PSI, test statistic and p-value."
    )
    performance: list[dict[str, Any]] = Field(description="Matured runs, oldest first.")
    validation: dict[str, Any] = Field(description="The validation figures the model was promoted with.")
    limits: dict[str, Any]


@router.get(
    "/customers/{customer_id:path}/history",
    response_model=CustomerHistory,
    responses=_ERRORS,
    summary="A customer's score at each kept batch run (risk and value trend, segment moves)",
)
def customer_history(
    customer_id: Annotated[str, Path(max_length=200, examples=["C0000001"])], state: StateDep, _key: ApiKeyDep
) -> dict[str, object]:
    """Churn probability, expected revenue, lifetime value, value at risk, segment and action per run,
    oldest first."""
    runs = state.store.history(customer_id)
    if not runs:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"no score history for customer '{customer_id}': unknown id, or not scored by any kept batch run",
        )
    segments = [r["segment"] for r in runs]
    moves = sum(1 for a, b in pairwise(segments) if a != b)
    return {"customer_id": customer_id, "runs": runs, "segment_moves": moves}


def current_health(state: AppState) -> dict[str, Any]:
    """The health report against the served model's validation figures (else the latest run's model's)."""
    loaded = state.models.current
    version: str | None
    if loaded is not None:
        validation, version = loaded.bundle.metadata.get("metrics") or {}, loaded.info.version
    else:
        runs = state.store.runs()
        validation = (runs[-1]["model"].get("metrics") or {}) if runs else {}
        version = runs[-1]["model_version"] if runs else None
    return model_health(state.store, validation, MonitorLimits.from_settings(state.settings), version)


@router.get(
    "/model/health",
    response_model=ModelHealth,
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}},
    summary="Drift, realised performance and the retrain signal",
)
def health(state: StateDep, _key: ApiKeyDep) -> dict[str, Any]:
    """Drift of the latest batch run against the training reference (PSI and a two-sample test per column),
    realised performance of runs whose horizon has passed (``churnguard monitor``), and the verdict."""
    return current_health(state)


def refresh_gauges(state: AppState) -> None:
    """Set the drift gauges on ``/metrics`` from the stored latest run; columns outside the served model's
    features, its outputs and the data contract's event columns are left out (a bounded label set)."""
    loaded = state.models.current
    allowed = set(OUTPUT_COLUMNS) | EVENT_COLUMNS | (set(loaded.bundle.feature_names) if loaded else set())
    state.metrics.set_monitoring(current_health(state), allowed)
