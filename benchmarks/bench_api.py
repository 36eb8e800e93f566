"""Benchmark the HTTP API against ``mlflow models serve`` of the same registered model, in one run.

    python benchmarks/bench_api.py [--customers 100k] [--quick] [--seconds 10] [--generator auto|wrk|python]
        [--stores sqlite,postgres] [--workers 1,2] [--concurrency 1,8,32] [--work-dir DIR]

Both servers bind 127.0.0.1 and run side by side on the same home: ``mlflow models serve -m
models:/churnguard@champion --env-manager local -w 1`` throughout, and ``churnguard serve`` in each
variant in turn: every store (the SQLite file; PostgreSQL in a fresh database on
``CHURNGUARD_BENCH_PG``, default 127.0.0.1:5432, dropped after) with every number of uvicorn workers.
Three endpoints, each at every concurrency (default 1, 8 and 32):

* ``GET /v1/customers/{id}``: stored scores of random known customers;
* ``POST /v1/score``: one record of feature values (reasons by exact TreeSHAP);
* ``POST /invocations`` (mlflow): the same record as a one-row ``dataframe_split`` of the model's inputs.

Each load run is bounded by time and by request count, whichever comes first, and follows an excluded
warm-up. The load generator is wrk when installed (``apt-get install wrk``), else a Python generator
(threads with keep-alive http.client connections) in its own process; either way it shares the machine's
cores with the server, which the report says.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TrainedHome, load_average, parse_count, serving_home, table, trained_home, verdict

HOST = "127.0.0.1"
CONCURRENCY = (1, 8, 32)
ENDPOINTS = ("GET /v1/customers/{id}", "POST /v1/score", "POST /invocations (mlflow)")
GET, SCORE, MLFLOW = ENDPOINTS
POOL = 500  # distinct customers drawn for the request bodies
FEW = 200  # runs completing fewer requests get rough percentiles: flagged in the report


@dataclass(frozen=True)
class Load:
    """One bounded load run: requests drawn at random from ``requests`` (method, path, body)."""

    port: int
    requests: list[tuple[str, str, str | None]]
    headers: dict[str, str]
    concurrency: int
    seconds: float
    max_requests: int


# -- request pools --------------------------------------------------------------------------------------
def request_pools(home: Path, api_key: str, seed: int = 0) -> dict[str, Any]:
    """Requests of each endpoint for the same random known customers, read from the serving store."""
    from serving.store import SqliteScoreStore

    con = sqlite3.connect(home / "scores.db")
    try:
        ids = [row[0] for row in con.execute("SELECT customer_id FROM scores ORDER BY customer_id")]
    finally:
        con.close()
    chosen = random.Random(seed).sample(ids, min(POOL, len(ids)))
    # the store's own reader: it knows how rows keep their inputs (arrays in the model's feature order)
    stored = SqliteScoreStore(home / "scores.db").get_many(chosen)
    features = {cid: stored[cid]["features"] for cid in chosen}
    columns = list(next(iter(features.values())))
    score, invocations = [], []
    for cid in chosen:
        values = features[cid]
        known = {k: v for k, v in values.items() if v is not None}
        score.append(
            ("POST", "/v1/score", json.dumps({"records": [{"customer_id": cid, "features": known}]}))
        )
        split = {"columns": columns, "data": [[values[c] for c in columns]]}
        invocations.append(("POST", "/invocations", json.dumps({"dataframe_split": split})))
    json_type = {"Content-Type": "application/json"}
    return {
        GET: (
            [("GET", f"/v1/customers/{cid}", None) for cid in chosen],
            {"Authorization": f"Bearer {api_key}"},
        ),
        SCORE: (score, {"Authorization": f"Bearer {api_key}", **json_type}),
        MLFLOW: (invocations, json_type),
    }


# -- servers --------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _wait_ready(process: subprocess.Popen[bytes], port: int, path: str, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; see {log}:\n{_tail(log)}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if _get(port, path)[0] == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"server not ready on {path} after {timeout:.0f} s; see {log}:\n{_tail(log)}")


def _tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


@contextlib.contextmanager
def server(command: list[str], env: dict[str, str], port: int, ready: str, log: Path) -> Iterator[int]:
    """Start a server in its own process group, wait until ``ready`` answers 200, stop the group after."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_ready(process, port, ready, 300.0, log)
        yield process.pid
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group we started, then SIGKILL it if it has not gone within 20 s."""
    for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _bin(name: str) -> str:
    """An executable of the environment running the benchmarks (the project's virtualenv)."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # mlflow needs it
    env["CHURNGUARD_HOME"] = str(home)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{(home / 'mlflow.db').resolve()}"
    return env


def churnguard_command(port: int, workers: int = 1) -> list[str]:
    return [_bin("churnguard"), "serve", "--host", HOST, "--port", str(port), "--workers", str(workers)]


def mlflow_command(port: int) -> list[str]:
    serve = [_bin("mlflow"), "models", "serve", "-m", "models:/churnguard@champion", "--env-manager", "local"]
    return [*serve, "-h", HOST, "-p", str(port), "-w", "1"]


def check_once(port: int, request: tuple[str, str, str | None], headers: dict[str, str]) -> str:
    """One request outside the measurement: it must answer 200; returns a short excerpt of the body."""
    method, path, body = request
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        text = response.read().decode(errors="replace")
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"{method} {path} answered {response.status}: {text[:500]}")
    return text[:200]


