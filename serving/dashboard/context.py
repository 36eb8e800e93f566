"""What dashboard routes share: the app state, the session signer, and the signed-in session dependency."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from starlette.datastructures import State

from serving.dashboard.session import ENDED_FILE, Session, SessionSigner
from serving.state import AppState

SESSION_SCOPE_KEY = "dashboard_session"
ENDED_SCOPE_KEY = "dashboard_session_ended"


def app_state(request: Request) -> AppState:
    return request.app.state.churnguard  # type: ignore[no-any-return]


def signer_for(app_state_holder: State, state: AppState) -> SessionSigner:
    """The app's one signer (created on first use, so the secret lives in the home the app really uses);
    its list of signed-out sessions lives next to the API keys."""
    signer: SessionSigner | None = getattr(app_state_holder, "dashboard_signer", None)
    if signer is None or signer.path.parent != state.settings.home:
        signer = SessionSigner(
            state.settings.home, state.settings.keys_file.parent / ENDED_FILE, shared=state.sessions
        )
        app_state_holder.dashboard_signer = signer
    return signer


def signer(request: Request) -> SessionSigner:
    return signer_for(request.app.state, app_state(request))


class SignInRequired(Exception):
    """Raised by :func:`require_session`; answered with a 303 redirect to the sign-in page."""

    def __init__(self, next_url: str, ended: bool) -> None:
        super().__init__(next_url)
        self.next_url = next_url
        self.ended = ended

    def location(self) -> str:
        query = f"next={quote(self.next_url, safe='/')}"
        return f"/sign-in?{query}&reason=ended" if self.ended else f"/sign-in?{query}"


def cookie_secure(request: Request, state: AppState) -> bool:
    """Secure cookies on https: the request's own scheme, which uvicorn takes from X-Forwarded-Proto when
    the proxy is trusted (FORWARDED_ALLOW_IPS), or always when ``cookie_secure`` is set."""
    return state.settings.cookie_secure or request.url.scheme == "https"


def current_session(request: Request) -> Session | None:
    """The session the middleware verified for this request (None when signed out)."""
    scope_state: dict[str, Any] = request.scope.get("state") or {}
    session: Session | None = scope_state.get(SESSION_SCOPE_KEY)
    return session


def require_session(request: Request) -> Session:
    """Every dashboard page: a valid session, else :class:`SignInRequired` (a redirect to sign in)."""
    session = current_session(request)
    if session is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        ended = bool((request.scope.get("state") or {}).get(ENDED_SCOPE_KEY))
        raise SignInRequired(target, ended)
    return session


SessionDep = Annotated[Session, Depends(require_session)]
StateDep = Annotated[AppState, Depends(app_state)]
