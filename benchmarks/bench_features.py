"""Benchmark the feature build: Ibis on DuckDB (``compute_features``) against a plain pandas implementation.

    python benchmarks/bench_features.py --customers 100000 [--customers 1000000] [--at-target] [--threads 2]

For each size, synthetic data is generated once with :func:`features.synthetic.generate_dataset` (cached
under ``--data-root``), then each engine runs in its own spawned process: load the data with
``load_dataset``, reset the peak-RSS counter, build the features at the cutoff (default: the end of the
data, i.e. scoring with all history) and report seconds and peak RSS. The two outputs must agree (sorted by
customer_id, floats within 1e-6, NaN == NaN); the exit status is 1 if they do not.

Other benchmarks call :func:`run_benchmark`, which returns the figures as a dict.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import re
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pandas_features import compare, compute_features_pandas

from features.loading import load_dataset
from features.snapshots import observed_until

GIB = 1024**3
DEFAULT_ROOT = Path(tempfile.gettempdir()) / "churnguard-bench"


# The size the feature build's targets are set at (issue #2): 1M customers, 20M transactions, 5M interactions.
TARGET_ROWS = {"customers": 1_000_000, "transactions": 20_000_000, "interactions": 5_000_000}
TARGET_SECONDS, TARGET_PEAK_GIB, TARGET_SPEEDUP = 20.0, 4.0, 2.5


def dataset_dir(
    n_customers: int, seed: int = 0, root: Path = DEFAULT_ROOT, rows: dict[str, int] | None = None
) -> Path:
    """The folder holding the synthetic data for this size and seed, generated on first use.

    ``rows`` ({table: count}) tops tables up to those row counts (see :func:`_top_up`): the generator's
    1M customers make about 19.6M transactions and 3.6M interactions, fewer than the size the targets
    name.
    """
    from features.synthetic import generate_dataset

    base = Path(root) / f"customers-{n_customers}-seed-{seed}"
    data = base / "data"
    if not (data / "transactions.parquet").exists():
        generate_dataset(data, n_customers, seed, truth_dir=base / "truth")
    if not rows:
        return data
    grown = Path(root) / (base.name + "".join(f"-{t}-{n}" for t, n in sorted(rows.items()))) / "data"
    if not (grown / "transactions.parquet").exists():
        _top_up(data, grown, rows, seed)
    return grown


def _top_up(source: Path, target: Path, rows: dict[str, int], seed: int) -> None:
    """Copy a data folder, adding rows to reach ``rows`` per table: existing rows drawn at random, moved
    back in time by up to 60 days (reflected forward at the table's first event, so no two land on the
    same moment there), with new order ids. The added rows belong to existing customers and are valid
    input, so the features stay a like-for-like workload.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    staging = target.with_name(target.name + ".tmp")
    staging.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.parquet")):
        table = pq.read_table(path)
        extra = rows.get(path.stem, 0) - table.num_rows
        if extra > 0:
            added = table.take(pa.array(rng.integers(0, table.num_rows, extra)))
            micros = pc.cast(added["timestamp"], pa.int64()).to_numpy()
            first = pc.cast(pc.min(table["timestamp"]), pa.int64()).as_py()
            shift = rng.integers(0, 60 * 86_400 * 10**6, extra)
            earlier = micros - shift
            moved = pa.array(np.where(earlier < first, 2 * first - earlier, earlier), pa.int64()).cast(
                table.schema.field("timestamp").type
            )
            added = added.set_column(added.schema.get_field_index("timestamp"), "timestamp", moved)
            if "order_id" in added.column_names:
                ids = pa.array([f"R{i:010d}" for i in range(extra)], added.schema.field("order_id").type)
                added = added.set_column(added.schema.get_field_index("order_id"), "order_id", ids)
            table = pa.concat_tables([table, added])
        pq.write_table(table, staging / path.name)
    staging.rename(target)


