"""On-demand scoring of caller-supplied feature values (CRM-computed features, what-if questions).

The route is ``async`` and hands its CPU work (the value checks, scoring, the annotations) to a worker
thread: as a plain ``def`` route it cost two hops per request (the endpoint, then FastAPI validating the
response), and every waiting request held a thread competing for the interpreter. Requests wait on the
event loop for one of ``score_threads`` workers (about one per core: LightGBM releases the interpreter
while it computes), and the requests that gathered meanwhile are scored in one call
(:mod:`serving.api.score_batches`): the same scores, exact reasons included, for less work per record."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from functools import lru_cache, partial
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.routing import APIRoute
from pydantic import ValidationError

from features.bundle import FeatureInfo
from features.value import records_columns
from serving.api.deps import ApiKeyDep, ModelDep, StateDep, bearer_token, field_response, verify_key
from serving.api.score_batches import ScoreBatcher, Scored, ScoreJob, job_spans
from serving.model_source import LoadedModel
from serving.schemas import ErrorResponse, ScoreRecord, ScoreRequest, ScoreResponse
from serving.scoring import Scorer
from serving.state import AppState

router = APIRouter(prefix="/v1", tags=["score"])


# Columns a features file carries besides the features (``churnguard features`` writes as_of).
IGNORED = frozenset({"as_of", "customer_id"})
# Units whose values cannot be negative, and the bound beyond which no value is plausible for any unit.
NON_NEGATIVE = frozenset({"count", "days", "hours", "money", "share", "score"})
MAX_MAGNITUDE = 1e12


def _problem(info: FeatureInfo, value: float | str | None) -> str | None:
    """What is wrong with one supplied value, or None."""
    name = info.name
    if value is None:
        return None
    if info.categories is not None:
        return None if isinstance(value, str) else f"'{name}' takes one of {info.categories[:10]}"
    if isinstance(value, str):
        return f"'{name}' takes a number, not text"
    if abs(value) > MAX_MAGNITUDE:
        return f"'{name}' = {value:g} is beyond any plausible value (at most {MAX_MAGNITUDE:g} in size)"
    if info.unit in NON_NEGATIVE and value < 0:
        return f"'{name}' is a {info.unit} value and cannot be negative ({value:g})"
    if info.unit == "share" and value > 1:
        return f"'{name}' is a share between 0 and 1, not {value:g}"
    return None


def _check(body: ScoreRequest, model: LoadedModel) -> list[dict[str, object]]:
    """Unknown features and values of the wrong kind or out of range, each with its field path."""
    problems: list[dict[str, object]] = []
    infos = {f.name: f for f in model.bundle.features}
    for i, record in enumerate(body.records):
        for name, value in record.features.items():
            loc = ["body", "records", i, "features", name]
            info = infos.get(name)
            if info is None:
                if name not in IGNORED:
                    problems.append(
                        {"loc": loc, "msg": f"unknown feature '{name}'; GET /v1/model lists the features"}
                    )
            elif (message := _problem(info, value)) is not None:
                problems.append({"loc": loc, "msg": message})
    return problems


def _unknown_categories(features: dict[str, float | str | None], infos: list[FeatureInfo]) -> dict[str, str]:
    """Category values the model never saw (scored as unknown, as the model treats them)."""
    unknown = {}
    for info in infos:
        value = features.get(info.name)
        if info.categories is not None and isinstance(value, str) and value.lower() not in info.categories:
            unknown[info.name] = value
    return unknown


@lru_cache(maxsize=1024)
def _value_fields(fields: frozenset[str]) -> frozenset[str]:
    """The supplied fields the lifetime value reads, by :func:`features.value.records_columns`' contract."""
    return frozenset(records_columns([dict.fromkeys(fields)]))


def batch_group(body: ScoreRequest) -> frozenset[str]:
    """The requests this one may be scored with: those whose records supply the same fields the value
    reads. Which of those columns a batch supplies at all decides how the value is computed (records that
    name a column others lack would change the others' figures), while any other field is read record by
    record, so requests that differ only in those batch (CRM systems leave out unknown values)."""
    return _value_fields(frozenset(name for record in body.records for name in record.features))


def _annotate(record: dict[str, object], request: ScoreRecord, model: LoadedModel) -> dict[str, object]:
    """What the response says about the supplied values besides the score."""
    features = request.features
    record["missing_features"] = [n for n in model.bundle.feature_names if features.get(n) is None]
    record["unknown_categories"] = _unknown_categories(features, model.bundle.features)
    record["ignored_fields"] = sorted(IGNORED & features.keys())
    return record


