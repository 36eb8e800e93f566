"""Concurrent POST /v1/score requests share model calls, and each still gets exactly its own answer."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, cast

import httpx
import pytest

from serving.api.score_batches import ScoreBatcher, Scored, ScoreJob
from serving.app import create_app
from serving.model_source import LoadedModel
from serving.schemas import ScoreRequest
from serving.scoring import Scorer
from tests.conftest import clear_settings_caches


def _request(*features: dict[str, Any]) -> ScoreRequest:
    return ScoreRequest.model_validate({"records": [{"customer_id": "c", "features": f} for f in features]})


class _Recorder:
    """A stand-in for the scoring core: echoes each record's ``x`` and records every call's batch."""

    def __init__(self, fail_on: float | None = None) -> None:
        self.calls: list[list[int]] = []
        self.kinds: list[set[tuple[int, object]]] = []  # per call: the (model, group) it held
        self.fail_on = fail_on
        self.release = threading.Event()

    def __call__(self, jobs: list[ScoreJob]) -> list[Scored | BaseException]:
        self.release.wait(5)  # hold the first call until the other requests have queued
        self.calls.append([job.size for job in jobs])
        self.kinds.append({(id(job.model), job.group) for job in jobs})
        xs = [[r.features["x"] for r in job.body.records] for job in jobs]
        if self.fail_on is not None and any(self.fail_on in x for x in xs):
            raise ValueError("this record breaks scoring")
        return [[{"x": x} for x in job_xs] for job_xs in xs]


def _run(recorder: _Recorder, bodies: list[tuple[object, ScoreRequest]], threads: int = 1) -> list[Any]:
    async def main() -> list[Any]:
        batcher = ScoreBatcher(recorder, threads)
        jobs = [
            # any object stands in for a loaded model: a batch holds one, compared by identity
            ScoreJob(body, cast(LoadedModel, model), "2026-12-01", frozenset(body.records[0].features))
            for model, body in bodies
        ]
        tasks = [asyncio.ensure_future(batcher.score(job)) for job in jobs]
        await asyncio.sleep(0.05)
        recorder.release.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    return asyncio.run(main())


def test_waiting_requests_share_a_call_and_each_gets_its_own_records() -> None:
    model = object()
    recorder = _Recorder()
    bodies = [(model, _request({"x": float(i)}, {"x": float(i) + 0.5})) for i in range(6)]
    results = _run(recorder, bodies)
    assert results == [[{"x": float(i)}, {"x": float(i) + 0.5}] for i in range(6)]
    assert len(recorder.calls) < 6 and sum(map(sum, recorder.calls)) == 12


def test_requests_for_another_model_or_group_are_never_in_the_same_call() -> None:
    old, new = object(), object()
    recorder = _Recorder()
    bodies = [
        (old, _request({"x": 1.0})),
        (new, _request({"x": 2.0})),
        (old, _request({"x": 3.0, "y": 1.0})),
        (old, _request({"x": 4.0})),
    ]
    results = _run(recorder, bodies)
    assert results == [[{"x": 1.0}], [{"x": 2.0}], [{"x": 3.0}], [{"x": 4.0}]]
    assert all(len(kinds) == 1 for kinds in recorder.kinds)
    assert sorted(recorder.calls) == [[1], [1], [1, 1]]  # the two 'old' requests with the same fields


def test_a_request_that_breaks_scoring_fails_alone() -> None:
    model = object()
    recorder = _Recorder(fail_on=13.0)
    bodies = [(model, _request({"x": x})) for x in (1.0, 2.0, 13.0, 4.0)]
    results = _run(recorder, bodies)
    assert [r if isinstance(r, list) else "error" for r in results] == [
        [{"x": 1.0}],
        [{"x": 2.0}],
        "error",
        [{"x": 4.0}],
    ]
    assert isinstance(results[2], ValueError)


def test_waiting_work_is_shared_among_the_free_threads() -> None:
    model = object()
    recorder = _Recorder()
    recorder.release.set()
    bodies = [(model, _request({"x": float(i)})) for i in range(8)]
    results = _run(recorder, bodies, threads=2)
    assert results == [[{"x": float(i)}] for i in range(8)]
    assert max(map(sum, recorder.calls)) <= 4  # neither thread took the whole queue


@pytest.fixture(scope="module")
def app(trained) -> Any:
    clear_settings_caches()
    return create_app()


def test_concurrent_requests_get_the_scores_each_gets_alone(
    app: Any, trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = {"recency_days": 20, "orders_365d": 10, "tenure_days": 400, "spend_total": 900.0}
    # the first six differ in fields the value does not read (complaints), so they may share a call
    bodies = [
        {
            "records": [
                {
                    "customer_id": f"c{i}",
                    "features": {**base, "recency_days": 20 + 15 * i}
                    | ({"unresolved_complaints_90d": i} if i % 2 else {}),
                }
            ]
        }
        for i in range(6)
    ]
    bodies.append({"records": [{"customer_id": "few", "features": {"recency_days": 200}}]})
    bodies.append({"records": [{"customer_id": "odd", "features": {"recency_days": -5}}]})  # a 422
    headers = {"Authorization": f"Bearer {trained.api_key}"}

    async def main() -> tuple[list[httpx.Response], list[httpx.Response]]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as client:
                alone = [await client.post("/v1/score", json=b) for b in bodies]
                together = await asyncio.gather(*(client.post("/v1/score", json=b) for b in bodies))
        return alone, list(together)

    batches: list[int] = []
    score_records = Scorer.score_records

    def counted(self: Scorer, ids: list[str], records: list[dict[str, object]], as_of: str) -> Any:
        batches.append(len(ids))
        return score_records(self, ids, records, as_of)

    monkeypatch.setattr(Scorer, "score_records", counted)
    alone, together = asyncio.run(main())
    assert len(batches) < 7 + 7  # some of the concurrent requests were scored together
    assert [r.status_code for r in together] == [200] * 7 + [422]
    assert "recency_days" in together[-1].json()["error"]["details"][0]["field"]
    assert [r.json() for r in together] == [r.json() for r in alone]


def test_the_short_way_answers_byte_for_byte_as_the_general_one(app: Any, trained) -> None:
    """A CRM's key and plain JSON take the route's short way; any other content type the general one."""
    from fastapi.testclient import TestClient

    bodies = [
        {"records": [{"customer_id": "a", "features": {"recency_days": 30, "orders_365d": 4}}]},
        {"records": [{"features": {"recency_days": 300}}, {"features": {"segment_hint": 1}}]},  # 422
        {"records": [{"features": {"recency_days": True}}]},  # 422 from the schema
        {"records": [{"features": {"tenure_days": 90, "as_of": "2026-01-01"}}]},
    ]
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {trained.api_key}"
        for body in bodies:
            raw = json.dumps(body).encode()
            short = client.post("/v1/score", content=raw, headers={"Content-Type": "application/json"})
            general = client.post(
                "/v1/score", content=raw, headers={"Content-Type": "application/json; charset=utf-8"}
            )
            assert short.status_code == general.status_code, body
            assert short.content == general.content, body
            assert short.headers["content-type"] == general.headers["content-type"]
        assert short.status_code == 200 and short.json()["scores"][0]["ignored_fields"] == ["as_of"]
