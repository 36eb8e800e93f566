"""``churnguard score`` killed with SIGKILL at three points (computing, writing the file, refreshing the
serving store) never leaves a partial output or a half-refreshed store, and a rerun completes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from features.synthetic import generate_dataset
from serving.store import SqliteScoreStore
from tests.integration.servers import CHURNGUARD, child_env, run_cli

pytestmark = pytest.mark.integration

CUSTOMERS = 20_000


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _store_state(db: Path) -> tuple[int, dict[str, Any], str]:
    """Rows, meta and SQLite's own integrity verdict of the serving store."""
    store = SqliteScoreStore(db)
    with contextlib.closing(sqlite3.connect(db)) as con:
        count = con.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
        integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
    return int(count), store.meta(), str(integrity)


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def _kill_when(
    argv: list[str], env: dict[str, str], condition: Callable[[], bool], timeout: float
) -> tuple[bool, float]:
    """Start the command and SIGKILL it the moment ``condition()`` holds (polled every 2 ms).

    Returns whether it was killed (False: it finished first) and the seconds it ran."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None and time.monotonic() - started < timeout:
            if condition():
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return True, time.monotonic() - started
            time.sleep(0.002)
        return False, time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_score_killed_at_any_point_leaves_previous_output_and_store(api_home: Path, tmp_path: Path) -> None:
    data = tmp_path / "big"
    generate_dataset(data, n_customers=CUSTOMERS, seed=3)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "scores.parquet"
    db = api_home / "scores.db"
    env = child_env(api_home)
    argv = [str(CHURNGUARD), "score", "--data", str(data), "--out", str(out)]

    began = time.monotonic()
    first = run_cli(argv[1:], env, timeout=900)
    full_seconds = time.monotonic() - began
    assert first.returncode == 0, first.stderr[-3000:]
    digest, stat = _digest(out), out.stat()
    rows = len(pd.read_parquet(out))
    count, meta, integrity = _store_state(db)
    assert integrity == "ok" and count == meta["customers"] == rows > 5000

    def unchanged() -> None:
        """The previous output and the previous store, byte for byte and row for row."""
        assert _digest(out) == digest, "the previous output file was changed"
        assert len(pd.read_parquet(out)) == rows
        assert _visible(out_dir) == [out.name], "a partial output is visible"
        assert _store_state(db) == (count, meta, "ok"), "the serving store was touched"

    # 1. In the middle of computing (a quarter of the time a full run takes: after publishing, a run also
    # keeps its history snapshot and measures matured runs, so half the time can already be past the store).
    deadline = time.monotonic() + full_seconds / 4
    killed, ran = _kill_when(argv, env, lambda: time.monotonic() > deadline, timeout=900)
    assert killed, f"the run finished in {ran:.0f}s, before the kill at {full_seconds / 4:.0f}s"
    unchanged()

    # 2. While the output file is being written (its hidden temp file exists).
    def temp_file_exists() -> bool:
        return any(p.name.startswith(f".{out.name}.") for p in out_dir.iterdir())

    killed, ran = _kill_when(argv, env, temp_file_exists, timeout=900)
    assert killed, "never saw the temp output file: the run finished first"
    unchanged()
    leftovers = [p.name for p in out_dir.iterdir() if p.name != out.name]
    assert all(n.startswith(".") and n.endswith(".tmp") for n in leftovers), leftovers

    # 3. Right after the new file is in place, while the store is being refreshed.
    def replaced() -> bool:
        return out.stat().st_ino != stat.st_ino

    killed, ran = _kill_when(argv, env, replaced, timeout=900)
    assert killed, "the run finished before the output was replaced"
    assert len(pd.read_parquet(out)) == rows, "the new output is not complete"
    after_count, after_meta, after_integrity = _store_state(db)
    assert after_integrity == "ok"
    assert after_count == after_meta["customers"] == count, "the store holds a partial set"
    assert after_meta["as_of"] == meta["as_of"]
    store_phase = "old set kept" if after_meta == meta else "new set committed"

    # 4. A rerun completes and refreshes both.
    again = run_cli(argv[1:], env, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(pd.read_parquet(out)) == rows
    final_count, final_meta, final_integrity = _store_state(db)
    assert final_integrity == "ok" and final_count == rows
    assert final_meta["scored_at"] >= meta["scored_at"] and final_meta["as_of"] == meta["as_of"]
    assert _visible(out_dir) == [out.name]
    print(
        f"\nbatch crash: {rows} customers, full run {full_seconds:.0f}s; killed mid-compute, mid-write "
        f"({len(leftovers)} hidden temp file left), mid-store-refresh ({store_phase}); rerun ok"
    )
