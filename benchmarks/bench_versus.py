"""Side by side: this checkout against another commit, on the same data, in alternating fresh processes.

    git worktree add /tmp/base <commit>
    python benchmarks/bench_versus.py --base /tmp/base --customers 100k [--rounds 3] [--what features,batch]

Regressions are judged against the code that came before, measured in the same run on the same machine,
not against a figure from another day: rounds alternate base and head, each in its own process (its
imports come from that tree: ``PYTHONPATH`` first), and the best of the rounds is kept for each, wall
time and the process's CPU time (all threads), so a busy machine shows in both alike.

- ``features``: load the data folder, then ``compute_features`` at the end of the data (load excluded).
- ``batch``: ``churnguard score``'s path (``publish_scores`` into a Parquet file; no store), with the
  champion of a home both versions can read (``--home``; train it with the base version's ``churnguard
  train`` so both load it). Customers per second of ``run_batch``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, dataset_dir, load_average, parse_count, table

_FEATURES = """
import json, sys, time
from pathlib import Path
import pandas as pd
from features.loading import load_dataset
from features.engine import compute_features
data = Path(sys.argv[1])
dataset = load_dataset(data)
cutoff = max(dataset.transactions["timestamp"].max(), dataset.interactions["timestamp"].max()).normalize()
wall, cpu = time.perf_counter(), time.process_time()
frame = compute_features(dataset, cutoff, threads=2)
print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "rows": len(frame)}))
"""

_BATCH = """
import json, os, sys, time
from pathlib import Path
from serving.batch import PublishRequest, ScoresFile, publish_scores
data, out = Path(sys.argv[1]), Path(sys.argv[2])
cpu = time.process_time()
published = publish_scores(PublishRequest(data, "models:/churnguard@champion", out_file=ScoresFile(out)))
batch = published.batch
print(json.dumps({"wall": batch.seconds, "cpu": time.process_time() - cpu, "rows": batch.customers,
                  "per_second": batch.per_second}))
"""


def _run(tree: Path, code: str, args: list[str], home: Path | None) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONWARNINGS": "ignore"}
    if home is not None:
        env["CHURNGUARD_HOME"] = str(home)
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=tree, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: {done.stderr.strip().splitlines()[-1:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def compare(base: Path, what: str, data: Path, rounds: int, home: Path | None) -> dict[str, Any]:
    """Best wall and CPU seconds of ``rounds`` alternating runs per tree."""
    trees = {"base": base, "head": REPO}
    runs: dict[str, list[dict[str, Any]]] = {"base": [], "head": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            for name in ("base", "head") if i % 2 == 0 else ("head", "base"):
                if what == "features":
                    runs[name].append(_run(trees[name], _FEATURES, [str(data)], None))
                else:
                    out = str(Path(tmp) / f"{name}-{i}.parquet")
                    runs[name].append(_run(trees[name], _BATCH, [str(data), out], home))
                print(f"  {what} {name} round {i + 1}: {runs[name][-1]}", flush=True)
    best = {
        name: {key: min(r[key] for r in rs) for key in ("wall", "cpu")} | {"rows": rs[0]["rows"]}
        for name, rs in runs.items()
    }
    return {"what": what, "rounds": rounds, **best}


def to_markdown(results: list[dict[str, Any]], customers: int, base: str) -> str:
    rows = []
    for r in results:
        b, h = r["base"], r["head"]
        rows.append(
            [
                r["what"],
                f"{r['rounds']}",
                f"{b['wall']:.2f}",
                f"{h['wall']:.2f}",
                f"{h['wall'] / b['wall']:.2f}x",
                f"{b['cpu']:.2f}",
                f"{h['cpu']:.2f}",
                f"{h['cpu'] / b['cpu']:.2f}x",
            ]
        )
    headers = ["job", "rounds", "base wall s", "head wall s", "head ÷ base", "base CPU s", "head CPU s"]
    headers.append("head ÷ base CPU")
    return "\n".join(
        [
            f"{customers:,} customers; base `{base}`; best of alternating rounds; load average "
            f"{load_average()}.",
            "",
            table(headers, rows),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="a worktree of the base commit")
    parser.add_argument("--customers", default="100k")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--what", default="features", help="features, batch or both (comma-separated)")
    parser.add_argument("--home", type=Path, default=None, help="CHURNGUARD_HOME with a champion (batch)")
    args = parser.parse_args(argv)
    customers = parse_count(args.customers)
    data = dataset_dir(customers)
    jobs = [w.strip() for w in args.what.split(",") if w.strip()]
    if "batch" in jobs and args.home is None:
        raise SystemExit("--what batch needs --home: a CHURNGUARD_HOME whose champion both versions load")
    results = [compare(args.base, what, data, args.rounds, args.home) for what in jobs]
    base = subprocess.run(
        ["git", "-C", str(args.base), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(to_markdown(results, customers, base or str(args.base)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
