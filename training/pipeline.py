"""``churnguard train`` as a function: frames -> fit models -> evaluate -> assemble bundle -> learn what
the actions change (when the data has campaigns) -> write artifacts -> register (and promote).

Nothing reaches the registry until every step has succeeded, so a failed or interrupted run leaves the
registry and the current champion untouched.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.btyd import ModelFitError
from features.bundle import FeatureInfo, ModelBundle, to_model_input
from features.campaigns import Playbook, load_campaigns, load_playbook, playbook_from_env
from features.drift import model_reference
from features.economics import EconomicsConfig
from features.engine import compute_labels
from features.loading import Dataset, load_dataset
from features.progress import Report
from features.settings import ChurnguardSettings
from features.snapshots import build_snapshots, model_features, snapshot_cutoffs
from features.spec import FeatureDef
from features.value import (
    ValueModel,
    attach_parts,
    btyd_horizon_revenue,
    fit_value_model,
    revenue_field,
    value_inputs,
)
from training import evaluate as ev
from training import fit
from training.artifacts import write_artifacts
from training.backtest import Fitted, Recipe, fit_recipe, held_out, run_backtest
from training.config import TrainConfig
from training.evaluate import Backtest, Evaluation
from training.promotion import calibration_warning
from training.registry import champion_bundle
from training.run import RunContext, Stopwatch
from training.tracking import log_and_register
from training.uplift import UpliftInputs, UpliftResult, learn_uplift


@dataclass
class TrainResult:
    run_id: str
    version: str
    promoted: bool
    promotion_reason: str
    churn_table: pd.DataFrame
    revenue_table: pd.DataFrame
    business: dict[str, float]
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    uplift: str = ""  # which policy decides actions (learned effects or the playbook's priors) and why
    purchase_calibration: ev.PurchaseCalibration | None = None  # BG/NBD's P(purchase within H) vs who bought


@dataclass(frozen=True)
class Business:
    """What the business tells training beyond the data: the economics config (None: values on a revenue
    basis) and the playbook (None: ``CHURNGUARD_PLAYBOOK``, else the shipped one)."""

    economics: EconomicsConfig | None = None
    playbook: Playbook | None = None


def _noop(stage: str, fraction: float) -> None:
    return None


@dataclass
class Frames:
    """Labelled snapshots by cutoff (oldest first; the newest is the out-of-time validation cutoff)."""

    snapshots: dict[pd.Timestamp, pd.DataFrame]
    cutoffs: dict[str, Any]

    @property
    def valid(self) -> pd.DataFrame:
        return self.snapshots[max(self.snapshots)]

    def training_rows(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Every training cutoff's rows, split by customer into (fitted, held out)."""
        train = pd.concat(
            [f for c, f in self.snapshots.items() if c < max(self.snapshots)], ignore_index=True
        )
        held = held_out(train)
        return train[~held].reset_index(drop=True), train[held].reset_index(drop=True)


@dataclass
class Models:
    """What the training cutoffs decided: the features, the churn model's size, the baselines."""

    features: list[FeatureInfo]
    churn: fit.ChurnFit
    reference_params: dict[str, object]
    recency: Any
    logistic: Any


def build_frames(dataset: Dataset, cfg: TrainConfig, report: Report) -> Frames:
    train_cutoffs, valid_cutoff = snapshot_cutoffs(dataset, cfg.horizon_days, cfg.snapshots, cfg.step_days)
    cutoffs = [*train_cutoffs, valid_cutoff]

    def progress(i: int) -> None:
        report(f"features at {cutoffs[i].date()}", 0.05 + 0.3 * i / len(cutoffs))

    snaps = build_snapshots(dataset, cutoffs, cfg.horizon_days, cfg.threads, progress)
    named = {"train": [str(c.date()) for c in train_cutoffs], "validation": str(valid_cutoff.date())}
    return Frames({s.cutoff: s.frame for s in snaps}, named)


