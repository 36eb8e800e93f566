"""On-demand scoring of caller-supplied feature values (CRM-computed features, what-if questions)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, status

from serving.api.deps import ApiKeyDep, ModelDep, StateDep
from serving.model_source import LoadedModel
from serving.schemas import ErrorResponse, ScoreRequest, ScoreResponse
from serving.scoring import score_records

router = APIRouter(prefix="/v1", tags=["score"])


def _check(body: ScoreRequest, model: LoadedModel) -> list[dict[str, object]]:
    """Unknown features and values of the wrong kind, each with its field path."""
    problems: list[dict[str, object]] = []
    infos = {f.name: f for f in model.bundle.features}
    for i, record in enumerate(body.records):
        for name, value in record.features.items():
            loc = ["body", "records", i, "features", name]
            info = infos.get(name)
            if info is None:
                problems.append(
                    {"loc": loc, "msg": f"unknown feature '{name}'; GET /v1/model lists the features"}
                )
            elif info.categories is None and isinstance(value, str):
                problems.append({"loc": loc, "msg": f"'{name}' takes a number, not text"})
            elif info.categories is not None and value is not None and not isinstance(value, str):
                problems.append({"loc": loc, "msg": f"'{name}' takes one of {info.categories[:10]}"})
    return problems


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
def score(body: ScoreRequest, state: StateDep, _key: ApiKeyDep, model: ModelDep) -> dict[str, object]:
    """Reasons are computed on demand (exact TreeSHAP). Missing features are treated as unknown and listed."""
    if len(body.records) > state.settings.batch_limit:
        raise HTTPException(
            413,
            f"{len(body.records)} records; the limit is {state.settings.batch_limit}",
        )
    problems = _check(body, model)
    if problems:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, problems)
    names = model.bundle.feature_names
    as_of = datetime.now(UTC).date().isoformat()
    records = score_records(
        model.bundle,
        [r.customer_id for r in body.records],
        [dict(r.features) for r in body.records],
        state.playbook,
        model.info,
        as_of,
        state.settings.top_k,
    )
    for record, request in zip(records, body.records, strict=True):
        record["missing_features"] = [n for n in names if request.features.get(n) is None]
        state.metrics.scores.observe(float(record["churn_probability"]))  # type: ignore[arg-type]
    return {"scores": records}
