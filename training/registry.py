"""MLflow tracking and registry: where to log, how a version is registered, and promotion by alias."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from features.errors import ModelNotFoundError
from features.settings import ChurnguardSettings

CHAMPION = "champion"
CHALLENGER = "challenger"
EXPERIMENT = "churnguard"


@contextlib.contextmanager
def store_lock(settings: ChurnguardSettings) -> Iterator[None]:
    """Serialise schema creation and registry writes between processes sharing the embedded SQLite
    store (MLflow's migrations race when two processes open a new store at once). A tracking server
    does its own locking, so nothing is held then."""
    if not settings.resolved_tracking_uri().startswith("sqlite:"):
        yield
        return
    settings.home.mkdir(parents=True, exist_ok=True)
    with (settings.home / ".mlflow.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def configure_mlflow(settings: ChurnguardSettings) -> str:
    """Point MLflow at the store in force and make sure the experiment exists; returns the URI."""
    uri = settings.resolved_tracking_uri()
    if uri.startswith("sqlite:"):
        settings.home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with store_lock(settings):
        client = MlflowClient()
        if client.get_experiment_by_name(EXPERIMENT) is None:
            location = settings.artifact_location() if uri.startswith("sqlite:") else None
            with contextlib.suppress(MlflowException):  # created meanwhile by a concurrent run
                client.create_experiment(EXPERIMENT, artifact_location=location)
        mlflow.set_experiment(EXPERIMENT)
    return uri


def version_by_alias(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def promote(client: MlflowClient, name: str, version: str) -> None:
    """Make a version the champion (the alias moves atomically in the registry)."""
    try:
        client.get_model_version(name, version)
    except MlflowException as exc:
        raise ModelNotFoundError(f"model '{name}' has no version {version}; see `churnguard models`") from exc
    client.set_registered_model_alias(name, CHAMPION, version)
    if version_by_alias(client, name, CHALLENGER) == version:
        client.delete_registered_model_alias(name, CHALLENGER)


def bundle_dir_of(model_uri: str) -> Path:
    """Download (or locate) the bundle folder of a logged pyfunc model."""
    local = Path(mlflow.artifacts.download_artifacts(model_uri))
    return local / "artifacts" / "bundle"
