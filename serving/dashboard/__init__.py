"""Retention dashboard (server-rendered pages on the API's app)."""

from __future__ import annotations

from fastapi import FastAPI


def install_dashboard(app: FastAPI) -> None:
    """Mount the dashboard's routes and session handling on the app."""
