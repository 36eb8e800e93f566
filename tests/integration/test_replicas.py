"""Two API replicas on one PostgreSQL serving store and one PostgreSQL-backed ``mlflow server``.

What a company running several replicas behind a load balancer relies on: a key created once works on
every replica, a batch refresh during reads never shows a mixed set, a promotion reaches every replica
within the poll interval, losing the database makes every replica say so on ``/ready`` (and they recover
when it returns), and the fuzzing and auth sweep pass on the PostgreSQL-backed app too.

The database is "killed" by stopping a TCP proxy the replicas connect through (the shared PostgreSQL
server of the machine cannot be stopped safely); ``mlflow server`` talks to PostgreSQL directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from serving.encoding import STORE_JSON_COLUMNS
from serving.store import CustomerQuery, SqliteScoreStore
from tests.conftest import Trained
from tests.integration.servers import (
    LOOPBACK,
    MLFLOW,
    ServerProcess,
    Servers,
    _spawn,
    bearer,
    child_env,
    free_port,
    run_cli,
    wait_for_http,
    wait_until,
)
from tests.pg import fresh_database

pytestmark = pytest.mark.integration
pytest.importorskip("psycopg_pool")

POLL_SECONDS = 2.0
MODEL = "churnguard"


# -- a TCP proxy in front of PostgreSQL that the test can kill and bring back ----------------------------
class TcpProxy:
    """Forwards a loopback port to PostgreSQL in a thread of its own; :meth:`stop` closes the port and
    every connection through it (to the replicas, the database is gone), :meth:`start` opens it again."""

    def __init__(self, target_port: int = 5432) -> None:
        self.port = free_port()
        self.target_port = target_port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, LOOPBACK, self.port, reuse_address=True)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    def start(self) -> None:
        self._call(self._start())

    def stop(self) -> None:
        self._call(self._stop())

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


# -- the cluster: mlflow server on PostgreSQL, two replicas through the proxy -----------------------------
@dataclass
class Cluster:
    store_url: str  # direct, for the test's own writes
    tracking_uri: str
    proxy: TcpProxy
    replicas: list[ServerProcess]
    env: dict[str, str]  # a replica's settings, for CLI commands
    frame: pd.DataFrame
    meta: dict[str, Any]


def start_mlflow_on_postgres(url: str, folder: Path, log: Path) -> ServerProcess:
    """``mlflow server --backend-store-uri postgresql+psycopg://…`` (psycopg 3; MLflow creates its tables)."""
    port = free_port()
    argv = [
        str(MLFLOW),
        "server",
        "--backend-store-uri",
        url.replace("postgresql://", "postgresql+psycopg://", 1),
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    server = _spawn("mlflow server", argv, child_env(folder), port, log)
    try:
        wait_for_http(server, "/health", timeout=240)
    except BaseException:
        server.stop()
        raise
    return server


def register_copy(trained: Trained, tracking_uri: str, download_to: Path) -> str:
    """Register the trained champion's files as a new version on the tracking server; returns it."""
    import mlflow
    from mlflow import MlflowClient

    local = trained.home / "model-copy"
    if not local.exists():
        source = mlflow.artifacts.download_artifacts(
            f"models:/{MODEL}@champion",
            dst_path=str(download_to),
            tracking_uri=f"sqlite:///{trained.home / 'mlflow.db'}",
        )
        local = Path(source)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment = client.get_experiment_by_name("replicas") or None
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("replicas")
    run = client.create_run(experiment_id)
    client.log_artifacts(run.info.run_id, str(local), "model")
    client.set_terminated(run.info.run_id)
    with contextlib.suppress(Exception):
        client.create_registered_model(MODEL)
    version = client.create_model_version(MODEL, f"{run.info.artifact_uri}/model", run.info.run_id)
    wait_until(
        lambda: client.get_model_version(MODEL, version.version).status == "READY", timeout=60, what="version"
    )
    return str(version.version)


def promote(tracking_uri: str, version: str) -> None:
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri).set_registered_model_alias(
        MODEL, "champion", version
    )


