"""The one link between training and serving: the registered MLflow model and how its bundle is read.

Training writes a version (``training.tracking``); serving, notebooks and benchmarks read one back through
:func:`load_model`. Both connect to the store in force with :func:`connect`, which only points MLflow at
the tracking and registry URI: creating experiments and registering versions stay in training.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from features.bundle import ModelBundle, ModelInfo
from features.errors import ModelNotFoundError
from features.settings import ChurnguardSettings

# MLflow answers "no such model/alias" with one of these codes; anything else means it did not answer.
_NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}


@dataclass(frozen=True)
class LoadedModel:
    """A bundle with what the registry says about it."""

    bundle: ModelBundle
    info: ModelInfo


def connect(settings: ChurnguardSettings) -> str:
    """Point MLflow's tracking and registry at the store in force (quietly); returns the URI."""
    import mlflow

    uri = settings.resolved_tracking_uri()
    if uri.startswith("sqlite:"):
        settings.home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def parse_alias_uri(uri: str) -> tuple[str, str] | None:
    """``models:/name@alias`` -> (name, alias); None for any other URI."""
    if uri.startswith("models:/") and "@" in uri:
        name, alias = uri[len("models:/") :].split("@", 1)
        return name, alias
    return None


def resolve_version(uri: str) -> str | None:
    """The registry version an alias URI points to now (None for a folder or a fixed version)."""
    from mlflow import MlflowClient

    parsed = parse_alias_uri(uri)
    if parsed is None:
        return None
    name, alias = parsed
    return str(MlflowClient().get_model_version_by_alias(name, alias).version)


def load_model(uri: str) -> LoadedModel:
    """Load the bundle behind a registry URI (``models:/name@alias``, ``models:/name/3``) or a local folder
    (a bundle, or a logged pyfunc holding one).

    Raises :class:`ModelNotFoundError` when the registry has no such model; any other registry failure
    (store down, unreadable) propagates, because "unreachable" is not the same as "no model"."""
    path = Path(uri)
    if path.exists():
        folder = path if (path / "bundle.json").exists() else path / "artifacts" / "bundle"
        bundle = ModelBundle.load(folder)
        return LoadedModel(bundle, _info(bundle, name=path.name, version="local", alias=None, uri=uri))
    import mlflow
    from mlflow import MlflowClient

    parsed = parse_alias_uri(uri)
    try:
        if parsed:
            name, alias = parsed
            version = str(MlflowClient().get_model_version_by_alias(name, alias).version)
        else:
            name, version, alias = uri[len("models:/") :].split("/")[0], uri.rsplit("/", 1)[-1], None
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}"))
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code not in _NOT_FOUND:
            raise
        raise ModelNotFoundError(_not_found_message(uri, parsed)) from exc
    bundle = ModelBundle.load(local / "artifacts" / "bundle")
    return LoadedModel(
        bundle, _info(bundle, name=name, version=version, alias=parsed[1] if parsed else None, uri=uri)
    )


def _not_found_message(uri: str, parsed: tuple[str, str] | None) -> str:
    """Say exactly what fixes it: promote the version that is there, or train the first one."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if parsed is not None:
        name, alias = parsed
        try:
            versions = list(MlflowClient().search_model_versions(f"name = '{name}'"))
        except MlflowException:
            versions = []
        if versions:
            newest = max(versions, key=lambda v: int(v.version))
            verdict = (newest.tags or {}).get("promotion", "")
            return (
                f"no version of '{name}' is {alias} yet; the newest is version {newest.version}"
                + (f" ({verdict})" if verdict else "")
                + f". Make it {alias} with `churnguard promote {newest.version}`, or train again with "
                "`churnguard train --data DIR`"
            )
    return f"no model at {uri}: train one with `churnguard train --data DIR`"


def _info(bundle: ModelBundle, *, name: str, version: str, alias: str | None, uri: str) -> ModelInfo:
    return ModelInfo(
        name=name,
        version=version,
        alias=alias,
        trained_at=str(bundle.metadata.get("trained_at", "unknown")),
        horizon_days=bundle.horizon_days,
        uri=uri,
    )
