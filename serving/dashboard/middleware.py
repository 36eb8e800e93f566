"""Reads the session cookie once per request (plain ASGI: API calls without the cookie pay nothing).

Contract: when the request carries a valid session cookie, ``scope["state"]["dashboard_session"]`` is the
:class:`~serving.dashboard.session.Session`; a cookie that no longer verifies sets ``dashboard_session_ended``.
For ``/v1`` routes the session authorises the call only together with an ``X-Churnguard-CSRF`` header equal
to the session's CSRF token: only then is ``scope["state"]["session_key"]`` (read by ``require_key``) set.
"""

from __future__ import annotations

import logging

from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from features.errors import ChurnguardError
from serving.dashboard.context import ENDED_SCOPE_KEY, SESSION_SCOPE_KEY, signer_for
from serving.dashboard.session import COOKIE, CSRF_HEADER, valid_csrf

log = logging.getLogger("churnguard.dashboard")
_CSRF_HEADER = CSRF_HEADER.encode("latin-1")


class SessionMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("path", "").startswith("/static/"):
            self._attach(scope)
        await self.app(scope, receive, send)

    @staticmethod
    def _attach(scope: Scope) -> None:
        headers = scope.get("headers") or []
        raw_cookie = b"; ".join(v for k, v in headers if k == b"cookie")
        if COOKIE.encode() not in raw_cookie:
            return
        app = scope.get("app")
        state = getattr(getattr(app, "state", None), "churnguard", None)
        if app is None or state is None:
            return
        token = cookie_parser(raw_cookie.decode("latin-1")).get(COOKIE)
        try:
            session = signer_for(app.state, state).verify(token, state.keys)
        except (ChurnguardError, OSError, ValueError) as exc:  # unreadable key file or secret: signed out
            log.warning("dashboard session check failed: %s", exc)
            session = None
        scope_state = scope.setdefault("state", {})
        scope_state[SESSION_SCOPE_KEY] = session
        scope_state[ENDED_SCOPE_KEY] = session is None
        path: str = scope.get("path", "")
        if session is not None and (path == "/v1" or path.startswith("/v1/")):
            header = next((v for k, v in headers if k == _CSRF_HEADER), None)
            if header is not None and valid_csrf(session, header.decode("latin-1")):
                scope_state["session_key"] = session.key