def _group_cpu_ticks(groups: tuple[int, ...]) -> int:
    """CPU time (clock ticks) used so far by every live process in the given process groups."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) in groups:  # fields after the command: state, ppid, pgrp, ..., utime, stime
            total += int(fields[11]) + int(fields[12])
    return total


def wait_idle(groups: tuple[int, ...], quiet: float = 0.5, timeout: float = 60.0) -> bool:
    """Wait until the servers use (almost) no CPU for ``quiet`` seconds: a server still working off the
    backlog of the previous run (requests queued when the client stopped) would skew the next one."""
    deadline = time.monotonic() + timeout
    last = _group_cpu_ticks(groups)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = _group_cpu_ticks(groups)
        if now - last <= 2:  # at most 20 ms of CPU in the interval
            return True
        last = now
    return False


# -- load generators ------------------------------------------------------------------------------------
def _lua_string(text: str) -> str:
    return f"[==[{text}]==]"


def wrk_script(load: Load, threads: int) -> str:
    """A wrk Lua script: random pre-formatted requests, a per-thread request cap, figures as JSON."""
    items = ",\n".join(
        "{" + ", ".join([_lua_string(m), _lua_string(p), _lua_string(b) if b is not None else "nil"]) + "}"
        for m, p, b in load.requests
    )
    headers = ", ".join(f"[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in load.headers.items())
    per_thread = max(1, load.max_requests // threads)
    return f"""
local items = {{
{items}
}}
local prepared = {{}}
local done_here = 0
local limit = {per_thread}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("thread_id", counter)
end

function init(args)
  math.randomseed(1000 + (thread_id or 0))
  for i, item in ipairs(items) do
    prepared[i] = wrk.format(item[1], item[2], {{{headers}}}, item[3])
  end
end

