"""Where the served model comes from: a registry alias (``models:/churnguard@champion``) or a folder.

:class:`ModelHolder` keeps the model in use and swaps in a new champion atomically (one reference
assignment: a request sees the old model or the new one, never a mix). When the tracking store is
unreachable it keeps serving what it has and says so.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from features.errors import ModelNotFoundError
from serving.bundle import ModelBundle
from serving.scoring import ModelInfo

log = logging.getLogger("churnguard.model")
_NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}


@dataclass(frozen=True)
class LoadedModel:
    bundle: ModelBundle
    info: ModelInfo


def _parse_alias_uri(uri: str) -> tuple[str, str] | None:
    if uri.startswith("models:/") and "@" in uri:
        name, alias = uri[len("models:/") :].split("@", 1)
        return name, alias
    return None


def resolve_version(uri: str) -> str | None:
    """The registry version an alias URI points to now (None for a folder or a fixed version)."""
    parsed = _parse_alias_uri(uri)
    if parsed is None:
        return None
    name, alias = parsed
    return str(MlflowClient().get_model_version_by_alias(name, alias).version)


def load_model(uri: str) -> LoadedModel:
    """Load the bundle behind a registry URI or a local folder (a bundle or a logged pyfunc)."""
    path = Path(uri)
    if path.exists():
        folder = path if (path / "bundle.json").exists() else path / "artifacts" / "bundle"
        bundle = ModelBundle.load(folder)
        return LoadedModel(bundle, _info(bundle, name=path.name, version="local", alias=None, uri=uri))
    parsed = _parse_alias_uri(uri)
    try:
        if parsed:
            name, alias = parsed
            version = str(MlflowClient().get_model_version_by_alias(name, alias).version)
        else:
            name, version, alias = uri[len("models:/") :].split("/")[0], uri.rsplit("/", 1)[-1], None
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}"))
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code not in _NOT_FOUND:  # the registry did not answer: not the same as "no model"
            raise
        raise ModelNotFoundError(
            f"no model at {uri}: train one with `churnguard train` or promote a version "
            f"with `churnguard promote VERSION`"
        ) from exc
    bundle = ModelBundle.load(local / "artifacts" / "bundle")
    return LoadedModel(
        bundle, _info(bundle, name=name, version=version, alias=parsed[1] if parsed else None, uri=uri)
    )


def _info(bundle: ModelBundle, *, name: str, version: str, alias: str | None, uri: str) -> ModelInfo:
    return ModelInfo(
        name=name,
        version=version,
        alias=alias,
        trained_at=str(bundle.metadata.get("trained_at", "unknown")),
        horizon_days=bundle.horizon_days,
        uri=uri,
    )


class ModelHolder:
    """The model in use, refreshed from the registry by a background watcher."""

    def __init__(self, uri: str, poll_seconds: float = 10.0) -> None:
        self.uri = uri
        self.poll_seconds = poll_seconds
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        self.registry_reachable = True
        self.last_check: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load (or reload) now; on failure keep the current model and record why."""
        with self._lock:
            try:
                if self.current is not None:
                    version = resolve_version(self.uri)
                    self.registry_reachable = True
                    if version is None or version == self.current.info.version:
                        self.last_error = None
                        return
                loaded = load_model(self.uri)
                self.current = loaded
                self.registry_reachable = True
                self.last_error = None
                log.info("serving model %s version %s", loaded.info.name, loaded.info.version)
            except ModelNotFoundError as exc:
                self.last_error = str(exc)
            except Exception as exc:  # tracking store down or unreadable: keep what we have
                self.registry_reachable = False
                self.last_error = f"model registry unreachable: {exc.__class__.__name__}"
                log.warning("model refresh failed: %s", self.last_error)
            finally:
                self.last_check = time.time()

    def start(self) -> None:
        if self.poll_seconds <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._watch, name="churnguard-model-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.load()
