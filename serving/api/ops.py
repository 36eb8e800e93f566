"""Liveness, readiness and Prometheus metrics. ``/health`` and ``/ready`` are open (no customer data, no
paths: why a model failed to load is in the server log); ``/metrics`` follows ``metrics_access``."""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, Response, status

from features.errors import ConfigError
from serving.api.deps import BearerDep, StateDep, reads_of, verify_key
from serving.api.monitoring import refresh_gauges
from serving.keys import same_secret
from serving.schemas import ErrorResponse, Health, Ready
from serving.state import AppState

router = APIRouter(tags=["operations"])
log = logging.getLogger("churnguard.api")


@router.get("/health", response_model=Health, summary="Liveness")
async def health() -> dict[str, str]:
    return {"status": "ok"}


def _log_once(state: AppState, message: str | None) -> None:
    """Log why the server is not ready once per distinct reason (probes call /ready every few seconds)."""
    if message and message != state.logged_not_ready:
        log.warning("not ready: %s", message)
    state.logged_not_ready = message


@router.get(
    "/ready",
    response_model=Ready,
    summary="Readiness: a model is loaded; degraded states and model warnings named",
    responses={503: {"model": Ready}},
)
async def ready(state: StateDep, response: Response) -> dict[str, object]:
    models = state.models
    current = models.current
    try:
        as_of, store_error = (await reads_of(state).meta()).get("as_of"), None
    except ConfigError as exc:  # a server store that does not answer (the cause goes to the log)
        as_of, store_error = None, str(exc)
    if current is None:
        response.status_code = 503
        status_text, detail = "not_ready", "no model loaded: the server log says why"
        _log_once(state, models.last_error or "no model loaded")
    elif store_error is not None:
        status_text, detail = "degraded", "serving store unreachable: stored scores cannot be read"
        _log_once(state, store_error)
    elif not models.registry_reachable:
        status_text, detail = "degraded", "model registry unreachable; serving the model already loaded"
        _log_once(state, models.last_error)
    elif as_of is None:
        status_text, detail = (
            "degraded",
            "no stored scores yet: run `churnguard score` to fill the serving store",
        )
    else:
        status_text, detail = "ready", None
    warnings = current.bundle.metadata.get("warnings") if current else None
    return {
        "status": status_text,
        "model_version": current.info.version if current else None,
        "registry_reachable": models.registry_reachable,
        "scores_as_of": as_of,
        "detail": detail,
        "warnings": [str(w) for w in warnings] if isinstance(warnings, list) else [],
    }


def _check_metrics_access(state: AppState, credentials: BearerDep) -> None:
    """``public``: open; ``off``: 404; ``key``: the metrics key or any API key as a bearer token."""
    access = state.settings.metrics_access
    if access == "public":
        return
    if access == "off":
        raise HTTPException(status.HTTP_404_NOT_FOUND, "metrics are turned off (CHURNGUARD_METRICS_ACCESS)")
    token = credentials.credentials if credentials else None
    if token is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing key: send 'Authorization: Bearer <metrics key or API key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    metrics_key = state.settings.metrics_key
    if metrics_key is not None and same_secret(token, metrics_key.get_secret_value()):
        return
    if verify_key(state, token) is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "invalid metrics or API key")


@router.get(
    "/metrics",
    summary="Prometheus metrics (bearer key unless CHURNGUARD_METRICS_ACCESS=public)",
    response_class=Response,
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}, 404: {"model": ErrorResponse}},
)
def metrics(state: StateDep, credentials: BearerDep) -> Response:
    _check_metrics_access(state, credentials)
    current = state.models.current
    if current is not None and current.info.version.isdigit():
        state.metrics.model_version.set(int(current.info.version))
    refresh_gauges(state)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")