function request()
  return prepared[math.random(#prepared)]
end

function response(status, headers, body)
  done_here = done_here + 1
  if done_here >= limit then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {{"requests": %d, "duration_us": %.0f, "p50_us": %.0f, "p95_us": %.0f, "p99_us": %.0f, ' ..
    '"max_us": %.0f, "mean_us": %.1f, "errors": %d, "non_2xx": %d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max, latency.mean, e.connect + e.read + e.write + e.timeout, e.status))
end
"""


# One wrk thread drives every run: it sustains far more than the servers answer here, and on a 2-core
# machine a second one competes with a one-worker server for the cores and adds its own scheduling delays
# to the measured tail (side by side at c=32: p99 65 ms with two wrk threads, 17 ms with one).
WRK_THREADS = 1


def run_wrk(load: Load, work_dir: Path) -> dict[str, Any]:
    threads = WRK_THREADS
    script = work_dir / f"load-{load.port}-{load.concurrency}.lua"
    script.write_text(wrk_script(load, threads))
    command = ["wrk", "-t", str(threads), "-c", str(load.concurrency), "-d", f"{load.seconds:g}s"]
    command += ["--timeout", "10s", "-s", str(script), f"http://{HOST}:{load.port}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=load.seconds + 60, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(
            f"wrk gave no figures (exit {done.returncode}): {done.stdout[-500:]} {done.stderr[-500:]}"
        )
    raw = json.loads(line[len("WRK_JSON ") :])
    seconds = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "seconds": seconds,
        "rps": raw["requests"] / seconds if seconds else 0.0,
        **{f"p{q}_ms": raw[f"p{q}_us"] / 1000 for q in (50, 95, 99)},
        "max_ms": raw["max_us"] / 1000,
        "errors": raw["errors"] + raw["non_2xx"],
    }


def _python_client(
    load: Load, seed: int, deadline: float, budget: Any, latencies: list[float], errors: list[int]
) -> None:
    """One keep-alive connection sending requests until the deadline or the shared budget runs out."""
    rng = random.Random(seed)
    conn = http.client.HTTPConnection(HOST, load.port, timeout=10)
    try:
        while time.perf_counter() < deadline and next(budget) < load.max_requests:
            method, path, body = rng.choice(load.requests)
            began = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=load.headers)
                response = conn.getresponse()
                response.read()
                ok = 200 <= response.status < 300
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(HOST, load.port, timeout=10)
            latencies.append(time.perf_counter() - began)
            if not ok:
                errors.append(1)
    finally:
        conn.close()


def python_load(load: Load) -> dict[str, Any]:
    """The Python generator's body (run in its own process by :func:`run_python`)."""
    import numpy as np

    latencies: list[float] = []
    errors: list[int] = []
    budget = itertools.count()
    began = time.perf_counter()
    deadline = began + load.seconds
    clients = [
        threading.Thread(target=_python_client, args=(load, i, deadline, budget, latencies, errors))
        for i in range(load.concurrency)
    ]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    seconds = time.perf_counter() - began
    ms = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    return {
        "requests": len(latencies),
        "seconds": seconds,
        "rps": len(latencies) / seconds,
        **{f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 95, 99)},
        "max_ms": float(ms.max()),
        "errors": len(errors),
    }


def run_python(load: Load, work_dir: Path) -> dict[str, Any]:
    spec = work_dir / f"load-{load.port}-{load.concurrency}.json"
    spec.write_text(json.dumps(asdict(load)))
    command = [sys.executable, __file__, "--load-worker", str(spec)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=load.seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"python load generator failed: {done.stderr[-1000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def choose_generator(name: str) -> str:
    if name == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if name == "wrk" and not shutil.which("wrk"):
        raise RuntimeError("wrk is not installed: apt-get install wrk, or use --generator python")
    return name


# -- the benchmark --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """One way to run churnguard serve: its serving store and its number of worker processes."""

    store: str = "sqlite"  # or "postgres" (a fresh database on CHURNGUARD_BENCH_PG, dropped after)
    workers: int = 1

    @property
    def label(self) -> str:
        return f"{self.store}, {self.workers} worker{'s' if self.workers > 1 else ''}"


@dataclass(frozen=True)
class Plan:
    seconds: float = 10.0
    warmup: float = 2.0
    max_requests: int = 100_000
    concurrency: tuple[int, ...] = CONCURRENCY
    generator: str = "auto"
    variants: tuple[Variant, ...] = (Variant(),)


def _measure(
    load: Load, plan: Plan, generator: str, work_dir: Path, groups: tuple[int, ...]
) -> dict[str, Any]:
    """Settle, warm up (excluded), settle, measure. ``groups[0]`` is the server under test: the CPU time its
    processes used during the measured run, per request, is reported beside the latencies (on a machine
    shared with other work, it is the figure that other work disturbs least)."""
    runner = run_wrk if generator == "wrk" else run_python
    warm = Load(load.port, load.requests, load.headers, load.concurrency, plan.warmup, load.max_requests // 5)
    settled = wait_idle(groups)
    runner(warm, work_dir)
    settled &= wait_idle(groups)
    before = _group_cpu_ticks(groups[:1])
    figures = runner(load, work_dir)
    cpu = (_group_cpu_ticks(groups[:1]) - before) / os.sysconf("SC_CLK_TCK")
    return {**figures, "cpu_ms": 1000 * cpu / max(figures["requests"], 1), "settled": settled}


PG_ADMIN = os.environ.get("CHURNGUARD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def postgres_store(home: Path) -> Iterator[tuple[str, str]]:
    """A fresh PostgreSQL database holding the home's scores and a key; yields (url, key), then drops it."""
    import pandas as pd
    import psycopg

    from serving.keys import KeyStore
    from serving.pg_auth import PostgresKeys
    from serving.pg_store import PostgresScoreStore
    from serving.store import CustomerQuery, SqliteScoreStore

    name = f"churnguard_bench_{os.getpid()}"
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        source = SqliteScoreStore(home / "scores.db")
        store = PostgresScoreStore(url).open()
        rows, _ = source.query(CustomerQuery(limit=10_000_000))
        frame = pd.DataFrame(rows)
        for column in ("reasons", "action", "model", "features", "history", "clv_detail"):
            if column in frame.columns:
                frame[column] = [
                    v if v is None or isinstance(v, str) else json.dumps(v) for v in frame[column]
                ]
        store.replace_all(frame, source.meta())
        _, key = KeyStore(backend=PostgresKeys(store)).create("benchmarks")
        store.close()
        yield url, key
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _measure_all(
    endpoints: dict[str, tuple[int, list[Any], dict[str, str]]],
    label: str,
    plan: Plan,
    context: tuple[str, Path, tuple[int, ...]],
) -> list[dict[str, Any]]:
    """Every endpoint at every concurrency against running servers; one row each."""
    generator, work_dir, groups = context
    rows = []
    for concurrency in plan.concurrency:
        for endpoint, (port, requests, headers) in endpoints.items():
            load = Load(port, requests, headers, concurrency, plan.seconds, plan.max_requests)
            figures = _measure(load, plan, generator, work_dir, groups)
            rows.append({"endpoint": endpoint, "variant": label, "concurrency": concurrency, **figures})
            print(
                f"    {label:<22} {endpoint:<28} c={concurrency:<3} {figures['rps']:8,.0f} req/s  "
                f"p50 {figures['p50_ms']:7.2f} ms  p99 {figures['p99_ms']:7.2f} ms  "
                f"CPU {figures['cpu_ms']:6.2f} ms/request  errors {figures['errors']}",
                flush=True,
            )
    return rows


def run(trained: TrainedHome, plan: Plan, work_dir: Path) -> dict[str, Any]:
    """Fill the home's store, then measure ``mlflow models serve`` and churnguard in every variant
    (store x workers) at every concurrency; mlflow runs throughout, each churnguard variant in turn."""
    generator = choose_generator(plan.generator)
    home = serving_home(trained)
    pools = request_pools(home.home, home.api_key)
    env = _env(home.home)
    logs = Path(work_dir)
    results, samples = [], {}
    load_before = load_average()
    mlflow_port = free_port()
    with server(mlflow_command(mlflow_port), env, mlflow_port, "/ping", logs / "mlflow.log") as mlflow_group:
        requests, headers = pools[MLFLOW]
        samples[MLFLOW] = check_once(mlflow_port, requests[0], headers)
        mlflow_only = {MLFLOW: (mlflow_port, requests, headers)}
        results += _measure_all(mlflow_only, "mlflow, 1 worker", plan, (generator, work_dir, (mlflow_group,)))
        for variant in plan.variants:
            with contextlib.ExitStack() as stack:
                variant_env, key = dict(env), home.api_key
                if variant.store == "postgres":
                    url, key = stack.enter_context(postgres_store(home.home))
                    variant_env["CHURNGUARD_STORE_URL"] = url
                port = free_port()
                log = logs / f"churnguard-{variant.store}-{variant.workers}.log"
                group = stack.enter_context(
                    server(churnguard_command(port, variant.workers), variant_env, port, "/ready", log)
                )
                mine = {
                    e: (port, pools[e][0], {**pools[e][1], "Authorization": f"Bearer {key}"})
                    for e in (GET, SCORE)
                }
                for endpoint, (_, requests, headers) in mine.items():
                    samples[f"{endpoint} ({variant.label})"] = check_once(port, requests[0], headers)
                context = (generator, work_dir, (group, mlflow_group))
                results += _measure_all(mine, variant.label, plan, context)
    return {
        "runs": results,
        "generator": generator,
        "plan": asdict(plan),
        "model_customers": trained.n_customers,
        "samples": samples,
        "load_average": {"before": load_before, "after": load_average()},
    }


def _find(
    figures: dict[str, Any], endpoint: str, concurrency: int, variant: str | None = None
) -> dict[str, Any] | None:
    return next(
        (
            r
            for r in figures["runs"]
            if r["endpoint"] == endpoint
            and r["concurrency"] == concurrency
            and (variant is None or r.get("variant") == variant)
        ),
        None,
    )


def _variants(figures: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(r["variant"] for r in figures["runs"] if r["endpoint"] != MLFLOW))


def targets(figures: dict[str, Any]) -> list[list[str]]:
    """[target, measured, verdict] rows: the issue's targets for every variant (named first), and workers."""
    rows = []
    base = _find(figures, MLFLOW, 8)
    for variant in _variants(figures):
        get1, get8 = _find(figures, GET, 1, variant), _find(figures, GET, 8, variant)
        for c in (8, 32):
            run_c = _find(figures, GET, c, variant)
            if run_c:
                rows.append(
                    [
                        f"{variant}: GET p99 at c={c} ≤ 20 ms",
                        f"{run_c['p99_ms']:.2f} ms",
                        verdict(run_c["p99_ms"] <= 20),
                    ]
                )
        if get1 and get8:
            rows.append(
                [
                    f"{variant}: GET req/s at c=8 ≥ c=1",
                    f"{get8['rps']:,.0f} vs {get1['rps']:,.0f}",
                    verdict(get8["rps"] >= get1["rps"]),
                ]
            )
        score8 = _find(figures, SCORE, 8, variant)
        if score8 and base and base["rps"]:
            ratio = score8["rps"] / base["rps"]
            rows.append(
                [
                    f"{variant}: POST /v1/score req/s at c=8 ≥ 10x mlflow",
                    f"{ratio:.1f}x",
                    verdict(ratio >= 10),
                ]
            )
    for store in ("sqlite", "postgres"):
        one, two = f"{store}, 1 worker", f"{store}, 2 workers"
        for endpoint in (GET, SCORE):
            a, b = _find(figures, endpoint, 32, one), _find(figures, endpoint, 32, two)
            if a and b:
                name = " ".join(endpoint.split(" ")[:2])
                rows.append(
                    [
                        f"{store}: {name} req/s at c=32, 2 workers > 1",
                        f"{b['rps']:,.0f} vs {a['rps']:,.0f}",
                        verdict(b["rps"] > a["rps"]),
                    ]
                )
    return rows


def to_markdown(figures: dict[str, Any]) -> str:
    plan = figures["plan"]
    order = ["mlflow, 1 worker", *_variants(figures)]
    rows = [
        [
            r["variant"],
            r["endpoint"],
            str(r["concurrency"]),
            f"{r['requests']:,}"
            + (" †" if r["requests"] < FEW else "")
            + ("" if r.get("settled", True) else " ‡"),
            f"{r['rps']:,.0f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p95_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['max_ms']:.1f}",
            f"{r['cpu_ms']:.2f}" if "cpu_ms" in r else "–",
            str(r["errors"]),
        ]
        for r in sorted(
            figures["runs"],
            key=lambda r: (order.index(r["variant"]), ENDPOINTS.index(r["endpoint"]), r["concurrency"]),
        )
    ]
    headers = [
        "server",
        "endpoint",
        "concurrency",
        "requests",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "server CPU ms/req",
    ]
    headers.append("errors")
    generator = (
        f"wrk ({WRK_THREADS} thread)"
        if figures["generator"] == "wrk"
        else "a Python generator (threads, keep-alive)"
    )
    before, after = figures["load_average"]["before"], figures["load_average"]["after"]
    return "\n".join(
        [
            f"Model trained on {figures['model_customers']:,} customers; store holds its scored customers. "
            f"Load by {generator} on the same machine (it competes with the server for the cores); each run "
            f"{plan['seconds']:g} s or {plan['max_requests']:,} requests, whichever first, after an excluded "
            f"{plan['warmup']:g} s warm-up. mlflow serves the same registered version with one worker. "
            f"Load average (1/5/15 min) {before[0]:.2f}/{before[1]:.2f}/{before[2]:.2f} before, "
            f"{after[0]:.2f}/{after[1]:.2f}/{after[2]:.2f} after.",
            "",
            table(headers, rows, left=2),
            "",
            f"† fewer than {FEW} requests completed: percentiles are rough. ‡ a server was still busy with the "
            "previous run's backlog after 60 s. Errors: socket errors, timeouts (10 s) and non-2xx answers. "
            "Server CPU: CPU time of the server's processes (all its workers) during the run per request "
            "completed; a PostgreSQL store's own server processes are not included.",
            "",
            "Targets:",
            "",
            table(["target", "measured", "verdict"], targets(figures)),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", default="100k", help="training size of the model served")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float, default=None, help="each load run (default 10, quick 3)")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--stores", default="sqlite", help="serving stores to measure, comma-separated: sqlite,postgres"
    )
    parser.add_argument("--workers", default="1", help="worker counts to measure, comma-separated: 1,2")
    parser.add_argument("--concurrency", default="1,8,32", help="concurrency levels, comma-separated")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="keep the trained home and its filled store here, and reuse them on the next run "
        "(default: a temporary folder, deleted after)",
    )
    parser.add_argument("--load-worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load_worker is not None:  # the Python load generator's own process
        spec = json.loads(args.load_worker.read_text())
        spec["requests"] = [tuple(r) for r in spec["requests"]]
        print(json.dumps(python_load(Load(**spec))))
        return 0
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    variants = tuple(
        Variant(store.strip(), int(workers))
        for store in args.stores.split(",")
        for workers in args.workers.split(",")
    )
    if any(v.store not in ("sqlite", "postgres") for v in variants):
        parser.error("--stores takes sqlite and/or postgres")
    plan = Plan(
        seconds=seconds,
        warmup=1.0 if args.quick else 2.0,
        generator=args.generator,
        variants=variants,
        concurrency=tuple(int(c) for c in args.concurrency.split(",")),
    )
    with contextlib.ExitStack() as stack:
        if args.work_dir is None:
            work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="churnguard-bench-api-")))
        else:
            work_dir = args.work_dir.resolve()
            work_dir.mkdir(parents=True, exist_ok=True)
        trained = trained_home(work_dir, parse_count(args.customers), args.quick)
        print(to_markdown(run(trained, plan, work_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
