"""Sign-in with an API key and sign-out: the only dashboard routes reachable without a session.

Sign-in verifies the key against the KeyStore and sets a signed session cookie (HttpOnly, SameSite=Strict,
Secure on https or when ``cookie_secure``, lifetime ``session_hours``) that holds the key id, never the
key. Both forms carry a hidden token: sign-in a double-submit token bound to a short-lived cookie,
sign-out the session's CSRF token. Signing out ends the session on the server too (a replayed cookie is
refused). Every failure is a message on the page, never a 500 and never a server path.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from features.errors import ChurnguardError
from serving.dashboard.context import StateDep, cookie_secure, current_session, signer
from serving.dashboard.render import render
from serving.dashboard.session import COOKIE, SIGNIN_COOKIE, valid_csrf

router = APIRouter(include_in_schema=False)
log = logging.getLogger("churnguard.dashboard")

_NOTICES = {
    "ended": "Your session has ended (it expired, or its API key was revoked). Please sign in again.",
    "signed_out": "You are signed out.",
}
_SIGNIN_COOKIE_SECONDS = 12 * 3600


def safe_next(value: str | None) -> str:
    """A local path to return to after sign-in; anything else (other sites, odd schemes) becomes '/'."""
    if not value or len(value) > 2000 or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/"
    if any(ord(c) < 32 for c in value) or value.startswith(("/sign-in", "/sign-out")):
        return "/"
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else "/"


def _sign_in_page(
    request: Request,
    state: StateDep,
    *,
    next_url: str,
    error: str | None = None,
    notice: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    sign = signer(request)
    nonce = request.cookies.get(SIGNIN_COOKIE)
    if not nonce or len(nonce) > 100:
        nonce = sign.new_signin_nonce()
    response = render(
        request,
        "sign_in.html",
        status_code,
        session=None,
        token=sign.signin_token(nonce),
        next_url=next_url,
        error=error,
        notice=notice,
    )
    response.set_cookie(
        SIGNIN_COOKIE,
        nonce,
        max_age=_SIGNIN_COOKIE_SECONDS,
        path="/sign-in",
        httponly=True,
        samesite="strict",
        secure=cookie_secure(request, state),
    )
    return response


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_form(request: Request, state: StateDep) -> Response:
    """The sign-in form (already signed in: straight on to the page asked for)."""
    next_url = safe_next(request.query_params.get("next"))
    if current_session(request) is not None:
        return RedirectResponse(next_url, status_code=303)
    reason = request.query_params.get("reason")
    notice = _NOTICES.get(reason or "") or (
        _NOTICES["signed_out"] if "signed_out" in request.query_params else None
    )
    return _sign_in_page(request, state, next_url=next_url, notice=notice)


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in(request: Request, state: StateDep) -> Response:
    """Check the form token and the key; on success set the session cookie and go on (303)."""
    try:
        form = await request.form()
        api_key, token, next_raw = (str(form.get(name) or "") for name in ("api_key", "csrf_token", "next"))
    except Exception:  # malformed body: the form is all this route reads, so say so
        return _sign_in_page(
            request, state, next_url="/", error="The sign-in form could not be read.", status_code=400
        )
    next_url = safe_next(next_raw)
    sign = signer(request)
    if not sign.check_signin_token(request.cookies.get(SIGNIN_COOKIE), token):
        return _sign_in_page(
            request,
            state,
            next_url=next_url,
            error="This sign-in form has expired (or cookies are blocked). Please try again.",
            status_code=400,
        )
    try:
        record = state.keys.verify(api_key.strip()) if api_key.strip() else None
    except ChurnguardError as exc:  # the key file: its path and fault go to the log, not to the page
        log.error("sign-in cannot check keys: %s", exc)
        message = "Keys cannot be checked right now. Please try again later or tell an administrator."
        return _sign_in_page(request, state, next_url=next_url, error=message, status_code=503)
    if record is None:
        message = (
            "That API key is not valid. Check that you copied all of it, or ask an administrator for a key "
            "(churnguard keys create)."
            if api_key.strip()
            else "Enter your API key."
        )
        return _sign_in_page(request, state, next_url=next_url, error=message, status_code=401)
    lifetime = state.settings.session_hours * 3600
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(
        COOKIE,
        sign.issue(record, lifetime),
        max_age=int(lifetime),
        expires=int(lifetime),
        path="/",
        httponly=True,
        samesite="strict",
        secure=cookie_secure(request, state),
    )
    response.delete_cookie(SIGNIN_COOKIE, path="/sign-in", httponly=True, samesite="strict")
    return response


@router.get("/sign-out", response_class=HTMLResponse)
def sign_out_page(request: Request) -> Response:
    """A link or a typed address: ask to confirm with the button (signing out changes state: POST only)."""
    session = current_session(request)
    if session is None:
        return RedirectResponse("/sign-in", status_code=303)
    return render(request, "sign_out.html", session=session)


@router.post("/sign-out", response_class=HTMLResponse)
async def sign_out(request: Request, state: StateDep) -> Response:
    """End the session on the server and clear its cookie (the form must carry the session's CSRF token)."""
    session = current_session(request)
    if session is None:
        return RedirectResponse("/sign-in", status_code=303)
    try:
        token = str((await request.form()).get("csrf_token") or "")
    except Exception:
        token = ""
    if not valid_csrf(session, token):
        return render(
            request,
            "message.html",
            403,
            session=session,
            title="Sign-out not confirmed",
            message="The sign-out form was out of date. Use the Sign out button again.",
        )
    response: Response = RedirectResponse("/sign-in?signed_out=1", status_code=303)
    try:
        signer(request).end(session)
    except OSError as exc:  # the cookie is still cleared below; the page says the server did not record it
        log.error("sign-out could not be recorded: %s", exc)
        response = render(
            request,
            "message.html",
            503,
            session=None,
            title="Sign-out not recorded",
            message="This browser is signed out, but the server could not record it. Tell an administrator.",
            link=("/sign-in", "Sign in"),
        )
    response.delete_cookie(
        COOKIE, path="/", httponly=True, samesite="strict", secure=cookie_secure(request, state)
    )
    return response
