"""Shared dependencies as short Annotated aliases."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, HTTPException, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from features.errors import ChurnguardError
from serving.api.errors import NO_MODEL, UNAVAILABLE
from serving.backends import AsyncReads, SqliteReads
from serving.keys import KeyRecord
from serving.model_source import LoadedModel
from serving.state import AppState
from serving.store import SqliteScoreStore

if TYPE_CHECKING:
    from fastapi._compat import ModelField

log = logging.getLogger("churnguard.api")
_bearer = HTTPBearer(auto_error=False, description="An API key from `churnguard keys create`.")


# Dependencies that do no blocking work are async: they run on the event loop instead of costing a
# hop to the thread pool each (several per request add up to milliseconds on a busy machine).
async def get_state(request: Request) -> AppState:
    return request.app.state.churnguard  # type: ignore[no-any-return]


StateDep = Annotated[AppState, Depends(get_state)]


def reads_of(state: AppState) -> AsyncReads:
    """The store's awaitable reads (an app state built without them reads the SQLite store)."""
    if state.reads is None:
        if not isinstance(state.store, SqliteScoreStore):
            raise TypeError("a server store needs its async reads in the app state")
        state.reads = SqliteReads(state.store)
    return state.reads


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, read as FastAPI's ``HTTPBearer`` reads it
    (scheme case-insensitive, split at the first space, token stripped); None for anything else."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def field_response(
    field: ModelField, result: Any, request: Request, generic: Callable[[Request], Awaitable[Response]]
) -> Response:
    """A fast route's answer, validated and serialised by the route's own response field (the bytes the
    generic handler would send); anything unexpected goes to the generic handler, which reports it."""
    value, errors = field.validate(result, {}, loc=("response",))
    if errors:
        return await generic(request)
    return Response(field.serialize_json(value), media_type="application/json")


BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def verify_key(state: AppState, token: str) -> KeyRecord | None:
    """The key's record, or None; an unreadable key file is a 503 whose cause (and path) stays in the log."""
    try:
        return state.keys.verify(token)
    except ChurnguardError as exc:
        log.error("API keys cannot be checked: %s", exc)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, UNAVAILABLE) from None


async def require_key(state: StateDep, request: Request, credentials: BearerDep) -> KeyRecord:
    """Every /v1 route: a valid key in ``Authorization: Bearer``, or a signed-in dashboard session."""
    token = credentials.credentials if credentials else None
    if token is None:
        session_key = getattr(request.state, "session_key", None)
        if session_key is not None:
            return session_key  # type: ignore[no-any-return]
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    record = verify_key(state, token)
    if record is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "invalid API key")
    return record


ApiKeyDep = Annotated[KeyRecord, Depends(require_key)]


async def get_model(state: StateDep) -> LoadedModel:
    current = state.models.current
    if current is None:
        log.warning("request refused, no model: %s", state.models.last_error)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, NO_MODEL)
    return current


ModelDep = Annotated[LoadedModel, Depends(get_model)]