def _peak_rss_bytes() -> int:
    """Peak resident set size of this process (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _current_rss_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) * 1024  # type: ignore[union-attr]


def _reset_peak_rss() -> bool:
    """Restart the peak-RSS counter (Linux ``clear_refs``), so the build's peak excludes loading."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _build(engine: str, data_dir: str, as_of: str | None, threads: int, out_path: str) -> dict[str, Any]:
    """Child process body: load, build features with one engine, write them, return the figures."""
    began = time.perf_counter()
    dataset = load_dataset(Path(data_dir))
    cutoff = pd.Timestamp(as_of) if as_of else observed_until(dataset)
    load_seconds = time.perf_counter() - began
    load_peak, dataset_rss = _peak_rss_bytes(), _current_rss_bytes()
    reset = _reset_peak_rss()
    began = time.perf_counter()
    if engine == "ibis":
        from features.engine import compute_features

        frame = compute_features(dataset, cutoff, threads=threads)
    else:
        frame = compute_features_pandas(dataset, cutoff)
    seconds = time.perf_counter() - began
    peak = _peak_rss_bytes()
    frame.to_parquet(out_path, index=False)
    return {
        "seconds": seconds,
        "peak_rss_gib": peak / GIB,  # during the build, dataset included (whole process if reset failed)
        "dataset_rss_gib": dataset_rss / GIB,
        "load_seconds": load_seconds,
        "load_peak_rss_gib": load_peak / GIB,
        "peak_reset": reset,
        "cutoff": str(cutoff),
        "rows": len(frame),
        "customers": len(dataset.customers),
        "transactions": len(dataset.transactions),
        "interactions": len(dataset.interactions),
    }


def _child(queue: mp.Queue, *args: Any) -> None:
    try:
        queue.put(("ok", _build(*args)))
    except BaseException as exc:  # report any failure to the parent instead of dying silently
        queue.put(("error", f"{exc.__class__.__name__}: {exc}"))


def _measure(engine: str, data_dir: Path, as_of: str | None, threads: int, out_path: Path) -> dict[str, Any]:
    """Run one engine in a fresh spawned process, so its peak RSS is its own."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(
        target=_child, args=(queue, engine, str(data_dir), as_of, threads, str(out_path))
    )
    process.start()
    status, result = queue.get()
    process.join()
    if status != "ok":
        raise RuntimeError(f"{engine} build failed: {result}")
    return result


def run_benchmark(
    n_customers: int,
    seed: int = 0,
    threads: int = 2,
    as_of: str | None = None,
    root: Path = DEFAULT_ROOT,
    rows: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Time both engines on one synthetic dataset (tables topped up to ``rows``) and check they agree.

    Returns ``customers``, ``transactions``, ``interactions``, ``rows`` (customers scored), ``cutoff``,
    ``ibis`` and ``pandas`` (each: ``seconds``, ``peak_rss_gib``, ``dataset_rss_gib``, ``load_seconds``,
    ``load_peak_rss_gib``), ``speedup`` (pandas seconds / ibis seconds), ``equal`` and ``differences``.
    """
    data_dir = dataset_dir(n_customers, seed, root, rows)
    with tempfile.TemporaryDirectory() as tmp:
        outputs = {engine: Path(tmp) / f"{engine}.parquet" for engine in ("ibis", "pandas")}
        figures = {
            engine: _measure(engine, data_dir, as_of, threads, path) for engine, path in outputs.items()
        }
        differences = compare(pd.read_parquet(outputs["pandas"]), pd.read_parquet(outputs["ibis"]))
    ibis_run, pandas_run = figures["ibis"], figures["pandas"]
    return {
        "customers": ibis_run["customers"],
        "transactions": ibis_run["transactions"],
        "interactions": ibis_run["interactions"],
        "rows": ibis_run["rows"],
        "cutoff": ibis_run["cutoff"],
        "threads": threads,
        "ibis": _engine_figures(ibis_run),
        "pandas": _engine_figures(pandas_run),
        "speedup": pandas_run["seconds"] / ibis_run["seconds"],
        "topped_up": bool(rows),
        "equal": not differences,
        "differences": differences,
    }


