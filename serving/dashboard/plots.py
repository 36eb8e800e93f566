"""The served model's evaluation plots, fetched once from its MLflow run and cached on disk.

The registered version's tag ``run_id`` names the training run; its ``plots/`` artifacts are downloaded
once into ``<home>/dashboard_cache/<version>/`` (moved into place atomically, so a folder that exists is
complete). Fetching runs in a background thread and a page waits for it only briefly: an unreachable
registry gives a note on the page, never a failure, and is retried after ``retry_seconds``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from features.bundle import ModelInfo

log = logging.getLogger("churnguard.dashboard")

PLOTS = {
    "reliability": "Reliability: predicted churn probability against the churn rate observed",
    "cumulative_gains": "Cumulative gains: share of churners reached by contacting the riskiest first",
    "roc": "ROC curve",
    "precision_recall": "Precision and recall",
    "revenue_deciles": "Revenue forecast over the horizon: predicted and actual spend by forecast decile",
    "feature_importance": "Feature importance",
    "shap_summary": "SHAP summary: how each feature moves churn risk",
}
PRIMARY = ("reliability", "cumulative_gains")
# Compatibility: runs trained before clv meant lifetime value (issue #13) logged the revenue forecast's
# plot as clv_deciles.png, and versions cached then keep that name; such files are shown under today's.
_OLD_NAMES = {"clv_deciles": "revenue_deciles"}
_SAFE_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

Fetcher = Callable[[str, str, Path], None]
"""(model name, version, destination folder): download the run's ``plots/`` artifacts into the folder."""


def mlflow_fetch(name: str, version: str, destination: Path) -> None:
    """Download ``plots/`` of the run tagged on the registered version (MLflow configured by the app)."""
    import mlflow
    from mlflow import MlflowClient

    run_id = MlflowClient().get_model_version(name, version).tags.get("run_id")
    if not run_id:
        raise LookupError(f"model version {version} has no run_id tag")
    mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="plots", dst_path=str(destination))


@dataclass(frozen=True)
class PlotStatus:
    """The plots available for one model version, or a note saying why there are none."""

    version: str | None
    available: tuple[str, ...] = ()
    note: str | None = None


@dataclass
class _Job:
    done: threading.Event
    error: str | None = None
    finished_at: float | None = None


class PlotCache:
    def __init__(
        self,
        root: Path,
        fetch: Fetcher = mlflow_fetch,
        wait_seconds: float = 3.0,
        retry_seconds: float = 60.0,
    ) -> None:
        self.root = Path(root)
        self.fetch = fetch
        self.wait_seconds = wait_seconds
        self.retry_seconds = retry_seconds
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()

    def folder(self, version: str) -> Path | None:
        return self.root / version if _SAFE_VERSION.fullmatch(version) else None

    def path(self, version: str, name: str) -> Path | None:
        """The cached PNG, or None (unknown plot, unsafe version, not fetched)."""
        folder = self.folder(version)
        if folder is None or name not in PLOTS:
            return None
        return _cached(folder, name)

    def status(self, info: ModelInfo | None) -> PlotStatus:
        """What to show for the model being served, fetching its plots first if needed (briefly)."""
        if info is None:
            return PlotStatus(None, note="No model is loaded, so there are no evaluation plots to show.")
        folder = self.folder(info.version)
        if info.version == "local" or folder is None:
            return PlotStatus(
                info.version,
                note="Evaluation plots come from the model registry; this model was loaded from a folder.",
            )
        if not folder.is_dir():
            job = self._start(info, folder)
            job.done.wait(self.wait_seconds)
            if not job.done.is_set():
                return PlotStatus(
                    info.version, note="The evaluation plots are being fetched: reload in a moment."
                )
            if job.error:
                return PlotStatus(
                    info.version,
                    note=f"Evaluation plots are unavailable right now ({job.error}). The rest of the page is "
                    "current; they will be fetched again later.",
                )
        available = tuple(name for name in PLOTS if _cached(folder, name) is not None)
        if not available:
            return PlotStatus(info.version, note="The model's training run logged no evaluation plots.")
        return PlotStatus(info.version, available)

    def _start(self, info: ModelInfo, folder: Path) -> _Job:
        with self._lock:
            job = self._jobs.get(info.version)
            stale = (
                job is not None
                and job.error is not None
                and time.time() - (job.finished_at or 0) > self.retry_seconds
            )
            if job is None or stale:
                job = _Job(threading.Event())
                self._jobs[info.version] = job
                threading.Thread(
                    target=self._run, args=(job, info, folder), name="churnguard-plots", daemon=True
                ).start()
            return job

    def _run(self, job: _Job, info: ModelInfo, folder: Path) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=self.root, prefix=".fetch-") as tmp:
                self.fetch(info.name, info.version, Path(tmp))
                fetched = Path(tmp) / "plots"
                if not fetched.is_dir():
                    fetched.mkdir()
                for extra in fetched.iterdir():
                    if extra.suffix != ".png" or (extra.stem not in PLOTS and extra.stem not in _OLD_NAMES):
                        shutil.rmtree(extra) if extra.is_dir() else extra.unlink()
                try:
                    os.replace(fetched, folder)  # atomic; a concurrent fetch that won leaves the same files
                except OSError:
                    if not folder.is_dir():
                        raise
        except Exception as exc:
            job.error = _describe(exc)
            log.warning("evaluation plots of version %s not fetched: %s", info.version, exc)
        finally:
            job.finished_at = time.time()
            job.done.set()


def _cached(folder: Path, name: str) -> Path | None:
    """The cached PNG of plot ``name`` in a version's folder, under its current or its old name."""
    names = [name, *(old for old, new in _OLD_NAMES.items() if new == name)]
    return next((p for p in (folder / f"{n}.png" for n in names) if p.is_file()), None)


def _describe(exc: Exception) -> str:
    """A short reason for the page (details go to the log, not to the browser)."""
    if isinstance(exc, LookupError):
        return "this model version has no training run recorded"
    text = f"{exc.__class__.__name__} {exc}".lower()
    if any(
        word in text for word in ("connection", "timeout", "timed out", "unreachable", "refused", "resolve")
    ):
        return "the model registry could not be reached"
    return "the training run's plots could not be read"
