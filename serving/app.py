"""The FastAPI app: ``create_app()`` builds it; the model loads in the lifespan and is watched for swaps."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from features.model_store import connect
from serving.actions import load_playbook
from serving.api import campaigns, customers, model, monitoring, ops, score
from serving.api.errors import install_error_handlers
from serving.backends import open_backends
from serving.dashboard import install_dashboard
from serving.metrics import Metrics
from serving.middleware import (
    ApiHeadersMiddleware,
    AuthThrottleMiddleware,
    BodyLimitMiddleware,
    MetricsMiddleware,
    ThrottleSettings,
)
from serving.model_source import ModelHolder, settle_heap
from serving.settings import ServingSettings, get_serving_settings
from serving.state import AppState

log = logging.getLogger("churnguard.api")

DESCRIPTION = """Churn risk, customer value, reasons and the retention action worth taking.

Every `/v1` route needs an API key: `Authorization: Bearer <key>` (create one with `churnguard keys create`).
Errors are JSON: `{"error": {"code", "message", "details"}}`. Repeated failed authentication from one client
is answered with 429 and `Retry-After`."""


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    """Build the app. Settings default to the environment (``CHURNGUARD_*``)."""
    settings = settings or get_serving_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A registry that is down must not hold the API back for minutes of default retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

        try:
            connect(settings)
        except Exception as exc:  # tracking store down at start: serve a local model if one is configured
            log.warning("tracking store unavailable at start-up: %s", exc.__class__.__name__)
        backends = open_backends(settings)  # a server store is migrated here, once per process
        await backends.aopen()
        holder = ModelHolder(settings.model_uri, settings.poll_seconds)
        holder.load()
        holder.start()
        app.state.churnguard = AppState(
            settings=settings,
            models=holder,
            store=backends.store,
            keys=backends.keys,
            campaigns=backends.campaigns,
            playbook=load_playbook(settings.playbook),
            metrics=metrics,
            reads=backends.reads,
            sessions=backends.sessions,
        )
        settle_heap()
        try:
            yield
        finally:
            holder.stop()
            await backends.aclose()

    app = FastAPI(
        title="churnguard",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        # Swagger UI and ReDoc load their scripts from a public CDN: off unless asked for.
        docs_url="/docs" if settings.api_docs else None,
        redoc_url="/redoc" if settings.api_docs else None,
    )
    for router in (
        ops.router,
        monitoring.router,
        customers.router,
        score.router,
        model.router,
        campaigns.router,
    ):
        app.include_router(router)
    install_dashboard(app)
    install_error_handlers(app)
    # add_middleware puts each one outside the ones before it: the last added sees a request first.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    throttle = ThrottleSettings(settings.auth_failure_burst, settings.auth_failures_per_minute)
    app.add_middleware(AuthThrottleMiddleware, settings=throttle, metrics=metrics)
    app.add_middleware(ApiHeadersMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
