"""MLflow tracking and registry: where to log, how a version is registered, and promotion by alias."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from features.errors import ModelNotFoundError
from features.locks import advisory_lock, is_postgres_uri
from features.model_store import connect
from features.settings import ChurnguardSettings

if TYPE_CHECKING:
    from features.bundle import ModelBundle

CHAMPION = "champion"
CHALLENGER = "challenger"
EXPERIMENT = "churnguard"


@contextlib.contextmanager
def store_lock(settings: ChurnguardSettings) -> Iterator[None]:
    """Serialise schema creation and registry writes between processes sharing the embedded SQLite
    store (MLflow's migrations race when two processes open a new store at once). A tracking server
    does its own locking, so nothing is held then."""
    uri = settings.resolved_tracking_uri()
    if is_postgres_uri(uri):  # a shared PostgreSQL store: lock in the database, across hosts
        with advisory_lock(uri):
            yield
        return
    if not uri.startswith("sqlite:"):
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
    uri = connect(settings)
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


def champion_bundle(settings: ChurnguardSettings) -> ModelBundle | None:
    """The current champion's bundle (what training's policy gate treats as the incumbent); None when there
    is no champion or it cannot be read (the gate then judges against the playbook's priors)."""
    from features.model_store import load_model

    connect(settings)
    name = settings.model_name
    version = version_by_alias(MlflowClient(), name, CHAMPION)
    if version is None:
        return None
    try:
        return load_model(f"models:/{name}/{version}").bundle
    except (ModelNotFoundError, MlflowException, OSError, ValueError, KeyError):
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


@dataclass(frozen=True)
class VersionRow:
    """One registered version as `churnguard models` lists it."""

    version: str
    created: datetime
    aliases: tuple[str, ...]
    verdict: str


def registered_versions(client: MlflowClient, name: str) -> list[VersionRow]:
    """Every version of the model, newest first, with its aliases and the promotion verdict it got."""
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return []
    rows = [
        VersionRow(
            version=str(v.version),
            created=datetime.fromtimestamp(v.creation_timestamp / 1000, tz=UTC),
            aliases=tuple(sorted(v.aliases or ())),
            verdict=(v.tags or {}).get("promotion", ""),
        )
        for v in versions
    ]
    return sorted(rows, key=lambda r: int(r.version), reverse=True)
