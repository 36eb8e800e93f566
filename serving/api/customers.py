"""Stored scores of known customers (computed by batch scoring; reading them costs no model work).

Async routes over the store's awaitable reads: no thread-pool hop for the request or its response
validation, so latency stays flat as concurrency grows (``serving.backends``).

``GET /v1/customers/{id}`` is the API's hottest route, so its common case, a valid bearer key and a
well-formed id, skips FastAPI's generic per-request work (:class:`StoredScoreRoute`)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request, Response, status
from fastapi.routing import APIRoute

from serving.api.deps import ApiKeyDep, StateDep, bearer_token, field_response, reads_of, verify_key
from serving.schemas import BatchRequest, BatchResponse, CustomerScore, ErrorResponse
from serving.state import AppState

MAX_ID_LENGTH = 200
_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorResponse},
    403: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
    413: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
}


async def stored_score(state: AppState, customer_id: str) -> dict[str, Any]:
    """The customer's stored score, or 404 (one definition for both ways the route answers)."""
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


class StoredScoreRoute(APIRoute):
    """``GET /v1/customers/{id}`` answered without FastAPI's dependency solving in its common case.

    Solving the route's dependencies (state, bearer scheme, key, path parameter) generically cost more CPU
    than reading the score (py-spy on a loaded server). When the request carries a bearer token that is a
    valid key and an id the route accepts, this handler checks them directly and validates and serialises
    the stored score with the route's own response field, so the answer is byte for byte the one the
    generic handler gives (tests/serving/test_api.py compares them). Every other request (no key, a wrong
    key, a dashboard session, an id too long) goes to the generic handler, which stays the one source of
    those answers; errors raised here (404, a store that does not answer) go through the same handlers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        generic = super().get_route_handler()
        field = self.response_field
        assert field is not None, "the stored-score route declares its response model"

        async def handler(request: Request) -> Response:
            token = bearer_token(request.headers.get("authorization"))
            customer_id = request.path_params.get("customer_id")
            if token is None or not isinstance(customer_id, str) or len(customer_id) > MAX_ID_LENGTH:
                return await generic(request)
            state: AppState = request.app.state.churnguard
            if verify_key(state, token) is None:
                return await generic(request)  # 403, counted by the throttle, from the one place
            return await field_response(field, await stored_score(state, customer_id), request, generic)

        return handler


router = APIRouter(prefix="/v1/customers", tags=["customers"])


async def get_customer(
    customer_id: Annotated[str, Path(max_length=MAX_ID_LENGTH, examples=["C0000001"])],
    state: StateDep,
    _key: ApiKeyDep,
) -> dict[str, object]:
    """Churn probability, expected revenue over the horizon, lifetime value (``clv``, discounted), value at
    risk, reasons and action from the latest batch scoring."""
    return await stored_score(state, customer_id)


router.add_api_route(
    "/{customer_id:path}",
    get_customer,
    methods=["GET"],
    response_model=CustomerScore,
    responses=_ERRORS,
    summary="Latest score of one customer (ids may contain '/': CRM ids are used as they are)",
    route_class_override=StoredScoreRoute,
)


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
