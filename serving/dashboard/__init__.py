"""Retention dashboard: server-rendered pages on the API's app, behind a sign-in with an API key.

``install_dashboard(app)`` adds the session middleware, the static files under ``/static``, the sign-in and
sign-out routes, the pages (``/``, ``/customers``, ``/customers.csv``, ``/customers/{id}``, evaluation plots
under ``/plots``, the monitoring pages ``/movements`` and ``/model-health``) and the redirect (303) to the sign-in page for requests without a valid session.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from serving.dashboard import auth, campaigns, customer, customers, monitoring, overview
from serving.dashboard.context import SignInRequired
from serving.dashboard.middleware import SessionMiddleware

STATIC = Path(__file__).parent / "static"


async def _to_sign_in(request: Request, exc: Exception) -> RedirectResponse:
    location = exc.location() if isinstance(exc, SignInRequired) else "/sign-in"
    return RedirectResponse(location, status_code=303, headers={"Cache-Control": "no-store"})


def install_dashboard(app: FastAPI) -> None:
    """Mount the dashboard's routes and session handling on the app."""
    for router in (
        auth.router,
        overview.router,
        monitoring.router,
        customers.router,
        customer.router,
        campaigns.router,
    ):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="dashboard-static")
    app.add_exception_handler(SignInRequired, _to_sign_in)
    app.add_middleware(SessionMiddleware)
