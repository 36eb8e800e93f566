"""Log a finished training run to MLflow, register it, and apply the promotion policy against the champion.

Knows MLflow; knows nothing about how the models were fitted (``training.pipeline`` does, and builds its
result from the :class:`Registration` returned here).
"""

from __future__ import annotations

import importlib.util
import json
import platform
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.types.schema import AnyType, ColSpec, Schema

from features.bundle import ModelBundle
from features.errors import ChurnguardError
from features.model_store import load_model
from training import evaluate as ev
from training.evaluate import Backtest, Evaluation
from training.promotion import Champion, UnreadableChampion, decide, paired_noise
from training.registry import CHALLENGER, CHAMPION, configure_mlflow, promote, store_lock, version_by_alias
from training.run import RunContext

# Packages whose versions are tagged on every run; those marked True are also pinned for the pyfunc.
_PACKAGES = {
    "lightgbm": True,
    "scikit-learn": True,
    "pandas": True,
    "numpy": True,
    "mlflow": True,
    "ibis-framework": False,
    "duckdb": False,
    "shap": False,
}
# What loading or scoring a champion can raise: a missing or unreadable version, an old bundle format.
_UNREADABLE = (ChurnguardError, MlflowException, OSError, ValueError, KeyError, lgb.basic.LightGBMError)


@dataclass(frozen=True)
class Registration:
    """What the registry did with the run: its id, the new version, and the promotion verdict."""

    run_id: str
    version: str
    promoted: bool
    reason: str


def _versions() -> dict[str, str]:
    found = {}
    for package in _PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def provenance() -> dict[str, str]:
    """Git commit, Python and package versions, logged as tags with every run."""
    info = {"python": platform.python_version()}
    info.update({f"version_{package}": version for package, version in _versions().items()})
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
            check=False,
        ).stdout.strip()
        info["git_commit"] = commit or "unknown"
    except OSError:
        info["git_commit"] = "unknown"
    return info


def requirements() -> list[str]:
    """Pins for the logged pyfunc: what scoring needs, at the versions that trained it."""
    return [f"{package}=={version}" for package, version in _versions().items() if _PACKAGES[package]]


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


def _log_run(folder: Path, bundle: ModelBundle, evaluation: Evaluation, context: RunContext) -> Any:
    """Parameters, tags, metrics, artifacts and the pyfunc; returns MLflow's model info."""
    cfg = context.cfg
    mlflow.log_params(_flat("", cfg))
    mlflow.set_tags({**provenance(), "horizon_days": str(cfg.horizon_days)})
    for table, kind in ((evaluation.churn_table, "churn"), (evaluation.revenue_table, "revenue")):
        for row in table.to_dict("records"):
            model = row.pop("model")
            mlflow.log_metrics({f"{kind}.{model}.{k}": float(v) for k, v in row.items() if np.isfinite(v)})
    mlflow.log_metrics({f"business.{k}": v for k, v in evaluation.business.items()})
    calibration = evaluation.purchase_calibration
    if calibration is not None:  # BG/NBD's P(a purchase within the horizon) against who bought
        mlflow.log_metrics(calibration.metrics())
        mlflow.log_text(calibration.table.to_csv(index=False), "tables/p_purchase_calibration.csv")
    mlflow.log_metrics({f"seconds.{k}": v for k, v in context.timings.items()})
    _log_backtest(evaluation.backtest)
    mlflow.log_dict(context.fingerprint, "data_fingerprint.json")
    mlflow.log_artifacts(str(folder / "plots"), "plots")
    mlflow.log_artifacts(str(folder / "tables"), "tables")
    mlflow.log_artifact(str(folder / "model_card.md"))
    example = _input_example(evaluation.frame, bundle)
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=_pyfunc_file(),
        artifacts={"bundle": str(folder / "bundle")},
        signature=_signature(example, bundle),
        input_example=example,
        pip_requirements=requirements(),
    )


def _signature(example: pd.DataFrame, bundle: ModelBundle) -> ModelSignature:
    """Numeric inputs untyped: the feature table keeps counts as int64 (long on Spark), which MLflow refuses
    for a double column ("Can not safely convert int64 to float64"); the pyfunc casts every number to
    float64 itself (``features.pyfunc_model.as_model_numbers``). Categoricals are strings."""
    inputs = Schema(
        [
            ColSpec("string" if info.categories is not None else AnyType(), info.name, required=False)
            for info in bundle.features
        ]
    )
    return ModelSignature(inputs=inputs, outputs=infer_signature(example, bundle.predict(example)).outputs)


