"""Benchmark batch scoring: ``serving.batch.run_batch`` customers per second, reasons and actions included.

    python benchmarks/bench_batch.py [--customers 1M] [--model-customers 100k] [--quick]

The champion of a freshly trained home scores every active customer of a generated dataset, writing a
Parquet file and a fresh SQLite serving store in a temporary folder, in a spawned process (its peak RSS
is its own), through ``serving.batch.publish_scores`` as ``churnguard score`` does, score history kept
(the run's dated snapshot and drift report, the default history policy). Loading the data is timed apart;
the rate is ``run_batch``'s own (features -> scores -> reasons -> actions -> file -> store -> history).
Stage times come from the progress callback. A second run, as of 30 days earlier, into the same store
gives the store's growth per kept run (its history tables, compacted) and the rate of a refresh.
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    TrainedHome,
    churnguard_home,
    dataset_counts,
    dataset_dir,
    parse_count,
    run_in_child,
    stopwatch,
    table,
    trained_home,
    verdict,
)

TARGET_PER_SECOND = 5_000
STAGES = ("features", "value", "scoring", "inputs_history", "file", "store", "history")
_STAGE_OF = {
    "computing features": "features",
    "valuing customers": "value",
    "scoring": "scoring",
    "collecting inputs and history": "inputs_history",
    "writing": "writing",
    "recording history": "history",
}


class _Stages:
    """run_batch's progress callback: when each stage began."""

    def __init__(self) -> None:
        self.began: dict[str, float] = {}

    def __call__(self, stage: str, fraction: float) -> None:
        name = _STAGE_OF.get("scoring" if stage.startswith("scoring") else stage)
        if name is not None:
            self.began.setdefault(name, time.perf_counter())