def _engine_figures(run: dict[str, Any]) -> dict[str, Any]:
    keys = ("seconds", "peak_rss_gib", "dataset_rss_gib", "load_seconds", "load_peak_rss_gib")
    return {key: run[key] for key in keys}


def format_report(figures: dict[str, Any]) -> str:
    """A short human-readable report of :func:`run_benchmark`'s figures."""
    lines = [
        f"customers {figures['customers']:,}  transactions {figures['transactions']:,}  "
        f"interactions {figures['interactions']:,}  scored {figures['rows']:,} at {figures['cutoff']}",
    ]
    for engine in ("ibis", "pandas"):
        run = figures[engine]
        name = f"ibis/duckdb (threads={figures['threads']})" if engine == "ibis" else "pandas"
        lines.append(
            f"  {name:<26} build {run['seconds']:7.2f} s   peak RSS {run['peak_rss_gib']:5.2f} GiB "
            f"(dataset {run['dataset_rss_gib']:.2f} GiB; load {run['load_seconds']:.1f} s, "
            f"load peak {run['load_peak_rss_gib']:.2f} GiB)"
        )
    lines.append(
        f"  pandas / ibis: {figures['speedup']:.2f}x   outputs equal: {'yes' if figures['equal'] else 'NO'}"
    )
    lines += [f"    {difference}" for difference in figures["differences"][:10]]
    if figures.get("topped_up"):
        lines += [f"  target {name}: {measured} ({verdict})" for name, measured, verdict in targets(figures)]
    return "\n".join(lines)


def run_at_target(seed: int = 0, threads: int = 2, root: Path = DEFAULT_ROOT) -> dict[str, Any]:
    """:func:`run_benchmark` at the size the targets name (``TARGET_ROWS``)."""
    rows = {k: v for k, v in TARGET_ROWS.items() if k != "customers"}
    return run_benchmark(TARGET_ROWS["customers"], seed, threads, root=root, rows=rows)


def targets(figures: dict[str, Any]) -> list[list[str]]:
    """[target, measured, verdict] rows for a run at the target size."""
    ibis = figures["ibis"]
    size = f"{figures['customers']:,} customers, {figures['transactions']:,} transactions, " + (
        f"{figures['interactions']:,} interactions"
    )
    checks = [
        (
            f"feature build < {TARGET_SECONDS:.0f} s ({size})",
            f"{ibis['seconds']:.1f} s",
            ibis["seconds"] < TARGET_SECONDS,
        ),
        (
            f"feature build peak memory < {TARGET_PEAK_GIB:.0f} GiB, loaded data included",
            f"{ibis['peak_rss_gib']:.2f} GiB",
            ibis["peak_rss_gib"] < TARGET_PEAK_GIB,
        ),
        (
            f"feature build ≥ {TARGET_SPEEDUP}x faster than pandas, same output",
            f"{figures['speedup']:.1f}x, output {'equal' if figures['equal'] else 'DIFFERENT'}",
            figures["speedup"] >= TARGET_SPEEDUP and figures["equal"],
        ),
    ]
    return [[name, measured, "met" if ok else "**missed**"] for name, measured, ok in checks]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, action="append", help="dataset size; repeat for several")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="DuckDB threads")
    parser.add_argument("--as-of", default=None, help="feature cutoff (default: the end of the data)")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_ROOT, help="where synthetic data is cached")
    parser.add_argument(
        "--at-target",
        action="store_true",
        help="also run at the targets' size (1M customers, 20M transactions, 5M interactions) and judge them",
    )
    args = parser.parse_args(argv)
    all_equal = True
    for n_customers in args.customers or ([] if args.at_target else [100_000]):
        figures = run_benchmark(n_customers, args.seed, args.threads, args.as_of, args.data_root)
        print(format_report(figures), flush=True)
        all_equal &= figures["equal"]
    if args.at_target:
        figures = run_at_target(args.seed, args.threads, args.data_root)
        print(format_report(figures), flush=True)
        all_equal &= figures["equal"]
    return 0 if all_equal else 1


if __name__ == "__main__":
    sys.exit(main())
