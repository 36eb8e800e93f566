"""The one error format of every JSON answer: ``{"error": {"code", "message", "details"}}``.

Unmatched routes (404), wrong methods (405), bodies that cannot be parsed, invalid input (422), refused
keys and unexpected failures all answer in it. Messages never carry file paths or stack traces: those go
to the server log.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from features.errors import ChurnguardError, ConfigError, ModelNotFoundError

log = logging.getLogger("churnguard.api")

# What FastAPI says when ``json.loads`` fails for a reason other than a syntax error (nesting deeper than
# the recursion limit, an integer over Python's 4,300-digit limit): the client sent it, so a 422.
_UNPARSABLE = "There was an error parsing the body"
NO_MODEL = "no model is loaded: the server log says why"
UNAVAILABLE = "the server cannot check this request right now: the server log says why"


def error_response(
    status: int,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error in the API's one format; ``code`` is the status phrase in snake case."""
    code = HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _field(loc: Any) -> str:
    return ".".join(str(p) for p in loc)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error raised inside the app in the one format."""

    @app.exception_handler(HTTPException)  # Starlette's: its 404/405 and FastAPI's own are all this class
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        headers = getattr(exc, "headers", None)
        if isinstance(exc.detail, list):
            details = [{"field": _field(d["loc"]), "message": d["msg"]} for d in exc.detail]
            summary = "; ".join(d["message"] for d in details[:5])
            return error_response(exc.status_code, f"invalid input: {summary}", details, headers)
        if exc.status_code == 400 and exc.detail == _UNPARSABLE:
            return error_response(
                422,
                "invalid input: the JSON body could not be parsed "
                "(nested too deeply, a number too long, or not UTF-8)",
            )
        if exc.status_code == 404 and exc.detail == HTTPStatus.NOT_FOUND.phrase:
            return error_response(404, f"no route {request.url.path[:200]}: see /openapi.json", None, headers)
        if exc.status_code == 405:
            allowed = (headers or {}).get("Allow", "")
            return error_response(
                405, f"method {request.method[:20]} is not allowed here; allowed: {allowed}", None, headers
            )
        return error_response(exc.status_code, str(exc.detail), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"field": _field(e["loc"]), "message": e["msg"]} for e in exc.errors()]
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
        return error_response(422, f"invalid input: {summary}", details)

    @app.exception_handler(ModelNotFoundError)
    async def no_model(request: Request, exc: ModelNotFoundError) -> JSONResponse:
        log.warning("no model: %s", exc)
        return error_response(503, NO_MODEL)

    @app.exception_handler(ConfigError)
    async def server_setup(request: Request, exc: ConfigError) -> JSONResponse:
        # The server's own files (key file, settings): the text names paths, so it stays in the log.
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
        return error_response(503, UNAVAILABLE)

    @app.exception_handler(ChurnguardError)
    async def user_error(request: Request, exc: ChurnguardError) -> JSONResponse:
        return error_response(400, str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error: it has been logged; please report it")