class _TimedStore:
    """A ScoreStore wrapper timing ``replace_all`` (so file and store writes can be told apart)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.seconds = 0.0

    def replace_all(self, scores: Any, meta: dict[str, Any]) -> None:
        with stopwatch() as t:
            self.store.replace_all(scores, meta)
        self.seconds = t["seconds"]

    def __getattr__(self, name: str) -> Any:  # history and reports go to the store itself
        return getattr(self.store, name)


def _stage_seconds(stages: _Stages, ended: float, store_seconds: float) -> dict[str, float]:
    order = ["features", "value", "scoring", "inputs_history", "writing", "history"]
    marks = [stages.began.get(name) for name in order] + [ended]
    out = {name: (marks[i + 1] or ended) - (marks[i] or ended) for i, name in enumerate(order)}
    writing = out.pop("writing")
    return {**out, "file": writing - store_seconds, "store": store_seconds}


def measure(home: str, data_dir: str, out_dir: str) -> dict[str, Any]:
    """Child body: time publish_scores into a file and a fresh store, history kept (the rate is
    run_batch's own; loading the data is timed apart), then once more 30 days earlier into the same store
    for the growth per kept run."""
    from serving.batch import PublishRequest, ScoresFile, publish_scores
    from serving.monitor import HistoryPolicy
    from serving.store import SqliteScoreStore

    out_file, store_file = Path(out_dir) / "scores.parquet", Path(out_dir) / "scores.db"
    stages, store = _Stages(), _TimedStore(SqliteScoreStore(store_file))

    def store_mib() -> tuple[float, float]:
        """The store's size compacted (``VACUUM INTO`` a copy: a file keeps freed pages, so its own size
        hides what a run adds), and the part that is history (runs, snapshots, reports): the latest set
        changes size with the customers active at each date, the history is what a kept run adds."""
        compact = Path(out_dir) / "compact.db"
        compact.unlink(missing_ok=True)
        with closing(sqlite3.connect(store_file)) as con:
            con.execute("VACUUM INTO ?", (str(compact),))
        size = compact.stat().st_size / 2**20
        with closing(sqlite3.connect(compact, isolation_level=None)) as con:
            con.execute("DROP TABLE scores")
            con.execute("DROP TABLE meta")
            con.execute("VACUUM")
        history = compact.stat().st_size / 2**20
        compact.unlink()
        return size, history

    request = PublishRequest(
        Path(data_dir),
        "models:/churnguard@champion",
        out_file=ScoresFile(out_file),
        store=cast(Any, store),
        history=HistoryPolicy(),
    )
    with churnguard_home(Path(home)):
        published = publish_scores(request, report=stages)
        ended, store_seconds = time.perf_counter(), store.seconds
        first_mib, first_history_mib = store_mib()
        earlier = pd.Timestamp(published.batch.as_of) - pd.Timedelta(days=30)
        stages_again = _Stages()
        again = publish_scores(replace(request, as_of=earlier, out_file=None), report=stages_again)
        ended_again, store_again = time.perf_counter(), store.seconds
        _, history_mib = store_mib()
    result = published.batch
    return {
        "scored": result.customers,
        "seconds": result.seconds,
        "per_second": result.per_second,
        "load_seconds": published.load_seconds,
        "stages": _stage_seconds(stages, ended, store_seconds),
        "file_mib": out_file.stat().st_size / 2**20,
        "store_mib": first_mib,
        "second_run_per_second": again.batch.per_second,
        "second_run_stages": _stage_seconds(stages_again, ended_again, store_again),
        "growth_mib_per_run": history_mib - first_history_mib,
    }


def run(trained: TrainedHome, n_customers: int, work_dir: Path) -> dict[str, Any]:
    data = dataset_dir(n_customers)
    out_dir = Path(work_dir) / f"batch-{n_customers}"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (
        "scores.parquet",
        "scores.db",
        "scores.db-wal",
        "scores.db-shm",
    ):  # a kept run's: start fresh
        (out_dir / name).unlink(missing_ok=True)
    figures = run_in_child(measure, str(trained.home), str(data), str(out_dir))
    return {
        "customers": n_customers,
        **dataset_counts(data),
        "model_customers": trained.n_customers,
        **figures,
    }


def targets(figures: dict[str, Any]) -> list[list[str]]:
    """[target, measured, verdict] rows."""
    rate = figures["per_second"]
    name = f"batch scoring ≥ {TARGET_PER_SECOND:,} customers/s ({figures['customers']:,} customers)"
    return [[name, f"{rate:,.0f}/s", verdict(rate >= TARGET_PER_SECOND)]]


def to_markdown(figures: dict[str, Any]) -> str:
    seconds = figures["seconds"]
    stage_cells = [
        f"{figures['stages'][s]:.1f} ({100 * figures['stages'][s] / seconds:.0f}%)" for s in STAGES
    ]
    headers = ["customers in data", "scored (active)", "run_batch s", "customers / s", "vs target 5,000/s"]
    headers += ["peak RSS GiB", "file MiB", "store MiB", "store KiB / customer", "load data s (apart)"]
    headers += ["2nd run customers / s", "store growth MiB / run"]
    row = [
        f"{figures['customers']:,}",
        f"{figures['scored']:,}",
        f"{seconds:.1f}",
        f"{figures['per_second']:,.0f}",
        f"{figures['per_second'] / TARGET_PER_SECOND:.2f}x",
        f"{figures['peak_rss_gib']:.2f}",
        f"{figures['file_mib']:.0f}",
        f"{figures['store_mib']:.0f}",
        f"{1024 * figures['store_mib'] / max(figures['scored'], 1):.1f}",
        f"{figures['load_seconds']:.1f}",
        f"{figures.get('second_run_per_second', float('nan')):,.0f}",
        f"{figures.get('growth_mib_per_run', float('nan')):.1f}",
    ]
    return "\n".join(
        [
            f"Model trained on {figures['model_customers']:,} customers; 5 reasons and an action per customer; "
            "score history kept (dated snapshot and drift report per run). The second run scores 30 days "
            "earlier into the same store: its growth is what each kept run adds.",
            "",
            table(headers, [row]),
            "",
            "Seconds per stage (share of run_batch):",
            "",
            table(list(STAGES), [stage_cells]),
            "",
            "The second run's seconds per stage (no file written):",
            "",
            table(list(STAGES), [[f"{figures['second_run_stages'][s]:.1f}" for s in STAGES]]),
            "",
            f"Target: {TARGET_PER_SECOND:,} customers/s — {figures['per_second']:,.0f}/s, "
            f"{verdict(figures['per_second'] >= TARGET_PER_SECOND)}.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", default="1M", help="customers in the scored dataset")
    parser.add_argument("--model-customers", default="100k", help="training size of the model")
    parser.add_argument("--quick", action="store_true", help="small training settings")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="keep the trained home and the stores here (reused if kept)",
    )
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.work_dir is None:
            work_dir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="churnguard-bench-batch-"))
            )
        else:
            work_dir = args.work_dir.resolve()
            work_dir.mkdir(parents=True, exist_ok=True)
        trained = trained_home(work_dir, parse_count(args.model_customers), args.quick)
        print(to_markdown(run(trained, parse_count(args.customers), work_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