@pytest.fixture(scope="module")
def cluster(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from serving.pg_store import PostgresScoreStore

    folder = tmp_path_factory.mktemp("replicas")
    servers = Servers(folder)
    proxy = TcpProxy()
    proxy.start()
    with fresh_database() as url:
        try:
            mlflow_server = start_mlflow_on_postgres(url, folder, folder / "mlflow.log")
            servers.started.append(mlflow_server)
            tracking = mlflow_server.base_url
            promote(tracking, register_copy(trained, tracking, folder / "download"))
            rows, _ = SqliteScoreStore(trained.home / "scores.db").query(CustomerQuery(limit=100_000))
            frame, meta = pd.DataFrame(rows), SqliteScoreStore(trained.home / "scores.db").meta()
            for column in STORE_JSON_COLUMNS:  # as a refresh writes them: JSON text
                if column in frame.columns:
                    frame[column] = [
                        v if v is None or isinstance(v, str) else json.dumps(v) for v in frame[column]
                    ]
            store = PostgresScoreStore(url).open()
            store.replace_all(frame, meta)
            store.close()
            through_proxy = url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
            env = {
                "CHURNGUARD_STORE_URL": through_proxy,
                "MLFLOW_TRACKING_URI": tracking,
                "CHURNGUARD_POLL_SECONDS": str(POLL_SECONDS),
            }
            replicas = [servers.api(folder / f"home-{i}", **env) for i in range(2)]
            yield Cluster(url, tracking, proxy, replicas, env, frame, meta)
        finally:
            servers.stop_all()
            proxy.close()


def _new_key(cluster: Cluster, name: str) -> str:
    done = run_cli(
        ["keys", "create", "--name", name], child_env(cluster.replicas[0].log_path.parent, cluster.env)
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def _ready(server: ServerProcess) -> dict[str, Any]:
    return httpx.get(f"{server.base_url}/ready", timeout=10).json()  # type: ignore[no-any-return]


def test_a_key_created_once_works_on_every_replica(cluster: Cluster) -> None:
    key = _new_key(cluster, "crm")
    customer = str(cluster.frame["customer_id"].iloc[0])
    for replica in cluster.replicas:
        answer = httpx.get(f"{replica.base_url}/v1/customers/{customer}", headers=bearer(key), timeout=10)
        assert answer.status_code == 200, (replica.base_url, answer.text)
    done = run_cli(["keys", "list"], child_env(cluster.replicas[0].log_path.parent, cluster.env))
    assert "crm" in done.stdout
    assert not any((r.log_path.parent / "home-0" / "api_keys.json").exists() for r in cluster.replicas)


def test_a_dashboard_session_opened_on_one_replica_works_on_the_other(cluster: Cluster) -> None:
    key = _new_key(cluster, "dashboard")
    first, second = cluster.replicas
    with httpx.Client(base_url=first.base_url, timeout=10) as browser:
        form = browser.get("/sign-in").text
        token = form.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        signed_in = browser.post("/sign-in", data={"api_key": key, "csrf_token": token})
        assert signed_in.status_code in (200, 303), signed_in.text
        cookies = {"churnguard_session": browser.cookies["churnguard_session"]}
    with httpx.Client(base_url=second.base_url, timeout=10, cookies=cookies) as other:
        assert other.get("/", follow_redirects=False).status_code == 200


def test_a_refresh_during_reads_never_shows_a_mixed_set(cluster: Cluster) -> None:
    from serving.pg_store import PostgresScoreStore

    key = _new_key(cluster, "refresh")
    ids = list(cluster.frame["customer_id"].astype(str))[:300]
    stop = threading.Event()
    mixed: list[set[str]] = []
    seen: set[str] = set()
    failures: list[str] = []

    def read(base_url: str) -> None:
        with httpx.Client(base_url=base_url, headers=bearer(key), timeout=30) as client:
            while not stop.is_set():
                answer = client.post("/v1/customers/score", json={"customer_ids": ids})
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code} {answer.text[:200]}")
                    continue
                as_of = {s["as_of"] for s in answer.json()["scores"]}
                seen.update(as_of)
                if len(as_of) != 1:
                    mixed.append(as_of)

    store = PostgresScoreStore(cluster.store_url).open()
    with ThreadPoolExecutor(4) as pool:
        readers = [pool.submit(read, r.base_url) for r in cluster.replicas for _ in range(2)]
        try:
            for day in (2, 3, 4):
                as_of = f"2031-01-0{day}"
                store.replace_all(cluster.frame.assign(as_of=as_of), {**cluster.meta, "as_of": as_of})
                time.sleep(0.3)
        finally:
            stop.set()
            for reader in readers:
                reader.result()
            store.replace_all(cluster.frame, cluster.meta)
            store.close()
    assert failures == []
    assert mixed == []
    assert len(seen) >= 2  # the readers really read across refreshes


def test_a_promotion_reaches_every_replica_within_the_poll_interval(
    cluster: Cluster, trained: Trained, tmp_path: Path
) -> None:
    before = {_ready(r)["model_version"] for r in cluster.replicas}
    assert len(before) == 1
    version = register_copy(trained, cluster.tracking_uri, tmp_path)
    assert version not in before
    promoted = time.monotonic()
    promote(cluster.tracking_uri, version)
    # A replica notices at its next poll (at most POLL_SECONDS away) and then loads the model files.
    for replica in cluster.replicas:
        wait_until(
            lambda r=replica: _ready(r)["model_version"] == version,
            timeout=POLL_SECONDS + 30,
            interval=0.1,
            what=f"{replica.base_url} to serve version {version}",
        )
    elapsed = time.monotonic() - promoted
    assert elapsed < POLL_SECONDS + 30
    print(f"\npromotion reached both replicas in {elapsed:.1f}s (poll interval {POLL_SECONDS:g}s)")


def test_losing_the_database_degrades_every_replica_until_it_returns(cluster: Cluster) -> None:
    key = _new_key(cluster, "outage")
    customer = str(cluster.frame["customer_id"].iloc[0])
    for replica in cluster.replicas:  # each replica has seen the key (keys read before keep working)
        assert (
            httpx.get(f"{replica.base_url}/v1/customers/{customer}", headers=bearer(key)).status_code == 200
        )
    cluster.proxy.stop()
    try:
        for replica in cluster.replicas:
            state = wait_until(
                lambda r=replica: (s := _ready(r))["status"] == "degraded" and s,
                timeout=30,
                what=f"{replica.base_url} to report the store down",
            )
            assert "serving store" in state["detail"]
            answer = httpx.get(f"{replica.base_url}/v1/customers/{customer}", headers=bearer(key), timeout=30)
            assert answer.status_code == 503
            assert "127.0.0.1" not in answer.text  # where the database is stays in the log
    finally:
        cluster.proxy.start()
    for replica in cluster.replicas:
        wait_until(lambda r=replica: _ready(r)["status"] == "ready", timeout=60, what="recovery")
        answer = httpx.get(f"{replica.base_url}/v1/customers/{customer}", headers=bearer(key), timeout=10)
        assert answer.status_code == 200


def test_the_postgres_backed_app_is_locked_and_survives_fuzzing(
    cluster: Cluster, trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    import schemathesis
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.core.result import Ok

    from serving.app import create_app
    from serving.settings import ServingSettings
    from tests.integration import test_schemathesis
    from tests.integration.test_security import assert_locked

    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    monkeypatch.setattr(test_schemathesis, "MAX_EXAMPLES", 25)
    key = _new_key(cluster, "fuzz")
    app = create_app(ServingSettings(store_url=cluster.store_url, auth_failure_burst=0))
    try:
        with TestClient(app) as client:
            assert client.get("/ready").json()["status"] == "ready"
            assert assert_locked(client, app, trained.version) >= 5
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [r.ok() for r in schema.get_all_operations() if isinstance(r, Ok)]
        statuses: dict[str, Any] = {}
        for operation in operations:
            if not operation.label.startswith(("GET /v1/customers", "POST /v1/customers", "GET /ready")):
                continue
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                with contextlib.suppress(Unsatisfiable):
                    statuses[f"{operation.label} {mode.value}"] = test_schemathesis._fuzz(
                        operation, mode, {"Authorization": f"Bearer {key}"}
                    )
        assert statuses["POST /v1/customers/score positive"][200] > 0
        assert len(statuses) >= 4
    finally:
        mlflow.set_tracking_uri(tracking)
        mlflow.set_registry_uri(registry)
