"""Time the synthetic data generator at scale.

    python benchmarks/bench_generate.py --customers 1000000 [--seed 0] [--format parquet|csv] [--keep DIR]

Generates into a temporary folder (removed afterwards unless ``--keep`` names a folder to write into) and
prints customers, transactions, interactions, cancellations, wall-clock seconds and peak resident memory.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.synthetic import generate_dataset


def _peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _folder_mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    parser.add_argument("--keep", type=Path, default=None, help="write here and keep the data")
    args = parser.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="churnguard-bench-"))
    out_dir = args.keep if args.keep is not None else scratch / "data"
    try:
        began = time.perf_counter()
        summary = generate_dataset(
            out_dir, n_customers=args.customers, seed=args.seed, file_format=args.format
        )
        seconds = time.perf_counter() - began
        print(f"customers      {summary.n_customers:>12,}")
        print(f"transactions   {summary.n_transactions:>12,}")
        print(f"interactions   {summary.n_interactions:>12,}")
        print(f"cancellations  {summary.n_cancellations:>12,}")
        print(f"seconds        {seconds:>12.1f}")
        print(f"peak RSS MiB   {_peak_rss_mib():>12,.0f}")
        print(f"data MiB       {_folder_mib(summary.out_dir):>12,.0f}")
        print(f"truth MiB      {_folder_mib(summary.truth_dir):>12,.0f}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
