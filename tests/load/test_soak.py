"""Soak: two minutes of steady, mixed traffic at a fixed rate against the real server.

Open loop: requests are sent on a fixed schedule (not when the previous one returns) by a bounded thread
pool; the run stops by itself after a fixed number of requests or a hard deadline, whichever comes first.
Zero errors, a tight latency tail and a flat resident memory are expected.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from serving.store import CustomerQuery, SqliteScoreStore
from tests.conftest import Trained
from tests.integration.servers import Servers, bearer

pytestmark = pytest.mark.load

RATE = 50.0  # requests per second, half GET /v1/customers/{id}, half POST /v1/score
WARMUP_SECONDS = 15.0  # not measured: caches and allocator pools settle
SOAK_SECONDS = 120.0
WORKERS = 16
TOTAL = int(RATE * (WARMUP_SECONDS + SOAK_SECONDS))
HARD_DEADLINE = WARMUP_SECONDS + SOAK_SECONDS + 60.0


@dataclass(frozen=True)
class Sample:
    kind: str
    scheduled: float  # seconds since the start of the run
    lateness: float  # how long it waited for a free worker
    seconds: float  # client-side latency: request sent to response read
    status: int | str


def rss_kib(pid: int) -> int:
    """Resident memory of a process, from /proc (kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class RssSampler(threading.Thread):
    """Samples the server's RSS once a second until stopped (or the hard deadline)."""

    def __init__(self, pid: int, started: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.started = pid, started
        self.samples: list[tuple[float, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0) and time.monotonic() - self.started < HARD_DEADLINE:
            self.samples.append((time.monotonic() - self.started, rss_kib(self.pid)))


class Traffic:
    """The request mix: stored scores of random known customers, and on-demand scores of their inputs."""

    def __init__(self, base_url: str, key: str, records: list[dict[str, Any]]) -> None:
        self.base_url, self.key = base_url, key
        self.ids = [r["customer_id"] for r in records]
        self.features = [r["features"] for r in records]
        self.local = threading.local()

    def client(self) -> httpx.Client:
        """One keep-alive connection per worker thread."""
        if not hasattr(self.local, "client"):
            self.local.client = httpx.Client(base_url=self.base_url, headers=bearer(self.key), timeout=30)
        return self.local.client  # type: ignore[no-any-return]

    def send(self, i: int, scheduled: float, origin: float) -> Sample:
        rng = random.Random(i)
        kind = "get" if i % 2 == 0 else "score"
        began = time.monotonic()
        try:
            if kind == "get":
                response = self.client().get(f"/v1/customers/{rng.choice(self.ids)}")
            else:
                body = {"records": [{"customer_id": f"soak-{i}", "features": rng.choice(self.features)}]}
                response = self.client().post("/v1/score", json=body)
            status: int | str = response.status_code
        except httpx.HTTPError as exc:
            status = exc.__class__.__name__
        ended = time.monotonic()
        return Sample(kind, scheduled - origin, began - scheduled, ended - began, status)


def run_open_loop(traffic: Traffic) -> list[Sample]:
    """Send TOTAL requests at RATE per second (stopping early at the hard deadline)."""
    origin = time.monotonic()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = []
        for i in range(TOTAL):
            at = origin + i / RATE
            if at - origin > HARD_DEADLINE:
                break
            time.sleep(max(0.0, at - time.monotonic()))
            futures.append(pool.submit(traffic.send, i, at, origin))
        return [f.result() for f in futures]


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def test_two_minutes_at_fixed_rate_without_errors_tail_or_memory_growth(
    trained: Trained, api_home: Path, servers: Servers
) -> None:
    server = servers.api(api_home)
    records = SqliteScoreStore(api_home / "scores.db").query(CustomerQuery(limit=500))[0]
    traffic = Traffic(server.base_url, trained.api_key, records)
    sampler = RssSampler(server.pid, time.monotonic())
    sampler.start()
    try:
        samples = run_open_loop(traffic)
    finally:
        sampler.done.set()
        sampler.join(timeout=5)

    measured = [s for s in samples if s.scheduled >= WARMUP_SECONDS]
    errors = [s for s in samples if s.status != 200]
    latencies = [s.seconds for s in measured]
    p50, p99 = _percentile(latencies, 50), _percentile(latencies, 99)
    by_kind = {
        kind: (
            _percentile([s.seconds for s in measured if s.kind == kind], 50),
            _percentile([s.seconds for s in measured if s.kind == kind], 99),
        )
        for kind in ("get", "score")
    }
    rss = [kib for at, kib in sampler.samples if at >= WARMUP_SECONDS]
    half = len(rss) // 2
    first, last = float(np.mean(rss[:half])), float(np.mean(rss[half:]))
    growth = (last - first) / first
    late = _percentile([s.lateness for s in measured], 99)
    print(
        f"\nsoak: {len(measured)} measured requests at {RATE:.0f}/s over {SOAK_SECONDS:.0f}s "
        f"(+{WARMUP_SECONDS:.0f}s warm-up), {len(errors)} errors\n"
        f"  latency p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms (ratio {p99 / p50:.2f}); "
        + "; ".join(f"{k} p50 {a * 1000:.1f} ms p99 {b * 1000:.1f} ms" for k, (a, b) in by_kind.items())
        + f"\n  schedule lateness p99 {late * 1000:.1f} ms\n"
        f"  server RSS first half {first / 1024:.1f} MiB, last half {last / 1024:.1f} MiB "
        f"({growth * 100:+.2f}%), {len(rss)} samples"
    )
    assert len(samples) == TOTAL, f"the run hit its deadline after {len(samples)} of {TOTAL} requests"
    assert errors == [], f"{len(errors)} failed requests, e.g. {errors[:3]}"
    assert late < 1.0, "the client fell behind its schedule: the rate was not really held"
    assert p99 <= 4 * p50, f"p99 {p99 * 1000:.1f} ms is more than 4x p50 {p50 * 1000:.1f} ms"
    assert len(rss) >= SOAK_SECONDS * 0.8
    assert growth < 0.10, f"resident memory grew {growth * 100:.1f}% between the halves"