def fit_models(frames: Frames, defs: list[FeatureDef], context: RunContext, report: Report) -> Models:
    """Size the churn classifier by explanation cost on the training cutoffs (a fixed fifth of the
    customers held out to stop early), optionally tuned first; fit the baselines."""
    cfg, watch = context.cfg, context.watch
    runtime = fit.Runtime(threads=cfg.threads, seed=cfg.seed)
    fit_rows, early = frames.training_rows()
    infos = fit.describe_features(defs, pd.concat([fit_rows, early]))
    x_fit, x_es = (to_model_input(f, infos) for f in (fit_rows, early))
    y_fit, y_es = (f["churned"].to_numpy(int) for f in (fit_rows, early))
    monotone = [d.monotone for d in defs]
    churn_cfg = cfg.churn
    if cfg.tune_trials:
        from training.tuning import tune_churn

        report(f"tuning ({cfg.tune_trials} trials)", 0.38)
        with watch("tuning"):
            churn_cfg = tune_churn(
                x_fit,
                y_fit,
                eval_set=(x_es, y_es),
                cfg=cfg.churn,
                trials=cfg.tune_trials,
                runtime=runtime,
                monotone=monotone,
            )
    report("fitting churn model sizes", 0.4)
    with watch("churn_model"):
        churn = fit.fit_churn(
            x_fit, y_fit, eval_set=(x_es, y_es), cfg=churn_cfg, runtime=runtime, monotone=monotone
        )
    unbudgeted = churn_cfg.model_copy(update={"balanced_trees": False})
    reference = fit.churn_params(
        unbudgeted, runtime, num_leaves=churn_cfg.reference_num_leaves, monotone=monotone
    )
    report("fitting baselines", 0.5)
    with watch("baselines"):
        recency = fit.recency_baseline(fit_rows, y_fit)
        logistic = fit.rfm_logistic_baseline(fit_rows, y_fit, cfg.seed)
    return Models(infos, churn, reference, recency, logistic)


def fit_value(
    dataset: Dataset, frames: Frames, cfg: TrainConfig, economics: EconomicsConfig | None
) -> tuple[ValueModel | None, str | None]:
    """BG/NBD + Gamma-Gamma on the purchase summary at the newest labelled cutoff, and the validation
    frame given each customer's value parts (so evaluation and thresholds read exact summaries). When the
    purchase models cannot be fitted the bundle has no value model and the warning says why."""
    cutoff = max(frames.snapshots)
    try:
        model = fit_value_model(dataset.transactions, cutoff, economics=economics, seed=cfg.seed)
    except ModelFitError as exc:
        return None, f"no lifetime value model: {exc}"
    frame = frames.snapshots[cutoff]
    inputs = value_inputs(dataset.transactions, cutoff, frame["customer_id"], economics)
    with_parts = attach_parts(model, frame, dataset.transactions, cutoff, horizon_days=cfg.horizon_days)
    with_parts["btyd_revenue"] = btyd_horizon_revenue(model, inputs, cfg.horizon_days)
    frames.snapshots[cutoff] = with_parts
    return model, None


def bundle_of(
    fitted: Fitted, features: list[FeatureInfo], cfg: TrainConfig, value_model: ValueModel | None = None
) -> ModelBundle:
    return ModelBundle(
        features=features,
        churn_model=fitted.churn,
        revenue_model=fitted.revenue,
        calibration=fitted.calibration,
        horizon_days=cfg.horizon_days,
        thresholds={**cfg.risk_thresholds, "high_value": 0.0},
        metadata={},
        revenue_scale=fitted.revenue_scale,
        value_model=value_model,
    )


def evaluate_out_of_time(
    candidate: Fitted, models: Models, frames: Frames, context: RunContext, backtest: Backtest
) -> Evaluation:
    """The candidate (fitted on the training cutoffs) and the baselines on the validation cutoff."""
    cfg, valid = context.cfg, frames.valid
    scored = bundle_of(candidate, models.features, cfg).predict(valid)
    revenue = scored[revenue_field(cfg.horizon_days)].to_numpy()
    y, spend = valid["churned"].to_numpy(int), valid["future_spend"].to_numpy(float)
    churn_scores = {
        "churnguard": scored["churn_probability"].to_numpy(),
        "rfm_logistic": fit.predict_rfm_logistic(models.logistic, valid),
        "recency_rule": fit.predict_recency(models.recency, valid),
    }
    revenue_scores = {"churnguard": revenue, "run_rate": fit.run_rate_revenue(valid, cfg.horizon_days)}
    if "btyd_revenue" in valid.columns:  # the probabilistic model on the same holdout
        revenue_scores["btyd_bgnbd_gammagamma"] = valid["btyd_revenue"].to_numpy(float)
        churn_scores["btyd_bgnbd"] = 1.0 - valid["value_btyd_keeps"].to_numpy(float)
    churn_table = pd.DataFrame([{"model": k, **ev.churn_metrics(y, v)} for k, v in churn_scores.items()])
    ece = float(churn_table.set_index("model").loc["churnguard", "ece"])
    warning = calibration_warning(ece, cfg.promotion)
    return Evaluation(
        frame=valid,
        x=to_model_input(valid, models.features),
        y=y,
        spend=spend,
        churn_scores=churn_scores,
        revenue_scores=revenue_scores,
        churn_table=churn_table,
        revenue_table=pd.DataFrame(
            [{"model": k, **ev.revenue_metrics(spend, v)} for k, v in revenue_scores.items()]
        ),
        business=ev.business_value(
            y.astype(bool),
            churn_scores["churnguard"],
            revenue_scores["churnguard"],
            spend_if_kept=revenue_scores["run_rate"],
            policy=cfg.business,
            seed=cfg.seed,
        ),
        deciles=ev.revenue_by_decile(spend, revenue_scores["churnguard"]),
        backtest=backtest,
        warnings=(warning,) if warning else (),
        holdout=held_out(valid),
    )


