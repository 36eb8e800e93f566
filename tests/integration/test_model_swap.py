"""A new champion is picked up by a running server, under load, without one failed or mixed answer."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from serving.store import CustomerQuery, SqliteScoreStore
from tests.conftest import SMALL_TRAIN, Trained
from tests.integration.servers import Servers, bearer, child_env, run_cli, wait_until

pytestmark = pytest.mark.integration

THREADS = 8
MAX_REQUESTS = 20_000
MAX_SECONDS = 420.0
PAUSE = 0.02  # between one thread's requests: leaves CPU for the training run on a 2-core machine


@dataclass
class Answer:
    started: float
    versions: tuple[str, ...]
    probabilities: tuple[float, ...]


@dataclass
class LoadLog:
    answers: list[Answer] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def total(self) -> int:
        return len(self.answers) + len(self.failures)


def _send_until_stopped(
    base_url: str, key: str, body: dict[str, Any], stop: threading.Event, log: LoadLog
) -> None:
    """One load thread: POST /v1/score until told to stop, the request cap or the time cap."""
    deadline = time.monotonic() + MAX_SECONDS
    with httpx.Client(base_url=base_url, headers=bearer(key), timeout=30) as client:
        while not stop.is_set() and time.monotonic() < deadline and log.total < MAX_REQUESTS:
            started = time.monotonic()
            try:
                response = client.post("/v1/score", json=body)
            except httpx.HTTPError as exc:
                with log.lock:
                    log.failures.append(f"{exc.__class__.__name__}: {exc}")
                continue
            with log.lock:
                if response.status_code != 200:
                    log.failures.append(f"{response.status_code}: {response.text[:300]}")
                else:
                    scores = response.json()["scores"]
                    log.answers.append(
                        Answer(
                            started,
                            tuple(s["model"]["version"] for s in scores),
                            tuple(s["churn_probability"] for s in scores),
                        )
                    )
            time.sleep(PAUSE)


def _served_version(client: httpx.Client) -> str:
    return str(client.get("/v1/model").json()["model"]["version"])


def test_champion_swap_under_concurrent_requests(
    trained: Trained, api_home: Path, servers: Servers, tmp_path: Path
) -> None:
    server = servers.api(api_home, CHURNGUARD_POLL_SECONDS="1")
    store = SqliteScoreStore(api_home / "scores.db")
    ids = [r["customer_id"] for r in store.query(CustomerQuery(limit=2))[0]]
    features = [store.get(i)["features"] for i in ids]  # type: ignore[index]
    body = {"records": [{"customer_id": i, "features": f} for i, f in zip(ids, features, strict=True)]}
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump({**SMALL_TRAIN, "seed": 1234}))
    env = child_env(api_home)

    original_files = sorted(trained.home.rglob("*"))
    stop, log = threading.Event(), LoadLog()
    threads = [
        threading.Thread(target=_send_until_stopped, args=(server.base_url, trained.api_key, body, stop, log))
        for _ in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    try:
        trained_again = run_cli(
            ["train", "--data", str(trained.data), "--config", str(config), "--no-promote"], env, timeout=600
        )
        assert trained_again.returncode == 0, trained_again.stderr[-3000:]
        assert trained.version == "1"
        promoted = run_cli(["promote", "2"], env, timeout=120)
        assert promoted.returncode == 0, promoted.stderr[-3000:]
        with httpx.Client(base_url=server.base_url, headers=bearer(trained.api_key), timeout=30) as probe:
            wait_until(lambda: _served_version(probe) == "2", timeout=60, what="the server to serve v2")
            swapped_at = time.monotonic()
            time.sleep(3)  # keep the load on a little after the swap: nothing may flip back or fail
            ready = probe.get("/ready").json()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)

    assert not any(t.is_alive() for t in threads)
    assert log.failures == [], f"{len(log.failures)} failed requests, e.g. {log.failures[:3]}"
    assert all(len(set(a.versions)) == 1 for a in log.answers), "one response mixed two model versions"
    by_version: dict[str, set[tuple[float, ...]]] = {}
    for answer in log.answers:
        by_version.setdefault(answer.versions[0], set()).add(tuple(round(p, 9) for p in answer.probabilities))
    assert set(by_version) == {"1", "2"}, f"versions seen under load: {sorted(by_version)}"
    # Each version answered with exactly its own model's figures: no half-swapped bundle or model card.
    assert len(by_version["1"]) == 1 and len(by_version["2"]) == 1, by_version
    assert by_version["1"] != by_version["2"], "the retrained model must score differently for this test"
    late = [a for a in log.answers if a.started > swapped_at]
    assert late and all(a.versions[0] == "2" for a in late), "a request after the swap got the old model"
    assert ready["model_version"] == "2" and ready["status"] == "ready"
    # The second version lives in this test's copy only: the shared trained home is untouched.
    assert sorted(trained.home.rglob("*")) == original_files
    print(
        f"\nmodel swap: {log.total} requests from {THREADS} threads, "
        f"{sum(a.versions[0] == '1' for a in log.answers)} answered by v1, "
        f"{sum(a.versions[0] == '2' for a in log.answers)} by v2, 0 failed"
    )
