"""Jinja2 rendering of the dashboard's pages, with the number formats and security headers they share."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

TEMPLATES = Path(__file__).parent / "templates"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def money(value: Any, decimals: int = 0) -> str:
    """Thousands separators; an em dash for missing values."""
    return f"{value:,.{decimals}f}" if _is_number(value) else "—"


def percent(value: Any, decimals: int = 0) -> str:
    return f"{value * 100:.{decimals}f}%" if _is_number(value) else "—"


def number(value: Any) -> str:
    """A feature value as a person reads it: integers without decimals, others with up to two."""
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not _is_number(value):
        return str(value)
    if float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def day(value: Any) -> str:
    """An ISO date or timestamp as '23 Nov 2026' (the input unchanged when it is not one)."""
    if not value:
        return "—"
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return f"{moment.day} {moment:%b %Y}"


def quote_id(value: Any) -> str:
    """A customer id as one URL path segment: every reserved character quoted, so ``../x`` or ``a/b``
    stay inside /customers/ ('.' and '..' alone, which browsers resolve, are quoted too)."""
    text = quote(str(value), safe="")
    return text.replace(".", "%2E") if text in (".", "..") else text


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(money=money, percent=percent, number=number, day=day, quote_id=quote_id)
    return env


_ENV = _environment()


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """The named template as an HTML response with the dashboard's security headers."""
    html = _ENV.get_template(template).render(request=request, **context)
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
