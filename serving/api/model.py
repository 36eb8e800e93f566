"""The model card of the model being served."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from serving.api.deps import ApiKeyDep, ModelDep
from serving.schemas import ErrorResponse, ModelCard

router = APIRouter(prefix="/v1", tags=["model"])


@router.get(
    "/model",
    response_model=ModelCard,
    summary="The model being served",
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
)
def model_card(_key: ApiKeyDep, model: ModelDep) -> dict[str, object]:
    """Version, alias, training date, horizon, validation metrics and the features with their meaning."""
    bundle = model.bundle
    return {
        "model": model.info.as_dict(),
        "metrics": bundle.metadata.get("metrics", {}),
        "thresholds": bundle.thresholds,
        "calibration": bundle.metadata.get("calibration"),
        "features": [asdict(f) for f in bundle.features],
    }
