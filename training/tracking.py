"""Log a finished training run to MLflow, register it, and decide promotion against the champion."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature

from features.bundle import ModelBundle
from features.model_store import load_model
from features.settings import ChurnguardSettings
from training import evaluate as ev
from training.config import TrainConfig
from training.registry import (
    CHALLENGER,
    CHAMPION,
    configure_mlflow,
    promote,
    store_lock,
    version_by_alias,
)

_LOWER_IS_BETTER = {"brier", "log_loss"}


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: value}


def _input_example(valid: pd.DataFrame, bundle: ModelBundle) -> pd.DataFrame:
    example = valid[bundle.feature_names].head(3).copy()
    for info in bundle.features:  # numbers as doubles: any of them may be missing at scoring time
        column = example[info.name]
        example[info.name] = column.astype(str) if info.categories is not None else column.astype("float64")
    return example


def log_and_register(
    folder: Path,
    bundle: ModelBundle,
    valid: pd.DataFrame,
    y_val: np.ndarray,
    actual_spend: np.ndarray,
    cfg: TrainConfig,
    settings: ChurnguardSettings,
    fingerprint: dict[str, Any],
    churn_table: pd.DataFrame,
    clv_table: pd.DataFrame,
    business: dict[str, float],
    timings: dict[str, float],
    allow_promotion: bool,
) -> Any:
    from training.pipeline import TrainResult, provenance

    configure_mlflow(settings)
    client = MlflowClient()
    name = settings.model_name
    example = _input_example(valid, bundle)
    signature = infer_signature(example, bundle.predict(example))
    with mlflow.start_run(run_name=f"train-h{cfg.horizon_days}") as run:
        mlflow.log_params(_flat("", cfg))
        mlflow.set_tags({**provenance(), "horizon_days": str(cfg.horizon_days)})
        for table, kind in ((churn_table, "churn"), (clv_table, "clv")):
            for row in table.to_dict("records"):
                model = row.pop("model")
                mlflow.log_metrics(
                    {f"{kind}.{model}.{k}": float(v) for k, v in row.items() if np.isfinite(v)}
                )
        mlflow.log_metrics({f"business.{k}": v for k, v in business.items()})
        mlflow.log_metrics({f"seconds.{k}": v for k, v in timings.items()})
        mlflow.log_dict(fingerprint, "data_fingerprint.json")
        mlflow.log_artifacts(str(folder / "plots"), "plots")
        mlflow.log_artifacts(str(folder / "tables"), "tables")
        mlflow.log_artifact(str(folder / "model_card.md"))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=_pyfunc_file(),
            artifacts={"bundle": str(folder / "bundle")},
            signature=signature,
            input_example=example,
            pip_requirements=_requirements(),
        )
    with store_lock(settings):  # register and promote as one step against concurrent runs
        version = str(mlflow.register_model(info.model_uri, name).version)
        client.set_model_version_tag(name, version, "run_id", run.info.run_id)
        client.set_model_version_tag(name, version, "metrics", json.dumps(bundle.metadata["metrics"]))
        client.set_registered_model_alias(name, CHALLENGER, version)

        promoted, reason = False, "not promoted: --no-promote"
        if allow_promotion:
            promoted, reason = _should_promote(client, name, bundle, valid, y_val, cfg)
            if promoted:
                promote(client, name, version)
        client.set_model_version_tag(name, version, "promotion", reason)
    return TrainResult(run.info.run_id, version, promoted, reason, churn_table, clv_table, business)


def _pyfunc_file() -> str:
    """The model-from-code file MLflow runs at load time (found, not imported: importing it registers
    a model instance)."""
    spec = importlib.util.find_spec("features.pyfunc_model")
    assert spec is not None and spec.origin is not None
    return spec.origin


def _requirements() -> list[str]:
    from importlib import metadata

    pins = []
    for package in ("lightgbm", "pandas", "numpy", "mlflow", "scikit-learn"):
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def _should_promote(
    client: MlflowClient,
    name: str,
    bundle: ModelBundle,
    valid: pd.DataFrame,
    y_val: np.ndarray,
    cfg: TrainConfig,
) -> tuple[bool, str]:
    """At least as good as the champion on the same validation cutoff, and within the calibration guard."""
    metric = cfg.promotion.metric
    new = ev.churn_metrics(y_val, bundle.predict(valid)["churn_probability"].to_numpy())
    if new["ece"] > cfg.promotion.max_ece:
        return False, f"not promoted: ECE {new['ece']:.4f} above the guard {cfg.promotion.max_ece}"
    current = version_by_alias(client, name, CHAMPION)
    if current is None:
        return True, f"promoted: first champion ({metric} {new[metric]:.4f})"
    try:
        champion = load_model(f"models:/{name}/{current}").bundle
        old = ev.churn_metrics(y_val, champion.predict(valid)["churn_probability"].to_numpy())
    except Exception as exc:  # an unreadable champion must not block a sound replacement
        return True, f"promoted: champion v{current} could not be evaluated ({exc.__class__.__name__})"
    better = new[metric] <= old[metric] if metric in _LOWER_IS_BETTER else new[metric] >= old[metric]
    verdict = "promoted" if better else "not promoted"
    return better, f"{verdict}: {metric} {new[metric]:.4f} vs champion v{current} {old[metric]:.4f}"