def refit_through_validation(frames: Frames, recipe: Recipe, *, reference: bool) -> tuple[Fitted, dict]:
    """The deployed model: the recipe again, on every labelled cutoff, the validation cutoff included,
    so the model a user deploys is not one period stale (its calibration and revenue level follow the newest
    labelled cutoff). Returns the model and what was refitted, for the metadata and the card."""
    rows = pd.concat(list(frames.snapshots.values()), ignore_index=True)
    fitted = fit_recipe(rows, recipe, reference=reference)
    newest = str(max(frames.snapshots).date())
    summary = (
        f"churn {'reference' if reference else 'budgeted'} model ({fitted.churn.num_trees()} trees) and "
        f"revenue forecast on {len(frames.snapshots)} cutoffs through {newest}; calibration "
        f"({fitted.calibration.method}) and revenue level (x{fitted.revenue_scale:.3f}) on held-out "
        f"customers of every cutoff through {newest}"
    )
    return fitted, {"through": newest, "rows": len(rows), "summary": summary}


def assemble_bundle(
    deployed: Fitted,
    models: Models,
    evaluation: Evaluation,
    context: RunContext,
    refit: dict,
    value_model: ValueModel | None = None,
) -> ModelBundle:
    """The deployable bundle, with the metadata serving shows (metrics, cutoffs, warnings)."""
    bundle = bundle_of(deployed, models.features, context.cfg, value_model)
    scored = bundle.predict(evaluation.frame)
    # Valuable = top fifth by lifetime value (residual value), or by horizon revenue without a value model.
    value = scored["residual_value"].dropna()
    if not len(value):
        value = scored[revenue_field(context.cfg.horizon_days)]
    bundle.thresholds["high_value"] = float(np.quantile(value, 0.8))
    bundle.metadata = {
        "trained_at": context.trained_at,
        "horizon_days": context.cfg.horizon_days,
        "cutoffs": context.cutoffs,
        "metrics": evaluation.headline(),
        # the deployed (refitted) model on the validation customers no fit ever saw: what a report on the
        # training data can reproduce (the refit saw the other validation customers)
        "metrics_deployed": _unseen_metrics(evaluation, scored["churn_probability"].to_numpy()),
        "calibration": deployed.calibration.method,
        "data": context.fingerprint["rows"],
        "refit": refit,
        "explanation_cost": fit.explanation_cost(deployed.churn),
        "warnings": list(evaluation.warnings),
        "value_model": None if value_model is None else value_model.method,
    }
    return bundle


def _unseen_metrics(evaluation: Evaluation, p: np.ndarray) -> dict[str, float]:
    """``churn_*`` metrics of probabilities ``p`` on the validation rows held out of every fit."""
    rows = evaluation.holdout
    if rows is None or not rows.any():
        return {}
    metrics = ev.churn_metrics(evaluation.y[rows], p[rows])
    return {f"churn_{k}": float(v) for k, v in metrics.items()} | {"rows": float(rows.sum())}


def learn_actions(
    dataset: Dataset,
    campaigns: pd.DataFrame | None,
    bundle: ModelBundle,
    cfg: TrainConfig,
    playbook: Playbook | None,
    champion: ModelBundle | None = None,
) -> UpliftResult:
    """What the actions change, learned from the campaigns and gated against the incumbent, the
    ``champion``'s learned effects or else the playbook's priors (:func:`training.uplift.learn_uplift`);
    the effects in force go inside ``bundle``. Either way the bundle's metadata records which policy
    decides actions and why."""
    if playbook is None:  # the user's playbook matters only when there is something to learn
        playbook = playbook_from_env() if campaigns is not None else load_playbook()
    result = learn_uplift(
        UpliftInputs(
            dataset=dataset,
            campaigns=campaigns,
            bundle=bundle,
            playbook=playbook,
            horizon_days=cfg.horizon_days,
            champion=champion,
        )
    )
    bundle.effects = result.effects
    bundle.metadata["uplift"] = result.metadata()
    return result


