"""Liveness, readiness and Prometheus metrics (open: no key needed, no customer data)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from serving.api.deps import StateDep
from serving.schemas import Health, Ready

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=Health, summary="Liveness")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready",
    response_model=Ready,
    summary="Readiness: a model is loaded; degraded states named",
    responses={503: {"model": Ready}},
)
def ready(state: StateDep, response: Response) -> dict[str, object]:
    models = state.models
    current = models.current
    as_of = state.store.meta().get("as_of")
    if current is None:
        response.status_code = 503
        status, detail = "not_ready", models.last_error or "no model loaded"
    elif not models.registry_reachable:
        status, detail = "degraded", f"{models.last_error}; serving the model already loaded"
    elif as_of is None:
        status, detail = "degraded", "no stored scores yet: run `churnguard score` to fill the serving store"
    else:
        status, detail = "ready", None
    return {
        "status": status,
        "model_version": current.info.version if current else None,
        "registry_reachable": models.registry_reachable,
        "scores_as_of": as_of,
        "detail": detail,
    }


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(state: StateDep) -> Response:
    current = state.models.current
    if current is not None and current.info.version.isdigit():
        state.metrics.model_version.set(int(current.info.version))
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")
