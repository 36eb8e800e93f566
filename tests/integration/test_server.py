"""The real API under uvicorn, over HTTP on loopback: what a CRM integration and a monitoring system see."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from serving.store import SqliteScoreStore
from tests.conftest import Trained
from tests.integration.servers import LOOPBACK, Servers, bearer, wait_until

pytestmark = pytest.mark.integration


def _stored(home: Path, n: int) -> list[dict[str, Any]]:
    """The first ``n`` customers of the serving store, as the API should return them."""
    store = SqliteScoreStore(home / "scores.db")
    ids = sorted(pd.read_parquet(home / "scores.parquet", columns=["customer_id"])["customer_id"])[:n]
    found = store.get_many(ids)
    return [found[i] for i in ids]


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_real_server_answers_every_public_route(trained: Trained, api_home: Path, servers: Servers) -> None:
    server = servers.api(api_home)
    stored = _stored(api_home, 3)
    meta = SqliteScoreStore(api_home / "scores.db").meta()
    with httpx.Client(base_url=server.base_url, timeout=30, headers=bearer(trained.api_key)) as client:
        assert client.get("/health").json() == {"status": "ok"}

        ready = client.get("/ready")
        assert ready.status_code == 200
        readiness = ready.json()
        assert isinstance(readiness.pop("warnings"), list)  # the model's own warnings, if it has any
        assert readiness == {
            "status": "ready",
            "model_version": trained.version,
            "registry_reachable": True,
            "scores_as_of": meta["as_of"],
            "detail": None,
        }

        one = client.get(f"/v1/customers/{stored[0]['customer_id']}")
        assert one.status_code == 200
        body = one.json()
        assert body["customer_id"] == stored[0]["customer_id"]
        assert body["churn_probability"] == pytest.approx(stored[0]["churn_probability"])
        assert body["expected_revenue_90d"] == pytest.approx(stored[0]["expected_revenue_90d"])
        assert body["clv"]["residual_value"] == pytest.approx(stored[0]["clv"])  # lifetime value, discounted
        assert body["model"]["version"] == trained.version
        assert body["action"]["name"] == stored[0]["action"]["name"]
        assert "features" not in body and "history" not in body  # internal columns stay internal

        missing = client.get("/v1/customers/NO-SUCH-CUSTOMER")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"

        ids = [s["customer_id"] for s in stored]
        batch = client.post("/v1/customers/score", json={"customer_ids": [*ids, "NO-SUCH", ids[0]]})
        assert batch.status_code == 200
        assert [s["customer_id"] for s in batch.json()["scores"]] == ids
        assert batch.json()["not_found"] == ["NO-SUCH"]

        # On-demand scoring of the inputs the batch used gives the stored probability back.
        features = stored[0]["features"]
        scored = client.post("/v1/score", json={"records": [{"customer_id": "x1", "features": features}]})
        assert scored.status_code == 200, scored.text
        record = scored.json()["scores"][0]
        assert record["customer_id"] == "x1"
        assert record["churn_probability"] == pytest.approx(stored[0]["churn_probability"], abs=1e-6)
        assert record["missing_features"] == [k for k, v in features.items() if v is None]
        assert record["reasons"] and record["model"]["version"] == trained.version

        card = client.get("/v1/model")
        assert card.status_code == 200
        assert card.json()["model"]["version"] == trained.version
        assert [f["name"] for f in card.json()["features"]] == list(features)

        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        text = metrics.text
        assert _metric(text, "churnguard_model_version") == float(trained.version)
        route = "/v1/customers/{customer_id}"
        assert _metric(text, "churnguard_requests_total", route=route, method="GET", status="200") == 1
        assert _metric(text, "churnguard_requests_total", route=route, method="GET", status="404") == 1
        assert _metric(text, "churnguard_requests_total", route="/v1/score", method="POST", status="200") == 1
        assert _metric(text, "churnguard_churn_probability_count") == 2  # GET one + on-demand score


ROUTES = [
    ("GET", "/v1/customers/C0000001", None),
    ("POST", "/v1/customers/score", {"customer_ids": ["C0000001"]}),
    ("POST", "/v1/score", {"records": [{"features": {"recency_days": 3}}]}),
    ("GET", "/v1/model", None),
]


def test_real_server_refuses_missing_and_wrong_keys(
    trained: Trained, api_home: Path, servers: Servers
) -> None:
    server = servers.api(api_home)
    wrong_key = trained.api_key[:-4] + ("AAAA" if not trained.api_key.endswith("AAAA") else "BBBB")
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for method, path, body in ROUTES:
            anonymous = client.request(method, path, json=body)
            assert anonymous.status_code == 401, (method, path)
            assert anonymous.headers["www-authenticate"] == "Bearer"
            assert "missing API key" in anonymous.json()["error"]["message"]

            wrong = client.request(method, path, json=body, headers=bearer(wrong_key))
            assert wrong.status_code == 403, (method, path)
            assert wrong.json()["error"] == {"code": "forbidden", "message": "invalid API key"}

            right = client.request(method, path, json=body, headers=bearer(trained.api_key))
            assert right.status_code in (200, 404), (method, path, right.text)  # 404: id not scored


def _socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets a process holds open (Linux /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[len("socket:[") : -1])
    return inodes


def _children(pid: int) -> set[int]:
    return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def _sockets_per_worker(server_pid: int, port: int, state: str) -> dict[int, set[str]]:
    """Per child process of the server, the TCP sockets (inodes) on ``port`` in ``state`` it holds ("01"
    established, "0A" listening)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
            found.add(fields[9])
    held = {child: _socket_inodes(child) & found for child in _children(server_pid)}
    return {pid: inodes for pid, inodes in held.items() if inodes}


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads connections from Linux's /proc")
def test_workers_share_the_connections_and_a_dead_one_is_replaced(api_home: Path, servers: Servers) -> None:
    """``serve --workers 2``: the kernel spreads a burst of 32 keep-alive connections over both workers
    (one shared socket gave one worker 28 of wrk's 32), and a killed worker is replaced without a
    connection waiting on a socket nobody accepts from."""
    server = servers.api(api_home, args=("--workers", "2"))
    wait_until(  # /health answered once the first worker listened; the second may still be loading
        lambda: len(_sockets_per_worker(server.pid, server.port, "0A")) == 2,
        timeout=60,
        interval=0.3,
        what="both workers listening",
    )
    # A burst of connections, as a client's pool opens them: on one shared socket the worker that wakes
    # first accepts most of them (asyncio accepts up to the backlog per wake-up).
    burst = [socket.create_connection((LOOPBACK, server.port), timeout=10) for _ in range(32)]
    try:
        for sock in burst:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: churnguard\r\n\r\n")
        for sock in burst:
            assert sock.recv(64).startswith(b"HTTP/1.1 200")
        spread = {pid: len(held) for pid, held in _sockets_per_worker(server.pid, server.port, "01").items()}
        assert len(spread) == 2 and min(spread.values()) >= 6, spread
        # each worker accepts from a listening socket of its own, which the kernel balances by a hash
        # (with one shared socket, this burst split 24 / 8 or 30 / 2, and wrk's 28 / 4)
        listening = _sockets_per_worker(server.pid, server.port, "0A")
        assert set(listening) == set(spread) and len(set().union(*listening.values())) == 2, listening
    finally:
        for sock in burst:
            sock.close()

    before = _children(server.pid)
    victim = next(iter(spread))
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: bool(_children(server.pid) - before) and victim not in _children(server.pid),
        timeout=60,
        interval=0.5,
        what="a replacement worker",
    )
    answered = []
    for _ in range(40):  # fresh connections: each lands on a live worker's socket, none hangs
        with (
            httpx.Client(base_url=server.base_url, timeout=10) as client,
            contextlib.suppress(httpx.HTTPError),
        ):
            answered.append(client.get("/health").status_code)
    assert answered.count(200) == 40, answered