def _log_backtest(backtest: Backtest | None) -> None:
    """Per-origin metrics as MLflow metrics with the origin's index as step (a curve per metric)."""
    if backtest is None:
        return
    for step, row in enumerate(backtest.table.to_dict("records")):
        metrics = {
            f"backtest.{k}": float(v)
            for k, v in row.items()
            if isinstance(v, int | float | np.number) and np.isfinite(v)
        }
        mlflow.log_metrics(metrics, step=step)


def log_and_register(
    folder: Path,
    bundle: ModelBundle,
    *,
    evaluation: Evaluation,
    context: RunContext,
    allow_promotion: bool = True,
) -> Registration:
    """Log the run (``folder`` holds plots/, tables/, model_card.md and bundle/), register a version as
    challenger, then promote it if :mod:`training.promotion` says so."""
    settings = context.settings
    configure_mlflow(settings)
    client = MlflowClient()
    name = settings.model_name
    with mlflow.start_run(run_name=f"train-h{context.cfg.horizon_days}") as run:
        info = _log_run(folder, bundle, evaluation, context)
    with store_lock(settings):  # register and promote as one step against concurrent runs
        version = str(mlflow.register_model(info.model_uri, name).version)
        client.set_model_version_tag(name, version, "run_id", run.info.run_id)
        client.set_model_version_tag(name, version, "metrics", json.dumps(bundle.metadata["metrics"]))
        client.set_registered_model_alias(name, CHALLENGER, version)
        promoted, reason = False, "not promoted: --no-promote"
        if allow_promotion:
            table = evaluation.churn_table.set_index("model")
            candidate = table.loc["churnguard"].to_dict()
            champion = _current_champion(client, name, evaluation)
            if isinstance(champion, Champion):  # like for like: both on the rows neither was fitted on
                rows = _comparison_rows(evaluation)
                p = evaluation.churn_scores["churnguard"][rows]
                candidate = {**ev.churn_metrics(evaluation.y[rows], p), "ece": candidate["ece"]}
            baselines = table.loc[table.index.isin(PROMOTION_BASELINES)].to_dict("index")
            noise = None if isinstance(champion, Champion) else _baseline_noise(evaluation, context)
            decision = decide(candidate, baselines, champion, context.cfg.promotion, noise)
            promoted, reason = decision.promoted, decision.reason
            if promoted:
                promote(client, name, version)
        client.set_model_version_tag(name, version, "promotion", reason)
    return Registration(run.info.run_id, version, promoted, reason)


def _baseline_noise(evaluation: Evaluation, context: RunContext) -> dict[str, float]:
    """Per promotion baseline, the standard error of the candidate's lead over it on the validation rows
    (``training.promotion.paired_noise``, on the promotion metric)."""
    scores = evaluation.churn_scores
    others = {name: scores[name] for name in PROMOTION_BASELINES if name in scores}
    if len(evaluation.y) > NOISE_ROWS:  # 1.96 standard errors are well inside the tolerance by then
        return {}
    judged = ev.METRIC_FUNCTIONS[context.cfg.promotion.metric]
    return paired_noise(judged, evaluation.y, scores["churnguard"], others, seed=context.cfg.seed)


# Above this many validation customers the paired noise of PR AUC (about 0.004 at 20,000) is far inside
# the default tolerance, and the bootstrap is skipped.
NOISE_ROWS = 20_000

# The rules a first model must not clearly lose to (training.promotion). BG/NBD's churn probability is
# reported beside them, not a gate: on small purchase logs it can rank as well as the first model.
PROMOTION_BASELINES = ("recency_rule", "rfm_logistic")


def _current_champion(
    client: MlflowClient, name: str, evaluation: Evaluation
) -> Champion | UnreadableChampion | None:
    """The champion's metrics on the candidate's validation rows; an unreadable one is said so, by name."""
    current = version_by_alias(client, name, CHAMPION)
    if current is None:
        return None
    rows = _comparison_rows(evaluation)
    try:
        champion = load_model(f"models:/{name}/{current}").bundle
        p = champion.predict(evaluation.frame.iloc[rows])["churn_probability"].to_numpy()
    except _UNREADABLE as exc:
        return UnreadableChampion(current, f"{exc.__class__.__name__}: {exc}"[:200])
    return Champion(current, ev.churn_metrics(evaluation.y[rows], p))


def _comparison_rows(evaluation: Evaluation) -> np.ndarray:
    """Positions of the validation rows a champion and its challenger are compared on: the held-out
    customers, because a deployed champion was refitted on the others at this very cutoff."""
    if evaluation.holdout is None or not evaluation.holdout.any():
        return np.arange(len(evaluation.y))
    return np.flatnonzero(evaluation.holdout)


def _pyfunc_file() -> str:
    """The model-from-code file MLflow runs at load time (found, not imported: importing it registers
    a model instance)."""
    spec = importlib.util.find_spec("features.pyfunc_model")
    assert spec is not None and spec.origin is not None
    return spec.origin
