"""Stored scores of known customers (computed by batch scoring; reading them costs no model work).

Async routes over the store's awaitable reads: no thread-pool hop for the request or its response
validation, so latency stays flat as concurrency grows (``serving.backends``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status

from serving.api.deps import ApiKeyDep, StateDep, reads_of
from serving.schemas import BatchRequest, BatchResponse, CustomerScore, ErrorResponse

router = APIRouter(prefix="/v1/customers", tags=["customers"])
_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorResponse},
    403: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
    413: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
}


@router.get(
    "/{customer_id:path}",
    response_model=CustomerScore,
    responses=_ERRORS,
    summary="Latest score of one customer (ids may contain '/': CRM ids are used as they are)",
)
async def get_customer(
    customer_id: Annotated[str, Path(max_length=200, examples=["C0000001"])], state: StateDep, _key: ApiKeyDep
) -> dict[str, object]:
    """Churn probability, expected revenue over the horizon, lifetime value (``clv``, discounted), value at
    risk, reasons and action from the latest batch scoring."""
    if "\x00" in customer_id:  # no id holds a NUL, and a PostgreSQL text value cannot
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no score for that customer: the id holds a NUL")
    record = (await reads_of(state).get_many([customer_id])).get(customer_id)
    if record is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"no score for customer '{customer_id}': unknown id, or not active at the last batch scoring",
        )
    state.metrics.scores.observe(record["churn_probability"])
    return record


@router.post(
    "/score", response_model=BatchResponse, responses=_ERRORS, summary="Latest scores of many customers"
)
async def get_customers(body: BatchRequest, state: StateDep, _key: ApiKeyDep) -> dict[str, object]:
    """Up to the batch limit (default 1000) ids per request; unknown ids are listed in ``not_found``."""
    limit = state.settings.batch_limit
    if len(body.customer_ids) > limit:
        raise HTTPException(
            413,
            f"{len(body.customer_ids)} ids in one request; the limit is {limit}: split the batch",
        )
    ids = list(dict.fromkeys(body.customer_ids))
    found = await reads_of(state).get_many(ids)
    return {"scores": [found[i] for i in ids if i in found], "not_found": [i for i in ids if i not in found]}
