"""Benchmark ``training.pipeline.train`` end to end at several sizes.

    python benchmarks/bench_train.py --sizes 10k,100k,1M [--quick]

Data is generated first (cached, not timed). Each size trains in its own spawned process with a fresh
churnguard home (its own SQLite MLflow registry), so its peak RSS is its own. Reported: total seconds,
seconds per stage (``TrainResult.seconds``), peak RSS, and how time grows with size.
Full runs use the default ``TrainConfig``; ``--quick`` the small settings of the test suite.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    QUICK_TRAIN,
    dataset_counts,
    dataset_dir,
    home_path,
    parse_count,
    run_in_child,
    table,
    train_in_home,
    verdict,
)

STAGES = (
    "validate",
    "features",
    "churn_model",
    "baselines",
    "backtest",
    "evaluate",
    "refit",
    "explain_plots",
    "log_register",
)
TARGET_SIZE, TARGET_SECONDS = 100_000, 300.0


def train_size(n_customers: int, work_dir: Path, quick: bool, seed: int = 0) -> dict[str, Any]:
    """Train once on ``n_customers`` in a child process; the home is kept in ``work_dir`` for reuse."""
    data = dataset_dir(n_customers, seed)
    home = home_path(work_dir, n_customers)
    figures = run_in_child(train_in_home, str(data), str(home), quick)
    return {"customers": n_customers, **dataset_counts(data), **figures}


def run(sizes: list[int], work_dir: Path, quick: bool) -> dict[str, Any]:
    """Every size in turn; a size that fails (out of memory, say) is recorded and the others still run."""
    runs: list[dict[str, Any]] = []
    for n in sorted(sizes):
        print(f"  training on {n:,} customers", flush=True)
        try:
            runs.append(train_size(n, work_dir, quick))
        except RuntimeError as exc:
            runs.append({"customers": n, "error": str(exc)})
            print(f"    failed: {exc}", flush=True)
            continue
        seconds, peak = runs[-1]["total_seconds"], runs[-1]["peak_rss_gib"]
        print(f"    {seconds:.1f} s, peak RSS {peak:.2f} GiB", flush=True)
    return {"runs": runs, "config": "quick (test-suite settings)" if quick else "TrainConfig() defaults"}


def _growth(runs: list[dict[str, Any]], i: int) -> str:
    """Time ratio to the previous size and the implied exponent (1.0 = linear)."""
    if i == 0:
        return "–"
    a, b = runs[i - 1], runs[i]
    ratio = b["total_seconds"] / a["total_seconds"]
    exponent = math.log(ratio) / math.log(b["customers"] / a["customers"])
    return f"{ratio:.1f}x (n^{exponent:.2f})"


def targets(figures: dict[str, Any]) -> list[list[str]]:
    """[target, measured, verdict] rows (none unless the target size was trained)."""
    rows = []
    for r in figures["runs"]:
        if r["customers"] == TARGET_SIZE and "error" not in r:
            seconds = r["total_seconds"]
            name = f"training {TARGET_SIZE:,} customers < {TARGET_SECONDS / 60:.0f} min"
            rows.append([name, f"{seconds:.0f} s", verdict(seconds < TARGET_SECONDS)])
    return rows


def to_markdown(figures: dict[str, Any]) -> str:
    runs = [r for r in figures["runs"] if "error" not in r]
    failed = [
        f"Failed at {r['customers']:,} customers: `{r['error']}`" for r in figures["runs"] if "error" in r
    ]
    rows = [
        [
            f"{r['customers']:,}",
            f"{r['transactions']:,}",
            f"{r['total_seconds']:.1f}",
            f"{1000 * r['total_seconds'] / r['customers']:.2f}",
            _growth(runs, i),
            f"{r['peak_rss_gib']:.2f}",
            f"{r['churn_auc']:.3f}",
            "yes" if r["promoted"] else "no (forced)",
        ]
        for i, r in enumerate(runs)
    ]
    headers = ["customers", "transactions", "total s", "ms / customer", "time vs previous size"]
    headers += ["peak RSS GiB", "churn ROC AUC", "passed promotion guard"]
    parts = [f"Config: {figures['config']}.", "", table(headers, rows), ""]
    stage_rows = []
    for r in runs:
        total = r["total_seconds"]
        cells = [f"{r['stages'].get(s, 0):.1f} ({100 * r['stages'].get(s, 0) / total:.0f}%)" for s in STAGES]
        stage_rows.append([f"{r['customers']:,}", *cells])
    parts += ["Seconds per stage (share of total):", "", table(["customers", *STAGES], stage_rows)]
    target = [r for r in runs if r["customers"] == TARGET_SIZE]
    if target:
        seconds = target[0]["total_seconds"]
        parts += ["", f"Target: {TARGET_SIZE:,} customers under {TARGET_SECONDS:.0f} s — "]
        parts[-1] += f"{seconds:.0f} s, {verdict(seconds < TARGET_SECONDS)}."
    for line in failed:
        parts += ["", line]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10k,100k,1M", help="comma-separated customer counts")
    parser.add_argument("--quick", action="store_true", help=f"small training settings: {QUICK_TRAIN}")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="churnguard-bench-train-") as tmp:
        figures = run([parse_count(s) for s in args.sizes.split(",")], Path(tmp), args.quick)
    print(to_markdown(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
