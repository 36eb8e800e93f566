"""Shared helpers for the benchmarks: data, child processes with their peak RSS, timers, machine facts and
a temporary churnguard home holding a trained, registered champion (and, on request, a filled store).

Synthetic data is cached under ``DATA_ROOT/customers-N-seed-S/data``, the layout bench_features uses, so
the feature, training and batch benchmarks share one generated dataset per size.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import queue
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
DATA_ROOT = Path(tempfile.gettempdir()) / "churnguard-bench"
GIB = 1024**3
VENV_BIN = REPO / ".venv" / "bin"
PACKAGES = (
    "lightgbm",
    "shap",
    "numpy",
    "pandas",
    "pyarrow",
    "duckdb",
    "ibis-framework",
    "scikit-learn",
    "mlflow",
    "fastapi",
    "uvicorn",
    "pydantic",
)
# Small training settings for --quick (the ones the test suite uses); full runs use TrainConfig() defaults.
QUICK_TRAIN: dict[str, Any] = {
    "snapshots": 3,
    "churn": {"num_leaves_grid": [7, 15], "max_trees": 150},
    "revenue": {"max_trees": 150},
}

for _path in (REPO, BENCH_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


# -- data -----------------------------------------------------------------------------------------------
def dataset_dir(n_customers: int, seed: int = 0, root: Path = DATA_ROOT) -> Path:
    """The folder holding the synthetic data for this size and seed, generated (untimed) on first use."""
    from features.synthetic import generate_dataset

    base = Path(root) / f"customers-{n_customers}-seed-{seed}"
    data = base / "data"
    if not (data / "transactions.parquet").exists():
        print(f"  generating {n_customers:,} customers into {data} (not timed)", flush=True)
        generate_dataset(data, n_customers, seed, truth_dir=base / "truth")
    return data


def dataset_counts(data_dir: Path) -> dict[str, int]:
    """Row counts of the generated tables, read from the Parquet footers (no data loaded)."""
    import pyarrow.parquet as pq

    counts = {}
    for table in ("customers", "transactions", "interactions"):
        path = Path(data_dir) / f"{table}.parquet"
        counts[table] = pq.read_metadata(path).num_rows if path.exists() else 0
    return counts


# -- memory and child processes -------------------------------------------------------------------------
def peak_rss_gib() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def _child_main(out: mp.Queue, fn: Callable[..., dict[str, Any]], args: tuple[Any, ...]) -> None:
    try:
        result = fn(*args)
        result["peak_rss_gib"] = peak_rss_gib()
        out.put(("ok", result))
    except BaseException as exc:  # report any failure to the parent instead of dying silently
        out.put(("error", f"{exc.__class__.__name__}: {exc}"))


def run_in_child(fn: Callable[..., dict[str, Any]], *args: Any, timeout: float = 6 * 3600) -> dict[str, Any]:
    """Run ``fn(*args)`` in a fresh spawned process; its result dict gains the child's ``peak_rss_gib``.

    ``fn`` must be a module-level function returning a picklable dict. A child that dies (killed for memory,
    crashed) or overruns ``timeout`` seconds raises RuntimeError here."""
    context = mp.get_context("spawn")
    out: mp.Queue = context.Queue()
    process = context.Process(target=_child_main, args=(out, fn, args))
    process.start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                status, result = out.get(timeout=1.0)
                break
            except queue.Empty:
                if not process.is_alive():
                    raise RuntimeError(f"{fn.__name__} died with exit code {process.exitcode}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{fn.__name__} overran {timeout:.0f} s") from None
    finally:
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
            process.join()
    if status != "ok":
        raise RuntimeError(f"{fn.__name__} failed: {result}")
    return result  # type: ignore[no-any-return]


# -- timers ---------------------------------------------------------------------------------------------
@contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """``with stopwatch() as t: ...`` then ``t["seconds"]``."""
    box = {"seconds": 0.0}
    began = time.perf_counter()
    try:
        yield box
    finally:
        box["seconds"] = time.perf_counter() - began


def seconds_per_call(
    fn: Callable[[], object], min_seconds: float = 1.0, min_calls: int = 3, max_calls: int = 10_000
) -> dict[str, float]:
    """Median wall time of one call: repeated until ``min_seconds`` have passed and ``min_calls`` ran."""
    fn()  # warm-up, excluded
    times: list[float] = []
    began = time.perf_counter()
    while len(times) < max_calls and (len(times) < min_calls or time.perf_counter() - began < min_seconds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median": statistics.median(times), "min": min(times), "calls": len(times)}


# -- machine --------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    found = re.search(r"model name\s*:\s*(.+)", text)
    return found.group(1).strip() if found else platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        found = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
    except OSError:
        return float("nan")
    return int(found.group(1)) * 1024 / GIB if found else float("nan")


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except OSError:
        return ""


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def machine_info() -> dict[str, Any]:
    """Date, CPU, cores, memory, load, OS, Python, key package versions and the git commit."""
    wrk = shutil.which("wrk")
    wrk_version = ""
    if wrk:
        probe = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=10, check=False)
        text = (probe.stdout + probe.stderr).strip()
        wrk_version = text.splitlines()[0].split(" Copyright")[0] if text else wrk
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain"))
    return {
        "date": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count() or 0,
        "memory_gib": _memory_gib(),
        "load_average": load_average(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "wrk": wrk_version,
        "commit": commit + (" (uncommitted changes)" if dirty else ""),
    }


# -- a churnguard home with a trained champion ----------------------------------------------------------
@contextmanager
def churnguard_home(home: Path) -> Iterator[None]:
    """Point churnguard (settings and MLflow) at ``home`` for the duration."""
    names = ("CHURNGUARD_HOME", "MLFLOW_TRACKING_URI", "CHURNGUARD_POLL_SECONDS")
    saved = {k: os.environ.get(k) for k in names}
    os.environ["CHURNGUARD_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    _clear_settings()
    try:
        from features.settings import get_settings
        from training.registry import configure_mlflow

        configure_mlflow(get_settings())
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _clear_settings()


def _clear_settings() -> None:
    from features.settings import get_settings
    from serving.settings import get_serving_settings

    get_settings.cache_clear()
    get_serving_settings.cache_clear()


def train_config(quick: bool) -> Any:
    from training.config import TrainConfig

    return TrainConfig.model_validate(QUICK_TRAIN if quick else {})


def train_in_home(data_dir: str, home: str, quick: bool) -> dict[str, Any]:
    """Child body: train end to end into ``home``, make the new version champion, return the figures.

    The version is made champion even if the promotion guard refused it (small data is often not
    calibrated well enough): the other benchmarks need a champion to serve."""
    from features.settings import get_settings
    from training.pipeline import train
    from training.registry import CHAMPION, promote, version_by_alias

    with churnguard_home(Path(home)):
        began = time.perf_counter()
        result = train(Path(data_dir), train_config(quick), get_settings(), promote=True)
        total = time.perf_counter() - began
        from mlflow import MlflowClient

        client = MlflowClient()
        if version_by_alias(client, get_settings().model_name, CHAMPION) != result.version:
            promote(client, get_settings().model_name, result.version)
    return {
        "total_seconds": total,
        "stages": dict(result.seconds),
        "version": result.version,
        "promoted": result.promoted,
        "promotion_reason": result.promotion_reason,
        "churn_auc": float(result.churn_table.set_index("model").loc["churnguard", "roc_auc"]),
    }


@dataclass(frozen=True)
class TrainedHome:
    home: Path
    data: Path
    n_customers: int
    quick: bool
    api_key: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def home_path(work_dir: Path, n_customers: int) -> Path:
    return Path(work_dir) / f"home-{n_customers}"


def trained_home(work_dir: Path, n_customers: int, quick: bool, seed: int = 0) -> TrainedHome:
    """A home under ``work_dir`` with a champion trained on ``n_customers``: reused if this run already
    trained one (the training benchmark keeps its homes), else trained now in a child process."""
    data = dataset_dir(n_customers, seed)
    home = home_path(work_dir, n_customers)
    if not (home / "mlflow.db").exists():
        print(f"  training the reference model on {n_customers:,} customers", flush=True)
        run_in_child(train_in_home, str(data), str(home), quick)
    return TrainedHome(home, data, n_customers, quick)


def fill_store(home: str, data_dir: str) -> dict[str, Any]:
    """Child body: batch-score the home's dataset into its serving store and create an API key."""
    from serving.batch import PublishRequest, publish_scores
    from serving.keys import KeyStore
    from serving.store import SqliteScoreStore

    with churnguard_home(Path(home)):
        published = publish_scores(
            PublishRequest(
                Path(data_dir),
                "models:/churnguard@champion",
                store=SqliteScoreStore(Path(home) / "scores.db"),
            )
        )
        _, token = KeyStore(Path(home) / "api_keys.json").create("benchmarks")
    return {"customers": published.batch.customers, "api_key": token}


BENCH_KEY = "bench_key.txt"  # the benchmark's API key, kept in plain text in its (throwaway) home


def serving_home(trained: TrainedHome) -> TrainedHome:
    """The trained home with its serving store filled (every active customer scored) and an API key;
    a home an earlier run filled (a kept ``--work-dir``) is reused as it is."""
    key_file = trained.home / BENCH_KEY
    if (trained.home / "scores.db").exists() and key_file.exists():
        key = key_file.read_text(encoding="utf-8").strip()
    else:
        key = run_in_child(fill_store, str(trained.home), str(trained.data))["api_key"]
        key_file.write_text(key, encoding="utf-8")
    return TrainedHome(trained.home, trained.data, trained.n_customers, trained.quick, key)


# -- formatting -----------------------------------------------------------------------------------------
def table(headers: list[str], rows: list[list[Any]], left: int = 1) -> str:
    """A Markdown table of cells already formatted as text; the first ``left`` columns align left."""
    rule = ["---" if i < left else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def parse_count(text: str) -> int:
    """'3000', '3k', '1M' or '1_000_000' as an int."""
    text = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)
