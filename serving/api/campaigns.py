"""Planned campaigns' contact lists and measured campaigns' reports (written by ``churnguard campaign``), read
from the store in force (:mod:`serving.campaign_store`): a server store that does not answer is a 503."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, status

from serving.api.deps import ApiKeyDep, StateDep
from serving.schemas import ErrorResponse

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"])
_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorResponse},
    403: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
    503: {"model": ErrorResponse},
}
CampaignName = Annotated[str, Path(max_length=200, examples=["spring_recovery"])]


@router.get("", responses=_ERRORS, summary="Campaigns planned or measured")
def get_campaigns(state: StateDep, _key: ApiKeyDep) -> dict[str, Any]:
    """Every campaign in the store: its plan (if planned here) and when it was last reported."""
    return {"campaigns": state.campaigns.list_campaigns()}


@router.get("/{campaign}/report", responses=_ERRORS, summary="A campaign's measured results")
def get_report(campaign: CampaignName, state: StateDep, _key: ApiKeyDep) -> dict[str, Any]:
    """Per action: retention and spend in treatment vs control, incremental customers kept, incremental
    contribution, cost and ROI with 95% intervals, warnings and the multiple-testing note."""
    report = state.campaigns.stored_report(campaign)
    if report is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"no report for campaign '{campaign}': run `churnguard campaign report --data DIR` first",
        )
    return report


@router.get("/{campaign}/contacts", responses=_ERRORS, summary="A planned campaign's assignments")
def get_contacts(
    campaign: CampaignName,
    state: StateDep,
    _key: ApiKeyDep,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """The customers of a planned campaign, treatment and control, with the assignment probability and
    the figures behind each choice (a page of ``limit`` rows from ``offset``)."""
    contacts = state.campaigns.stored_contacts(campaign, limit=limit, offset=offset)
    if contacts is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"no planned campaign '{campaign}': plan it with `churnguard campaign plan`",
        )
    return contacts
