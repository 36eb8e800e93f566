"""The HTTP API against an attacker's first minutes and a new user's first hour (issue #18): bounded
metrics, one error format, no paths or tracebacks to clients, safe headers and files, throttled guessing,
and input that is refused when it cannot be right (in-process TestClient on the shared trained model)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from serving.app import create_app
from serving.metrics import Metrics
from serving.middleware import AuthThrottleMiddleware, ThrottleSettings
from serving.settings import ServingSettings
from serving.store import CustomerQuery, SqliteScoreStore
from tests.conftest import Trained, clear_settings_caches

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def client(trained: Trained) -> Iterator[TestClient]:
    clear_settings_caches()
    with TestClient(create_app()) as test_client:
        test_client.headers["Authorization"] = f"Bearer {trained.api_key}"
        yield test_client


@pytest.fixture(scope="module")
def card(client: TestClient) -> dict[str, Any]:
    return client.get("/v1/model").json()  # type: ignore[no-any-return]


@pytest.fixture
def own_tracking_store(tmp_path: Path) -> Iterator[str]:
    """A tracking URI of this test's own; the process-wide MLflow URIs an app's start-up sets are put back."""
    import mlflow

    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    yield f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)
    if saved is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = saved


def feature(card: dict[str, Any], *, unit: str | None = None, categorical: bool = False) -> str:
    """The name of a model feature of the given kind."""
    for f in card["features"]:
        if (f["categories"] is not None) == categorical and (unit is None or f["unit"] == unit):
            return str(f["name"])
    pytest.skip(f"the trained model has no {'categorical' if categorical else unit} feature")


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body  # the one format, never FastAPI's {"detail": ...}
    return body["error"]  # type: ignore[no-any-return]


def metric_value(text: str, line_start: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


# -- 3: /metrics is bounded and not public ---------------------------------------------------------------
def test_invented_methods_and_paths_do_not_grow_metrics(client: TestClient) -> None:
    for i in range(5):  # every series these requests can touch exists once warmed up, /metrics' own too
        client.request(f"WARM{i}", "/v1/model")
        client.get(f"/warm-{i}")
        client.get("/metrics")
    before = len(client.get("/metrics").content)
    for i in range(200):
        assert client.request(f"INVENTED{i}", "/v1/model").status_code == 405
        assert client.get(f"/no/such/path/{i}").status_code == 404
    text = client.get("/metrics").text
    assert len(text) - before < 1000, "new series were added"
    assert "INVENTED" not in text and "/no/such/path" not in text
    assert 'method="other"' in text and 'route="unmatched"' in text
    assert 'route="/v1/customers/{customer_id:path}"' in text or 'route="/v1/model"' in text


def test_metrics_need_a_key_unless_configured(trained: Trained) -> None:
    scrape = "s" * 24
    with TestClient(create_app(ServingSettings(metrics_key=SecretStr(scrape)))) as app:
        assert app.get("/metrics").status_code == 401
        assert error_of(app.get("/metrics", headers={"Authorization": "Bearer nope"}))["code"] == "forbidden"
        assert app.get("/metrics", headers={"Authorization": f"Bearer {scrape}"}).status_code == 200
        assert app.get("/metrics", headers={"Authorization": f"Bearer {trained.api_key}"}).status_code == 200
    with TestClient(create_app(ServingSettings(metrics_access="public"))) as app:
        assert "churnguard_requests_total" in app.get("/metrics").text
    with TestClient(create_app(ServingSettings(metrics_access="off"))) as app:
        off = app.get("/metrics", headers={"Authorization": f"Bearer {trained.api_key}"})
        assert off.status_code == 404 and "turned off" in error_of(off)["message"]
    with pytest.raises(ValueError, match="metrics_key"):
        ServingSettings(metrics_key=SecretStr("short"))


# -- 4 and 5: one error format, no 500 from any body ------------------------------------------------------
def test_lone_surrogates_are_a_422_without_a_traceback(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for path, raw in (
        ("/v1/customers/score", b'{"customer_ids": ["\\ud800"]}'),
        ("/v1/customers/score", b'{"customer_ids": ["ok", "a\\udfffb"]}'),
        ("/v1/score", b'{"records": [{"customer_id": "\\ud800", "features": {}}]}'),
        ("/v1/score", b'{"records": [{"features": {"\\ud800": 1}}]}'),
        ("/v1/score", b'{"records": [{"features": {"recency_days": "\\ud800"}}]}'),
    ):
        response = client.post(path, content=raw, headers=JSON)
        assert response.status_code == 422, (path, raw, response.text)
        assert "surrogate" in error_of(response)["message"]
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("method", "path", "raw", "status"),
    [
        ("GET", "/no-such-page", None, 404),
        ("GET", "/v1/nothing/here", None, 404),
        ("DELETE", "/v1/score", None, 405),
        ("PUT", "/v1/model", None, 405),
        ("BREW", "/sign-out", None, 405),
        ("POST", "/v1/score", b"[" * 1000 + b"]" * 1000, 422),
        ("POST", "/v1/score", b'{"records": [{"features": {"recency_days": ' + b"9" * 5000 + b"}}]}", 422),
        ("POST", "/v1/customers/score", b'{"customer_ids": ' + b"[" * 5000 + b"]" * 5000 + b"}", 422),
    ],
)
def test_every_error_has_the_one_format(
    client: TestClient, method: str, path: str, raw: bytes | None, status: int
) -> None:
    response = client.request(method, path, content=raw, headers=JSON if raw else {})
    assert response.status_code == status, response.text
    error = error_of(response)
    assert error["code"] and error["message"]
    if status == 405:
        assert response.headers["allow"] and "allowed:" in error["message"]


# -- 6: no paths to clients -------------------------------------------------------------------------------
def test_ready_and_key_file_errors_keep_paths_in_the_log(
    tmp_path: Path, trained: Trained, caplog: pytest.LogCaptureFixture, own_tracking_store: str
) -> None:
    caplog.set_level(logging.WARNING)
    secret_dir = tmp_path / "private-folder-name"
    broken_keys = secret_dir / "keys.json"
    secret_dir.mkdir()
    broken_keys.write_text("{not json", encoding="utf-8")
    settings = ServingSettings(
        home=tmp_path,
        model_uri=str(secret_dir / "no-model-here"),
        keys_path=broken_keys,
        tracking_uri=own_tracking_store,
    )
    with TestClient(create_app(settings)) as app:
        ready = app.get("/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
        keyed = app.get("/v1/model", headers={"Authorization": f"Bearer {trained.api_key}"})
        assert keyed.status_code == 503 and error_of(keyed)["code"] == "service_unavailable"
        form = app.get("/sign-in").text
        token = form.split('name="csrf_token" value="')[1].split('"')[0]
        page = app.post("/sign-in", data={"api_key": trained.api_key, "csrf_token": token})
        assert page.status_code == 503 and "cannot be checked" in page.text
        for response in (ready, keyed, page):
            assert "private-folder-name" not in response.text and str(tmp_path) not in response.text
    assert "private-folder-name" in caplog.text  # the administrator still learns where


# -- 7: headers and files ---------------------------------------------------------------------------------
def test_api_answers_are_not_cached_or_sniffed(client: TestClient) -> None:
    for response in (
        client.get("/v1/model"),
        client.get("/v1/customers/nobody"),
        client.get("/v1/model", headers={"Authorization": ""}),
        client.post("/v1/score", content=b"x" * 2_000_000, headers=JSON),
    ):
        assert response.headers["cache-control"] == "no-store", response.status_code
        assert response.headers["x-content-type-options"] == "nosniff"


def test_docs_are_off_by_default_and_the_schema_is_local(trained: Trained) -> None:
    with TestClient(create_app()) as app:
        assert app.get("/docs").status_code == 404 and app.get("/redoc").status_code == 404
        assert "/v1/score" in app.get("/openapi.json").json()["paths"]
    with TestClient(create_app(ServingSettings(api_docs=True))) as app:
        assert app.get("/docs").status_code == 200


def test_new_serving_stores_are_private(tmp_path: Path) -> None:
    store = SqliteScoreStore(tmp_path / "scores.db")
    assert store.meta() == {} and store.query(CustomerQuery())[1] == 0
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def _open_and_write(path: Path, start: threading.Barrier, who: int, failures: list[str]) -> None:
    store = SqliteScoreStore(path)  # a process of its own: its own connection to a file not there yet
    start.wait()
    try:
        with store.transaction() as con:
            con.execute("CREATE TABLE IF NOT EXISTS seen (who INTEGER)")
            con.execute("INSERT INTO seen VALUES (?)", (who,))
    except sqlite3.OperationalError as exc:
        failures.append(repr(exc))


def test_processes_creating_the_same_new_store_at_once_all_get_it(tmp_path: Path) -> None:
    """Two planners, or the API and a batch run, starting on no store file: switching a new file to WAL
    needs it alone, and SQLite answered the loser 'database is locked' at once (half the runs of a two-way
    race) instead of letting it wait."""
    for round_ in range(12):
        path, start, failures = tmp_path / f"scores-{round_}.db", threading.Barrier(3), []
        threads = [
            threading.Thread(target=_open_and_write, args=(path, start, who, failures)) for who in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert failures == []
        with contextlib.closing(sqlite3.connect(path)) as con:
            assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert sorted(r[0] for r in con.execute("SELECT who FROM seen")) == [0, 1, 2]


# -- 8: throttled guessing --------------------------------------------------------------------------------
def test_failed_authentication_is_throttled_per_client(trained: Trained) -> None:
    settings = ServingSettings(auth_failure_burst=5, auth_failures_per_minute=6)
    right, wrong = {"Authorization": f"Bearer {trained.api_key}"}, {"Authorization": "Bearer cg_guess"}
    with TestClient(create_app(settings)) as guesser:
        for _ in range(3):
            assert guesser.get("/v1/model", headers=wrong).status_code == 403
        assert guesser.get("/v1/model").status_code == 401
        assert guesser.get("/metrics", headers=wrong).status_code == 403
        refused = guesser.get("/v1/model", headers=right)  # five failures: even the right key waits
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "too many failed" in error_of(refused)["message"]
        page = guesser.post("/sign-in", data={"api_key": "x", "csrf_token": "x"})
        assert page.status_code == 429 and "Too many sign-in" in page.text and page.headers["retry-after"]
        assert guesser.get("/health").status_code == 200  # nothing else is held up
        other = TestClient(guesser.app, client=("192.0.2.7", 4000))
        assert other.get("/v1/model", headers=right).status_code == 200  # another client is not
        metrics = other.get("/metrics", headers=right).text
        assert metric_value(metrics, 'churnguard_auth_failures_total{kind="api"}') == 4
        assert metric_value(metrics, 'churnguard_auth_failures_total{kind="metrics"}') == 1
        assert metric_value(metrics, "churnguard_auth_throttled_total") >= 2


def test_throttle_memory_is_bounded() -> None:
    async def forbidden(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 403, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def ignore(message: Any) -> None:
        return None

    throttle = AuthThrottleMiddleware(forbidden, ThrottleSettings(3, 60, max_clients=50), Metrics())

    async def guess_from_many_clients() -> None:
        for i in range(500):
            client = (f"10.0.{i // 250}.{i % 250}", 1)
            await throttle(
                {"type": "http", "method": "GET", "path": "/v1/model", "client": client}, ignore, ignore
            )

    asyncio.run(guess_from_many_clients())
    assert len(throttle._buckets) == 50


# -- 9: input sanity on /v1/score -------------------------------------------------------------------------
def test_implausible_feature_values_are_refused_naming_the_field(
    client: TestClient, card: dict[str, Any]
) -> None:
    count, days = feature(card, unit="count"), feature(card, unit="days")
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({count: True}, "features", "true/false"),
        ({days: False}, "features", "true/false"),
        ({count: -1}, f"features.{count}", "cannot be negative"),
        ({days: -0.5}, f"features.{days}", "cannot be negative"),
        ({days: 1e300}, f"features.{days}", "beyond any plausible value"),
    ]
    share = next((f["name"] for f in card["features"] if f["unit"] == "share"), None)
    if share:
        cases.append(({share: 1.5}, f"features.{share}", "between 0 and 1"))
    for features, field, words in cases:
        response = client.post("/v1/score", json={"records": [{"features": features}]})
        assert response.status_code == 422, features
        error = error_of(response)
        assert words in error["message"], error
        assert any(d["field"].endswith(field) for d in error["details"]), error


def test_unknown_categories_are_listed_and_as_of_is_ignored(client: TestClient, card: dict[str, Any]) -> None:
    category = feature(card, categorical=True)
    known = next(f["categories"][0] for f in card["features"] if f["name"] == category)
    features_row = {"as_of": "2026-11-01", "customer_id": "C1", feature(card, unit="count"): 3}
    body = {
        "records": [
            {"features": {**features_row, category: "Atlantis-Plan-9"}},
            {"features": {**features_row, category: known}},
        ]
    }
    response = client.post("/v1/score", json=body)
    assert response.status_code == 200, response.text
    unseen, seen = response.json()["scores"]
    assert unseen["unknown_categories"] == {category: "Atlantis-Plan-9"}
    assert seen["unknown_categories"] == {}
    assert unseen["ignored_fields"] == ["as_of", "customer_id"]


# -- /ready and model warnings ---------------------------------------------------------------------------
def test_ready_names_the_models_warnings_and_stays_200(trained: Trained) -> None:
    with TestClient(create_app()) as app:
        loaded = app.app.state.churnguard.models.current  # type: ignore[attr-defined]
        loaded.bundle.metadata["warnings"] = ["calibration: ECE 0.12 above the guard 0.10"]
        ready = app.get("/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert ready.json()["warnings"] == ["calibration: ECE 0.12 above the guard 0.10"]