def _log_uplift(settings: ChurnguardSettings, run_id: str, result: UpliftResult) -> None:
    """The uplift decision as the run's metrics and parameters (the run is closed: logged by id)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from training.registry import configure_mlflow

    configure_mlflow(settings)
    now = int(pd.Timestamp.now(tz="UTC").timestamp() * 1000)
    MlflowClient().log_batch(
        run_id,
        metrics=[Metric(k, v, now, 0) for k, v in result.mlflow_metrics().items()],
        params=[Param(k, v) for k, v in result.mlflow_params().items()],
    )


def train(
    data_dir: Path,
    cfg: TrainConfig,
    settings: ChurnguardSettings,
    *,
    promote: bool = True,
    mapping: Path | None = None,
    report: Report = _noop,
    business: Business | None = None,
) -> TrainResult:
    """Train, evaluate out of time, log and register a version; promote it if the policy allows.

    ``business``: the economics config (None: revenue basis) and the playbook, the actions' costs and
    priors (default: ``CHURNGUARD_PLAYBOOK``, else the shipped one),
    read only when the data folder has a campaigns table."""
    watch = Stopwatch()
    business = business or Business()
    report("validating input", 0.01)
    with watch("validate"):
        dataset = load_dataset(data_dir, mapping)
        known = dataset.customers["customer_id"] if "customers" in dataset.provided else None
        campaigns = load_campaigns(data_dir, mapping, customers=known)
    with watch("features"):
        frames = build_frames(dataset, cfg, report)
    context = RunContext(
        cfg=cfg, settings=settings, fingerprint=dataset.fingerprint(), cutoffs=frames.cutoffs, watch=watch
    )
    models = fit_models(frames, model_features(dataset), context, report)
    report("fitting the lifetime value model", 0.52)
    with watch("value_model"):
        value_model, value_warning = fit_value(dataset, frames, cfg, business.economics)
    recipe = Recipe(
        cfg=cfg,
        features=models.features,
        churn_params=models.churn.params,
        reference_params=models.reference_params,
    )
    report("rolling-origin backtest", 0.55)
    with watch("backtest"):
        backtest = run_backtest(frames.snapshots, recipe)
    capacity = "reference" if backtest.use_reference else "budgeted"
    report("evaluating out of time", 0.65)
    with watch("evaluate"):
        candidate = backtest.at_validation[capacity]
        evaluation = evaluate_out_of_time(candidate, models, frames, context, backtest.backtest)
        if value_warning:
            evaluation = dataclasses.replace(evaluation, warnings=(*evaluation.warnings, value_warning))
        if value_model is not None:  # P(alive) check: BG/NBD's P(a purchase within H) vs who bought
            bought = compute_labels(dataset, max(frames.snapshots), cfg.horizon_days, cfg.threads)
            valid = frames.valid.merge(bought[["customer_id", "future_orders"]], on="customer_id", how="left")
            calibration = ev.purchase_calibration_of(valid, cfg.horizon_days)
            evaluation = dataclasses.replace(evaluation, purchase_calibration=calibration)
    report("refitting through the newest labelled cutoff", 0.7)
    with watch("refit"):
        deployed, refit = refit_through_validation(frames, recipe, reference=backtest.use_reference)
        bundle = assemble_bundle(deployed, models, evaluation, context, refit, value_model)
    if campaigns is not None:
        report("learning what the actions change", 0.72)
    with watch("uplift"):
        champion = champion_bundle(settings) if campaigns is not None else None
        uplift = learn_actions(dataset, campaigns, bundle, cfg, business.playbook, champion)
    report("profiling the drift reference", 0.74)
    with watch("reference"):  # what monitoring compares each scoring run with (features.drift)
        bundle.metadata["reference"] = model_reference(dataset, bundle, frames.snapshots)
    report("explaining and plotting", 0.75)
    with tempfile.TemporaryDirectory(prefix="churnguard-train-") as tmp:
        folder = Path(tmp)
        with watch("explain_plots"):
            write_artifacts(
                folder, bundle, evaluation=evaluation, context=context, size_table=models.churn.size_table
            )
        report("logging to MLflow", 0.85)
        with watch("log_register"):
            registration = log_and_register(
                folder, bundle, evaluation=evaluation, context=context, allow_promotion=promote
            )
            _log_uplift(settings, registration.run_id, uplift)
    report("done", 1.0)
    warnings = list(evaluation.warnings)
    if campaigns is not None and not uplift.used:
        warnings.append(uplift.summary())
    return TrainResult(
        run_id=registration.run_id,
        version=registration.version,
        promoted=registration.promoted,
        promotion_reason=registration.reason,
        churn_table=evaluation.churn_table,
        revenue_table=evaluation.revenue_table,
        business=evaluation.business,
        seconds=dict(watch.seconds),
        warnings=warnings,
        uplift=uplift.summary(),
        purchase_calibration=evaluation.purchase_calibration,
    )
