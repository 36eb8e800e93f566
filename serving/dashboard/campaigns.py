"""The campaigns page (``/campaigns``): each campaign's plan and measured results, per action."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from serving.dashboard.context import SessionDep, StateDep
from serving.dashboard.render import render

router = APIRouter(include_in_schema=False)


@router.get("/campaigns", response_class=HTMLResponse)
def campaigns(request: Request, session: SessionDep, state: StateDep) -> HTMLResponse:
    """Every campaign in the store, with its latest report's figures per action."""
    campaigns = state.campaigns
    shown: list[dict[str, Any]] = []
    for entry in campaigns.list_campaigns():
        report = campaigns.stored_report(entry["campaign"]) if entry["reported_at"] else None
        shown.append({**entry, "report": report})
    loaded = state.models.current
    return render(
        request,
        "campaigns.html",
        session=session,
        nav="campaigns",
        model=loaded.info if loaded else None,
        campaigns=shown,
    )
