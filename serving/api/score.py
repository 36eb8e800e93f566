"""On-demand scoring of caller-supplied feature values (CRM-computed features, what-if questions).

The route is ``async`` and hands its CPU work (the value checks, scoring, the annotations) to a worker
thread in one hop: as a plain ``def`` route it cost two hops per request (the endpoint, then FastAPI
validating the response), and every waiting request held a thread competing for the interpreter. Here
requests wait on the event loop for one of ``score_threads`` workers (about one per core: LightGBM
releases the interpreter while it computes)."""

from __future__ import annotations

from datetime import UTC, datetime

import anyio
from anyio import to_thread
from fastapi import APIRouter, HTTPException, status

from features.bundle import FeatureInfo
from serving.api.deps import ApiKeyDep, ModelDep, StateDep
from serving.model_source import LoadedModel
from serving.schemas import ErrorResponse, ScoreRequest, ScoreResponse
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


def _score_body(body: ScoreRequest, state: AppState, model: LoadedModel) -> list[dict[str, object]]:
    """Check, score and annotate the records (in a worker thread: all of it is CPU work)."""
    problems = _check(body, model)
    if problems:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, problems)
    names = model.bundle.feature_names
    as_of = datetime.now(UTC).date().isoformat()
    records = Scorer.for_model(model, state.playbook, state.settings.top_k).score_records(
        [r.customer_id for r in body.records], [dict(r.features) for r in body.records], as_of
    )
    for record, request in zip(records, body.records, strict=True):
        record["missing_features"] = [n for n in names if request.features.get(n) is None]
        record["unknown_categories"] = _unknown_categories(request.features, model.bundle.features)
        record["ignored_fields"] = sorted(IGNORED & request.features.keys())
        state.metrics.scores.observe(float(record["churn_probability"]))  # type: ignore[arg-type]
    return records


def _score_limiter(state: AppState) -> anyio.CapacityLimiter:
    """The worker threads that run scoring (created in the event loop that uses them)."""
    if state.score_threads is None:
        state.score_threads = anyio.CapacityLimiter(state.settings.score_threads)
    return state.score_threads


@router.post(
    "/score",
    response_model=ScoreResponse,
    summary="Score feature values supplied by the caller",
    responses={
        401: {"model": ErrorResponse},
        403: {"model": ErrorResponse},
        413: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
        503: {"model": ErrorResponse},
    },
)
async def score(body: ScoreRequest, state: StateDep, _key: ApiKeyDep, model: ModelDep) -> dict[str, object]:
    """Reasons are computed on demand (exact TreeSHAP). Missing features are treated as unknown and listed;
    category values unseen in training are listed in ``unknown_categories``. Negative counts, durations and
    amounts, shares above 1 and values beyond 1e12 are refused (422)."""
    if len(body.records) > state.settings.batch_limit:
        raise HTTPException(
            413,
            f"{len(body.records)} records; the limit is {state.settings.batch_limit}",
        )
    scored = await to_thread.run_sync(_score_body, body, state, model, limiter=_score_limiter(state))
    return {"scores": scored}