def score_jobs(state: AppState, jobs: list[ScoreJob]) -> list[Scored | BaseException]:
    """Check, score and annotate the records of a batch of requests (in a worker thread: all CPU work).

    Each request is checked on its own (its problems are its own 422); the valid ones are scored in one
    call, which gives every record the score it gets alone (rows are scored independently)."""
    results: list[Scored | BaseException] = []
    valid: list[ScoreJob] = []
    for job in jobs:
        problems = _check(job.body, job.model)
        results.append(HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, problems) if problems else [])
        if not problems:
            valid.append(job)
    if not valid:
        return results
    first = valid[0]
    requests = [record for job in valid for record in job.body.records]
    scorer = Scorer.for_model(first.model, state.playbook, state.settings.top_k)
    scored = scorer.score_records(
        [r.customer_id for r in requests], [dict(r.features) for r in requests], first.as_of
    )
    observe = state.metrics.scores.observe
    for record, request in zip(scored, requests, strict=True):
        _annotate(record, request, first.model)
        observe(float(record["churn_probability"]))  # type: ignore[arg-type]
    spans = iter(job_spans(valid))
    for i, result in enumerate(results):
        if not isinstance(result, BaseException):
            begin, end = next(spans)
            results[i] = scored[begin:end]
    return results


def _batcher(state: AppState) -> ScoreBatcher:
    """The app's score batcher (created in the event loop that uses it)."""
    if state.score_batcher is None:
        state.score_batcher = ScoreBatcher(partial(score_jobs, state), state.settings.score_threads)
    return state.score_batcher


async def score_request(state: AppState, body: ScoreRequest, model: LoadedModel) -> dict[str, object]:
    """The answer to a parsed request whose key is valid (one definition for both ways the route answers)."""
    if len(body.records) > state.settings.batch_limit:
        raise HTTPException(
            413,
            f"{len(body.records)} records; the limit is {state.settings.batch_limit}",
        )
    as_of = datetime.now(UTC).date().isoformat()
    job = ScoreJob(body, model, as_of, batch_group(body))
    return {"scores": await _batcher(state).score(job)}


class ScoreRoute(APIRoute):
    """``POST /v1/score`` answered without FastAPI's dependency solving in its common case.

    Solving the route's dependencies and parsing the body generically cost about as much of the event
    loop as scoring a record in a batch. A request with a valid bearer key, a JSON body that parses into
    a valid request and a loaded model is checked and parsed here (pydantic straight from the bytes) and
    answered through the route's own response field, so the bytes are the generic handler's
    (tests/serving/test_score_batches.py compares them). Every other request (no key or a wrong one, a
    dashboard session, a body that does not parse, no model) goes to the generic handler, which stays the
    one source of those answers; errors raised here (413, 422, 503) go through the same handlers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        generic = super().get_route_handler()
        field = self.response_field
        assert field is not None, "the score route declares its response model"

        async def handler(request: Request) -> Response:
            token = bearer_token(request.headers.get("authorization"))
            if token is None or request.headers.get("content-type") != "application/json":
                return await generic(request)
            state: AppState = request.app.state.churnguard
            model = state.models.current
            if model is None or verify_key(state, token) is None:
                return await generic(request)
            try:
                body = ScoreRequest.model_validate_json(await request.body())
            except ValidationError:  # the generic handler words the 422 (the body is kept for it)
                return await generic(request)
            return await field_response(field, await score_request(state, body, model), request, generic)

        return handler


async def score(body: ScoreRequest, state: StateDep, _key: ApiKeyDep, model: ModelDep) -> dict[str, object]:
    """Reasons are computed on demand (exact TreeSHAP). Missing features are treated as unknown and listed;
    category values unseen in training are listed in ``unknown_categories``. Negative counts, durations and
    amounts, shares above 1 and values beyond 1e12 are refused (422)."""
    return await score_request(state, body, model)


router.add_api_route(
    "/score",
    score,
    methods=["POST"],
    response_model=ScoreResponse,
    summary="Score feature values supplied by the caller",
    responses={
        401: {"model": ErrorResponse},
        403: {"model": ErrorResponse},
        413: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
        503: {"model": ErrorResponse},
    },
    route_class_override=ScoreRoute,
)
