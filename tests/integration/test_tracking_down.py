"""A real ``mlflow server`` as the tracking store: training registers into it, the API serves from it, and
the API rides out the tracking server dying and coming back."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pandas as pd
import pytest

from features.settings import get_settings
from serving.store import CustomerQuery, SqliteScoreStore
from tests.conftest import SMALL_TRAIN, Trained, clear_settings_caches
from tests.integration.servers import Servers, bearer, free_port, wait_until
from training.config import TrainConfig
from training.pipeline import train

pytestmark = pytest.mark.integration

# mlflow's HTTP client retries a refused connection 7 times with exponential back-off (about 250 s) before
# the model watcher hears of it; an operator who wants prompt readiness reports bounds that. See the report.
PROMPT_REGISTRY_ERRORS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables (and re-read churnguard settings) for the duration of the block."""
    saved = {k: os.environ.get(k) for k in values}
    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    os.environ.update(values)
    clear_settings_caches()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        clear_settings_caches()
        mlflow.set_tracking_uri(tracking)
        mlflow.set_registry_uri(registry)


def _model_input(model: Any, records: list[dict[str, Any]]) -> pd.DataFrame:
    """Feature records as the pyfunc's signature wants them: text as str, every number as float64."""
    frame = pd.DataFrame(records)
    columns = {}
    for spec in model.metadata.get_input_schema().inputs:
        text = str(spec.type).lower().endswith("string")
        columns[spec.name] = frame[spec.name].astype(str) if text else frame[spec.name].astype("float64")
    return pd.DataFrame(columns)


def _ready(client: httpx.Client) -> dict[str, Any]:
    return client.get("/ready").json()  # type: ignore[no-any-return]


def test_train_and_serve_against_mlflow_server_that_dies_and_returns(
    trained: Trained, servers: Servers, tmp_path: Path
) -> None:
    store_dir = tmp_path / "tracking"
    store_dir.mkdir()
    backend, artifacts = store_dir / "mlflow.db", store_dir / "artifacts"
    tracking = servers.mlflow(backend, artifacts)
    uri = tracking.base_url
    serving_home = tmp_path / "serving-home"
    serving_home.mkdir()
    for name in ("scores.db", "api_keys.json"):
        shutil.copy2(trained.home / name, serving_home / name)
    records = [
        r["features"] for r in SqliteScoreStore(serving_home / "scores.db").query(CustomerQuery(limit=5))[0]
    ]

    # Training in-process against the server, then the champion loads with plain mlflow from it.
    with environment(CHURNGUARD_TRACKING_URI=uri, CHURNGUARD_HOME=str(tmp_path / "train-home")):
        result = train(trained.data, TrainConfig.model_validate(SMALL_TRAIN), get_settings())
        assert result.version == "1" and result.promoted
        assert mlflow.get_tracking_uri() == uri
        model = mlflow.pyfunc.load_model("models:/churnguard@champion")
        predicted = model.predict(_model_input(model, records))
        assert predicted["churn_probability"].between(0, 1).all() and len(predicted) == len(records)
        run = mlflow.MlflowClient().get_run(result.run_id)
        assert run.info.status == "FINISHED"
    assert not (tmp_path / "train-home" / "mlflow.db").exists(), (
        "the run went to a local store, not the server"
    )
    assert any(artifacts.rglob("bundle.json")), "the model's files are not in the server's artifact root"

    api = servers.api(
        serving_home, CHURNGUARD_TRACKING_URI=uri, CHURNGUARD_POLL_SECONDS="1", **PROMPT_REGISTRY_ERRORS
    )
    some_id = SqliteScoreStore(serving_home / "scores.db").query(CustomerQuery(limit=1))[0][0]["customer_id"]
    body = {"records": [{"customer_id": "what-if", "features": records[0]}]}
    with httpx.Client(base_url=api.base_url, headers=bearer(trained.api_key), timeout=30) as client:
        assert _ready(client)["status"] == "ready"
        before = client.post("/v1/score", json=body).json()["scores"][0]
        assert before["model"]["version"] == "1" and before["model"]["uri"] == "models:/churnguard@champion"

        tracking.kill()  # SIGKILL: a crash, not a shutdown
        killed_at = time.monotonic()
        degraded = wait_until(
            lambda: (r := _ready(client))["status"] == "degraded" and r,
            timeout=60,
            what="/ready to report the registry down",
        )
        took = time.monotonic() - killed_at
        assert degraded["registry_reachable"] is False
        assert degraded["model_version"] == "1"
        assert (
            "registry unreachable" in degraded["detail"]
            and "serving the model already loaded" in degraded["detail"]
        )
        for _ in range(5):  # the model in memory keeps answering, several poll rounds into the outage
            scored = client.post("/v1/score", json=body)
            assert scored.status_code == 200
            assert scored.json()["scores"][0]["churn_probability"] == before["churn_probability"]
            assert client.get(f"/v1/customers/{some_id}").status_code == 200
            assert client.get("/v1/model").json()["model"]["version"] == "1"
            time.sleep(0.5)
        assert _ready(client)["status"] == "degraded"

        servers.mlflow(backend, artifacts, port=tracking.port)  # the same store comes back on the same port
        recovered = wait_until(
            lambda: (r := _ready(client))["status"] == "ready" and r, timeout=60, what="/ready to recover"
        )
        assert recovered["registry_reachable"] is True and recovered["detail"] is None
        assert recovered["model_version"] == "1"
        assert client.post("/v1/score", json=body).status_code == 200
    print(f"\ntracking server down: /ready said degraded {took:.1f}s after the kill, recovered after restart")


def test_api_started_while_tracking_server_is_down_comes_up_and_recovers(
    trained: Trained, api_home: Path, servers: Servers
) -> None:
    port = free_port()  # nothing listens here yet
    uri = f"http://127.0.0.1:{port}"
    api = servers.api(
        api_home, CHURNGUARD_TRACKING_URI=uri, CHURNGUARD_POLL_SECONDS="1", **PROMPT_REGISTRY_ERRORS
    )
    some_id = SqliteScoreStore(api_home / "scores.db").query(CustomerQuery(limit=1))[0][0]["customer_id"]
    body: dict[str, Any] = {"records": [{"features": {}}]}
    with httpx.Client(base_url=api.base_url, headers=bearer(trained.api_key), timeout=30) as client:
        down = client.get("/ready")
        assert down.status_code == 503 and down.json()["status"] == "not_ready"
        assert client.post("/v1/score", json=body).status_code == 503  # no model to score with
        assert client.get(f"/v1/customers/{some_id}").status_code == 200  # stored scores need no registry

        # The same registry (a copy of the trained one) comes up where the API looks for it.
        servers.mlflow(api_home / "mlflow.db", api_home / "artifacts", port=port)
        ready = wait_until(
            lambda: (r := _ready(client))["status"] == "ready" and r, timeout=60, what="the model to load"
        )
        assert ready["model_version"] == trained.version and ready["registry_reachable"] is True
        assert client.post("/v1/score", json=body).status_code == 200
    # While it was down, /ready must have said why: the registry, not a missing model.
    assert down.json()["registry_reachable"] is False, down.json()
