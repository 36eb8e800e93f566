"""The app's plain-ASGI middlewares (cheap: no request objects unless they answer themselves).

Outermost first, as ``create_app`` stacks them: :class:`MetricsMiddleware` (request counts and latency
with bounded labels), :class:`ApiHeadersMiddleware` (no caching, no sniffing of API answers),
:class:`AuthThrottleMiddleware` (429 after repeated failed authentication from one client) and
:class:`BodyLimitMiddleware` (413 before parsing).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.api.errors import error_response
from serving.metrics import Metrics

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


def is_api(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


class BodyLimitMiddleware:
    """Refuses bodies over ``max_body_bytes`` with 413: from Content-Length before reading, and while
    reading a chunked body (the whole body is read here first, so the app never parses half of one)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await self._too_big()(scope, receive, send)
            return
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
                await self._too_big()(scope, receive, send)
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

        await self.app(scope, replay, send)

    def _too_big(self) -> ASGIApp:
        return error_response(
            413, f"request body over {self.max_body_bytes} bytes: send fewer records per request"
        )


class MetricsMiddleware:
    """Counts requests by route template, method and status, and times them.

    Labels come from fixed sets only, so no client can add series: the method is one of :data:`METHODS`
    or ``other``; the route is the matched route's template (``/v1/customers/{customer_id:path}``) or
    ``unmatched``, never the raw path."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # the series of each (route, method, status) seen: labels() costs a lock and checks per call
        self._series: dict[tuple[str, str, str], tuple[Any, Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            self._record(scope, status, started)

    def _record(self, scope: Scope, status: int, started: float) -> None:
        route = scope.get("route")
        # the template without converters ("/v1/customers/{customer_id}", not "...{customer_id:path}")
        name = str(getattr(route, "path_format", None) or getattr(route, "path", None) or UNMATCHED)
        method = str(scope.get("method", "")).upper()
        method = method if method in METHODS else "other"
        code = str(status) if 100 <= status <= 599 else "other"
        series = self._series.get((name, method, code))
        if series is None:
            metrics = self.metrics
            errors = metrics.errors.labels(name, code) if status >= 400 else None
            series = (metrics.requests.labels(name, method, code), metrics.latency.labels(name), errors)
            self._series[(name, method, code)] = series
        requests, latency, errors = series
        requests.inc()
        latency.observe(time.perf_counter() - started)
        if errors is not None:
            errors.inc()


class ApiHeadersMiddleware:
    """API answers carry customer data: never cached (``no-store``) and never content-sniffed."""

    _HEADERS = ((b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"))
    _NAMES = frozenset(name for name, _ in _HEADERS)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (is_api(path) or path == "/metrics"):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k not in self._NAMES]
                message = {**message, "headers": [*headers, *self._HEADERS]}
            await send(message)

        await self.app(scope, receive, with_headers)


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True)
class ThrottleSettings:
    """``burst`` failures at once, refilled at ``per_minute``; ``max_clients`` buckets kept (LRU)."""

    burst: int
    per_minute: float
    max_clients: int = 10_000


class AuthThrottleMiddleware:
    """Slows down guessing: every 401/403 from an authenticated route (the API, /metrics) and every failed
    sign-in takes a token from the client's bucket; with none left, those routes answer 429 with
    ``Retry-After`` until the bucket refills, even for a right key.

    Clients are told apart by address (behind a proxy, the address uvicorn takes from X-Forwarded-For
    when the proxy is trusted). Memory is bounded: at most ``max_clients`` buckets, least recently
    used dropped first, and a full bucket is the same as none. Counted in
    ``churnguard_auth_failures_total`` and ``churnguard_auth_throttled_total``."""

    def __init__(self, app: ASGIApp, settings: ThrottleSettings, metrics: Metrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.rate = settings.per_minute / 60.0
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @staticmethod
    def kind(scope: Scope) -> str | None:
        """Which guarded route a request is for (None: not guarded)."""
        path = scope.get("path", "")
        if is_api(path):
            return "api"
        if path == "/metrics":
            return "metrics"
        if path == "/sign-in" and scope.get("method") == "POST":
            return "sign_in"
        return None

    def _tokens(self, client: str, now: float) -> float:
        bucket = self._buckets.get(client)
        if bucket is None:
            return float(self.settings.burst)
        return min(float(self.settings.burst), bucket.tokens + (now - bucket.updated) * self.rate)

    def _take(self, client: str, now: float) -> None:
        tokens = self._tokens(client, now) - 1
        self._buckets[client] = _Bucket(max(tokens, 0.0), now)
        self._buckets.move_to_end(client)
        while len(self._buckets) > self.settings.max_clients:
            self._buckets.popitem(last=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = self.kind(scope) if scope["type"] == "http" and self.settings.burst > 0 else None
        if kind is None:
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("unknown", 0))[0]
        now = time.monotonic()
        tokens = self._tokens(client, now)
        if tokens < 1:
            self.metrics.auth_throttled.inc()
            wait = str(max(1, math.ceil((1 - tokens) / self.rate)))
            await self._refuse(scope, kind, wait)(scope, receive, send)
            return
        if client in self._buckets and tokens >= self.settings.burst:
            del self._buckets[client]  # refilled: forget the client
        status = 0

        async def watching_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        await self.app(scope, receive, watching_send)
        if status in (401, 403):
            self.metrics.auth_failures.labels(kind).inc()
            self._take(client, time.monotonic())

    @staticmethod
    def _refuse(scope: Scope, kind: str, wait: str) -> ASGIApp:
        message = f"too many failed authentication attempts from this client: try again in {wait} s"
        if kind != "sign_in":
            return error_response(429, message, headers={"Retry-After": wait})
        from serving.dashboard.render import render  # the page look; imported late (a rare path)

        page = render(
            Request(scope),
            "message.html",
            429,
            session=None,
            title="Too many sign-in attempts",
            message=f"Too many sign-ins failed from this address. Try again in {wait} seconds.",
            link=("/sign-in", "Back to the sign-in page"),
        )
        page.headers["Retry-After"] = wait
        return page
