"""Run every benchmark in turn and write BENCHMARKS.md at the repository root (what `make bench` runs).

    python benchmarks/run_all.py                       # full sizes: run on a quiet machine
    python benchmarks/run_all.py --quick               # small sizes and short load runs, for development
    python benchmarks/run_all.py --sizes train=10k,100k batch=200k --only train,batch

Benchmarks, in order: features (Ibis/DuckDB vs pandas), train (end to end per size), shap (pred_contrib
vs shap.TreeExplainer vs predict), batch (run_batch customers/s), api (churnguard vs mlflow models serve).
shap, batch and api share one reference model trained on ``model`` customers (reused from the training
benchmark when it trained that size). Synthetic data is generated once per size and cached (not timed).
A benchmark that fails is reported as failed; the others still run.

``--sizes`` takes ``name=N[,N...]`` for features, train, model and batch (k and M suffixes allowed);
a bare list sets both features and train.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_api
import bench_batch
import bench_quality
import bench_shap
import bench_train
from common import REPO, TrainedHome, load_average, machine_info, parse_count, table, trained_home

BENCHES = ("features", "train", "shap", "batch", "api", "quality")
TITLES = {
    "features": "Feature build: Ibis on DuckDB vs pandas",
    "train": "Training end to end",
    "shap": "Explanations: exact TreeSHAP per row",
    "batch": "Batch scoring",
    "api": "HTTP API vs mlflow models serve",
    "quality": "Model quality on every generator world, against baselines and the oracle",
}


@dataclass
class Sizes:
    features: list[int] = field(default_factory=lambda: [100_000, 1_000_000])
    train: list[int] = field(default_factory=lambda: [10_000, 100_000, 1_000_000])
    model: int = 100_000
    batch: int = 1_000_000
    quality: int = 8_000  # customers per generator world in the model-quality benchmark
    features_at_target: bool = True  # also at bench_features.TARGET_ROWS, judged against its targets


QUICK = Sizes(
    features=[3_000, 10_000],
    train=[1_500, 3_000],
    model=3_000,
    batch=10_000,
    quality=2_000,
    features_at_target=False,
)


def parse_sizes(tokens: list[str], base: Sizes) -> Sizes:
    sizes = replace(base)
    for token in tokens:
        name, _, values = token.rpartition("=")
        counts = [parse_count(v) for v in values.split(",") if v]
        if not name:
            sizes.features, sizes.train = counts, counts
        elif name in ("features", "train"):
            setattr(sizes, name, counts)
        elif name in ("model", "batch", "quality"):
            setattr(sizes, name, counts[0])
        else:
            raise SystemExit(f"--sizes: unknown name {name!r} (features, train, model, batch, quality)")
    return sizes


# -- features: bench_features is another engineer's; call its public function ----------------------------
def run_features(sizes: list[int], at_target: bool) -> dict[str, Any]:
    from bench_features import TARGET_ROWS, run_at_target, run_benchmark

    plan: list[tuple[int, Callable[[], dict[str, Any]]]] = [
        (n, lambda n=n: run_benchmark(n)) for n in sorted(sizes)
    ]
    if at_target:
        plan.append((TARGET_ROWS["customers"], run_at_target))
    runs: list[dict[str, Any]] = []
    for n, run in plan:
        print(f"  features at {n:,} customers", flush=True)
        try:
            runs.append(run())
        except Exception as exc:  # keep the sizes that worked
            runs.append({"customers": n, "error": f"{exc.__class__.__name__}: {exc}"})
            print(f"    failed: {runs[-1]['error']}", flush=True)
    return {"runs": runs}


def features_targets(figures: dict[str, Any]) -> list[list[str]]:
    from bench_features import targets

    at_target = [r for r in figures["runs"] if r.get("topped_up")]
    return targets(at_target[0]) if at_target else []


def _exponent(runs: list[dict[str, Any]], i: int, engine: str) -> str:
    if i == 0 or runs[i].get("topped_up"):  # same customers, more rows: not a step in size
        return "–"
    a, b = runs[i - 1], runs[i]
    ratio = b[engine]["seconds"] / a[engine]["seconds"]
    return f"{ratio:.1f}x (n^{math.log(ratio) / math.log(b['customers'] / a['customers']):.2f})"


TOPPED_UP_NOTE = (
    "¹ The size the targets name: the generated 1M-customer data topped up with resampled rows of its own "
    "(moved back in time by up to 60 days, new order ids) to 20M transactions and 5M interactions."
)


def features_markdown(figures: dict[str, Any]) -> str:
    runs = [r for r in figures["runs"] if "error" not in r]
    failed = [
        f"Failed at {r['customers']:,} customers: `{r['error']}`" for r in figures["runs"] if "error" in r
    ]
    rows = []
    for i, r in enumerate(runs):
        ibis, pandas = r["ibis"], r["pandas"]
        rows.append(
            [
                f"{r['customers']:,}" + (" (target size ¹)" if r.get("topped_up") else ""),
                f"{r['transactions']:,}",
                f"{r['interactions']:,}",
                f"{ibis['seconds']:.2f}",
                f"{pandas['seconds']:.2f}",
                f"{r['speedup']:.2f}x",
                f"{ibis['peak_rss_gib']:.2f}",
                f"{pandas['peak_rss_gib']:.2f}",
                f"{pandas['peak_rss_gib'] / ibis['peak_rss_gib']:.2f}x",
                _exponent(runs, i, "ibis"),
                _exponent(runs, i, "pandas"),
                "yes" if r["equal"] else "**NO**",
            ]
        )
    headers = ["customers", "transactions", "interactions", "ibis s", "pandas s", "pandas ÷ ibis time"]
    headers += ["ibis peak GiB", "pandas peak GiB", "pandas ÷ ibis memory", "ibis time vs previous size"]
    headers += ["pandas time vs previous size", "same output"]
    threads = runs[0]["threads"] if runs else "?"
    return "\n".join(
        [
            f"`benchmarks/bench_features.py` `run_benchmark` per size: each engine in its own process; build time "
            f"at the end-of-data cutoff (loading excluded); peak RSS includes the loaded data. DuckDB threads: "
            f"{threads}. Growth: time ratio to the previous size, and the exponent it implies (1.00 = linear).",
            "",
            table(headers, rows),
            *(["", TOPPED_UP_NOTE] if any(r.get("topped_up") for r in runs) else []),
            *(f"\n{line}" for line in failed),
        ]
    )


# -- running --------------------------------------------------------------------------------------------
@dataclass
class Session:
    """What one run shares: its sizes and options, a scratch folder, the reference model home."""

    quick: bool
    sizes: Sizes
    api_plan: bench_api.Plan
    work_dir: Path
    _home: TrainedHome | None = None

    def home(self) -> TrainedHome:
        if self._home is None:
            self._home = trained_home(self.work_dir, self.sizes.model, self.quick)
        return self._home


def _runners(s: Session) -> dict[str, Callable[[], dict[str, Any]]]:
    return {
        "features": lambda: run_features(s.sizes.features, s.sizes.features_at_target),
        "train": lambda: bench_train.run(s.sizes.train, s.work_dir, s.quick),
        "shap": lambda: bench_shap.run(s.home(), s.quick),
        "batch": lambda: bench_batch.run(s.home(), s.sizes.batch, s.work_dir),
        "api": lambda: bench_api.run(s.home(), s.api_plan, s.work_dir),
        "quality": lambda: bench_quality.run(s.sizes.quality, s.work_dir),
    }


TARGETS: dict[str, Callable[[dict[str, Any]], list[list[str]]]] = {
    "features": features_targets,
    "train": bench_train.targets,
    "batch": bench_batch.targets,
    "api": bench_api.targets,
    "quality": bench_quality.targets,
}
MARKDOWN: dict[str, Callable[[dict[str, Any]], str]] = {
    "features": features_markdown,
    "train": bench_train.to_markdown,
    "shap": bench_shap.to_markdown,
    "batch": bench_batch.to_markdown,
    "api": bench_api.to_markdown,
    "quality": bench_quality.to_markdown,
}


def run_benchmarks(session: Session, only: list[str]) -> dict[str, dict[str, Any]]:
    runners, results = _runners(session), {}
    for name in only:
        print(f"== {name}", flush=True)
        began = time.perf_counter()
        entry: dict[str, Any] = {}
        try:
            entry["figures"] = runners[name]()
        except Exception as exc:  # one failed benchmark must not lose the others' figures
            traceback.print_exc()
            entry["error"] = f"{exc.__class__.__name__}: {exc}"
        entry["wall_seconds"] = time.perf_counter() - began
        results[name] = entry
        print(f"   {name} done in {results[name]['wall_seconds']:.0f} s", flush=True)
    return results


# -- the report -----------------------------------------------------------------------------------------
def machine_markdown(machine: dict[str, Any], load_after: tuple[float, ...]) -> str:
    load = ", ".join(f"{x:.2f}" for x in machine["load_average"])
    after = ", ".join(f"{x:.2f}" for x in load_after)
    rows = [
        ["date (UTC)", machine["date"]],
        ["CPU", machine["cpu"]],
        ["cores", str(machine["cores"])],
        ["memory", f"{machine['memory_gib']:.1f} GiB"],
        ["load average (1, 5, 15 min) at start / end", f"{load} / {after}"],
        ["OS", machine["os"]],
        ["Python", machine["python"]],
        ["commit", machine["commit"] or "unknown"],
        ["load generator", machine["wrk"] or "Python (wrk not installed)"],
    ]
    packages = [[name, version] for name, version in machine["packages"].items()]
    quiet = machine["load_average"][0] <= 0.5 * max(machine["cores"], 1)
    warning = (
        [] if quiet else ["", "**The machine was busy at the start (load average above half the cores):"]
    )
    if not quiet:
        warning[-1] += " figures are pessimistic and noisy.**"
    return "\n".join(
        [
            table(["", ""], rows, left=2),
            *warning,
            "",
            table(["package", "version"], packages, left=2),
        ]
    )


def targets_markdown(results: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, summarise in TARGETS.items():
        result = results.get(name)
        if result is None:
            continue
        if "error" in result:
            rows.append([f"({name})", "benchmark failed", "**not measured**"])
            continue
        rows += summarise(result["figures"])
    return table(["target", "measured", "verdict"], rows) if rows else "No target was measured in this run."


def report(
    results: dict[str, dict[str, Any]],
    machine: dict[str, Any],
    session: Session,
    load_after: tuple[float, ...],
) -> str:
    mode = "quick (development sizes: noisy and not representative)" if session.quick else "full"
    sizes = session.sizes
    parts = [
        "# churnguard benchmarks",
        "",
        f"Generated by `benchmarks/run_all.py` (`make bench`), mode: **{mode}**. Every figure below comes "
        "from this one run; ratios compare alternatives measured side by side in it.",
        "",
        f"Sizes (customers): features {', '.join(f'{n:,}' for n in sizes.features)}"
        f"{' and the target size' if sizes.features_at_target else ''}; training "
        f"{', '.join(f'{n:,}' for n in sizes.train)}; reference model for explanations, batch and API "
        f"{sizes.model:,}; batch scoring {sizes.batch:,}. Synthetic data from `features.synthetic`, seed 0, "
        "generated before timing.",
        "",
        "## Targets",
        "",
        targets_markdown(results),
        "",
        "## Machine",
        "",
        machine_markdown(machine, load_after),
    ]
    for i, name in enumerate(results, start=1):
        result = results[name]
        parts += ["", f"## {i}. {TITLES[name]}", ""]
        if "error" in result:
            parts.append(f"**Failed** after {result['wall_seconds']:.0f} s: `{result['error']}`")
            continue
        parts += [
            MARKDOWN[name](result["figures"]),
            "",
            f"_Wall time of this benchmark: {result['wall_seconds']:.0f} s._",
        ]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, short load runs (development)")
    parser.add_argument("--sizes", nargs="+", default=[], metavar="NAME=N,N", help="override sizes")
    parser.add_argument(
        "--only", default=",".join(BENCHES), help=f"comma-separated subset of {','.join(BENCHES)}"
    )
    parser.add_argument("--seconds", type=float, default=None, help="each API load run (default 10, quick 3)")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto", help="API load")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md", help="the report to write")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure as JSON here")
    args = parser.parse_args(argv)

    only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = set(only) - set(BENCHES)
    if unknown:
        parser.error(f"--only: unknown {sorted(unknown)}; choose from {BENCHES}")
    sizes = parse_sizes(args.sizes, QUICK if args.quick else Sizes())
    plan = bench_api.Plan(
        seconds=args.seconds or (3.0 if args.quick else 10.0),
        warmup=1.0 if args.quick else 2.0,
        max_requests=20_000 if args.quick else 100_000,
        generator=args.generator,
    )
    machine = machine_info()
    print(f"churnguard benchmarks ({'quick' if args.quick else 'full'}): {asdict(sizes)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="churnguard-bench-run-") as tmp:
        session = Session(args.quick, sizes, plan, Path(tmp))
        results = run_benchmarks(session, only)
    text = report(results, machine, session, load_average())
    args.out.write_text(text)
    print(f"wrote {args.out}", flush=True)
    if args.json:
        payload = {"machine": machine, "sizes": asdict(sizes), "results": results}
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
