"""The FastAPI app: ``create_app()`` builds it; the model loads in the lifespan and is watched for swaps."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from features.errors import ChurnguardError, ModelNotFoundError
from features.model_store import connect
from serving.actions import load_playbook
from serving.api import customers, model, ops, score
from serving.dashboard import install_dashboard
from serving.keys import KeyStore
from serving.metrics import Metrics
from serving.model_source import ModelHolder
from serving.settings import ServingSettings, get_serving_settings
from serving.state import AppState
from serving.store import SqliteScoreStore

log = logging.getLogger("churnguard.api")

DESCRIPTION = """Churn risk, customer value, reasons and the retention action worth taking.

Every `/v1` route needs an API key: `Authorization: Bearer <key>` (create one with `churnguard keys create`).
Errors are JSON: `{"error": {"code", "message", "details"}}`."""


def _error(
    status: int,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    code = HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _field(loc: Any) -> str:
    return ".".join(str(p) for p in loc)


class GuardMiddleware:
    """Refuses oversized bodies before parsing (413) and records request metrics, as plain ASGI (cheap)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_big = f"request body over {self.max_body_bytes} bytes: send fewer records per request"
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await _error(413, too_big)(scope, receive, send)
            return
        started = time.perf_counter()
        status_holder = {"status": 500}
        # Read the whole body first (it is at most max_body_bytes), so a chunked body that grows too big
        # is refused here with 413 instead of failing half-way through the app's own parsing.
        chunks: list[bytes] = []
        received = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_body_bytes:
                status_holder["status"] = 413
                await _error(413, too_big)(scope, receive, send)
                self._record(scope, 413, started)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
            await send(message)

        await self.app(scope, replay, tracking_send)
        self._record(scope, status_holder["status"], started)

    def _record(self, scope: Scope, status: int, started: float) -> None:
        route = scope.get("route")
        name = getattr(route, "path", "unmatched")
        self.metrics.requests.labels(name, scope["method"], str(status)).inc()
        self.metrics.latency.labels(name).observe(time.perf_counter() - started)
        if status >= 400:
            self.metrics.errors.labels(name, str(status)).inc()


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if isinstance(exc.detail, list):
            details = [{"field": _field(d["loc"]), "message": d["msg"]} for d in exc.detail]
            return _error(
                exc.status_code, "invalid input: " + "; ".join(d["message"] for d in details), details
            )
        return _error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"field": _field(e["loc"]), "message": e["msg"]} for e in exc.errors()]
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
        return _error(422, f"invalid input: {summary}", details)

    @app.exception_handler(ModelNotFoundError)
    async def no_model(request: Request, exc: ModelNotFoundError) -> JSONResponse:
        return _error(503, str(exc))

    @app.exception_handler(ChurnguardError)
    async def user_error(request: Request, exc: ChurnguardError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal error: it has been logged; please report it")


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
        holder = ModelHolder(settings.model_uri, settings.poll_seconds)
        holder.load()
        holder.start()
        app.state.churnguard = AppState(
            settings=settings,
            models=holder,
            store=SqliteScoreStore(settings.store_file),
            keys=KeyStore(settings.keys_file),
            playbook=load_playbook(settings.playbook),
            metrics=metrics,
        )
        try:
            yield
        finally:
            holder.stop()

    app = FastAPI(title="churnguard", version="1", description=DESCRIPTION, lifespan=lifespan)
    for router in (ops.router, customers.router, score.router, model.router):
        app.include_router(router)
    install_dashboard(app)
    _install_error_handlers(app)
    app.add_middleware(GuardMiddleware, max_body_bytes=settings.max_body_bytes, metrics=metrics)
    return app
