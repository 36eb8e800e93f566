"""Shared dependencies as short Annotated aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving.keys import KeyRecord
from serving.model_source import LoadedModel
from serving.state import AppState

_bearer = HTTPBearer(auto_error=False, description="An API key from `churnguard keys create`.")


# Dependencies that do no blocking work are async: they run on the event loop instead of costing a
# hop to the thread pool each (several per request add up to milliseconds on a busy machine).
async def get_state(request: Request) -> AppState:
    return request.app.state.churnguard  # type: ignore[no-any-return]


StateDep = Annotated[AppState, Depends(get_state)]


async def require_key(
    state: StateDep,
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> KeyRecord:
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
    record = state.keys.verify(token)
    if record is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "invalid API key")
    return record


ApiKeyDep = Annotated[KeyRecord, Depends(require_key)]


async def get_model(state: StateDep) -> LoadedModel:
    current = state.models.current
    if current is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"no model loaded: {state.models.last_error or 'train one with churnguard train'}",
        )
    return current


ModelDep = Annotated[LoadedModel, Depends(get_model)]
