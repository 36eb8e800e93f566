"""The model report behind ``notebooks/02_model_report.ipynb``: the champion loaded from the registry, its
out-of-time evaluation against the baselines, calibration, gains, SHAP explanations and the customers'
lifetime value (distribution, by segment, beyond one year), with figures.

Like :mod:`features.profile` (the data profiles of ``01_explore``), every function takes its dates
explicitly or derives them from the data, returns DataFrames or figures and prints nothing. The model is
read back through :func:`features.model_store.load_model`, as serving reads it; metrics and their bins
come from :mod:`training.evaluate`, so the report and the training run measure the same way. Scoring the
customers as the API does is serving's job (:mod:`serving.insights`): the notebook wires the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from features.bundle import ModelBundle, ModelInfo
from features.errors import DataValidationError
from features.loading import Dataset
from features.profile import new_figure, wilson_interval
from features.settings import ChurnguardSettings
from features.snapshots import build_snapshot, observed_until, snapshot_cutoffs
from training import evaluate as ev
from training import fit
from training.config import BusinessConfig, TrainConfig

if TYPE_CHECKING:
    import shap


# --------------------------------------------------------------------------------------------- cutoffs


def training_cutoffs(
    dataset: Dataset, horizon_days: int, config: TrainConfig | None = None
) -> list[pd.Timestamp]:
    """The cutoffs ``churnguard train`` would use on this data: training cutoffs, then validation.

    Snapshot count and spacing come from ``config`` (default: the training defaults). Empty when the
    data is too short to train with this horizon. ``01_explore`` marks them on the churn history."""
    config = config or TrainConfig()
    try:
        train, validation = snapshot_cutoffs(dataset, horizon_days, config.snapshots, config.step_days)
    except DataValidationError:
        return []
    return [*train, validation]


# ---------------------------------------------------------------------------------------- the champion


@dataclass(frozen=True)
class Champion:
    """A registered model version loaded for analysis: its bundle and what the registry says about it."""

    bundle: ModelBundle
    info: ModelInfo
    run_id: str | None
    tags: dict[str, str]
    run_metrics: dict[str, float]
    tracking_uri: str


def load_champion(settings: ChurnguardSettings, alias: str = "champion") -> Champion:
    """Load the version behind ``models:/<model_name>@<alias>`` from the tracking store in ``settings``.

    Raises :class:`features.errors.ModelNotFoundError` when no version holds the alias."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from features.errors import ModelNotFoundError
    from features.model_store import connect, load_model

    uri = connect(settings)  # reading only: no experiment to create, no lock to take
    client, name = MlflowClient(), settings.model_name
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise ModelNotFoundError(
            f"no version of '{name}' holds the alias '{alias}' in {uri}: train one with `churnguard train`"
        ) from exc
    bundle = load_model(f"models:/{name}/{version.version}").bundle
    run_metrics = dict(client.get_run(version.run_id).data.metrics) if version.run_id else {}
    info = ModelInfo(
        name=name,
        version=str(version.version),
        alias=alias,
        trained_at=str(bundle.metadata.get("trained_at", "unknown")),
        horizon_days=bundle.horizon_days,
        uri=f"models:/{name}@{alias}",
    )
    return Champion(bundle, info, version.run_id, dict(version.tags or {}), run_metrics, uri)


def champion_overview(champion: Champion) -> pd.DataFrame:
    """The facts a reader needs before trusting the report, one per row (item, value)."""
    bundle, meta = champion.bundle, champion.bundle.metadata
    cutoffs = meta.get("cutoffs", {})
    items = {
        "model": f"{champion.info.name} version {champion.info.version} (@{champion.info.alias})",
        "trained at": champion.info.trained_at,
        "horizon (days)": bundle.horizon_days,
        "training cutoffs": ", ".join(cutoffs.get("train", [])),
        "validation cutoff": cutoffs.get("validation", "unknown"),
        "features": len(bundle.features),
        "calibration": bundle.calibration.method,
        "risk thresholds": ", ".join(f"{k} {v:,.3g}" for k, v in bundle.thresholds.items()),
        "promotion": champion.tags.get("promotion", "unknown"),
        "MLflow run": champion.run_id or "unknown",
        "tracking store": champion.tracking_uri,
    }
    return pd.DataFrame({"item": list(items), "value": [str(v) for v in items.values()]})


def validation_frame(
    dataset: Dataset, bundle: ModelBundle, cutoff: pd.Timestamp | None = None, threads: int = 1
) -> pd.DataFrame:
    """Features and outcomes at the newest fully observed cutoff (``observed_until - horizon``).

    On the data the model was trained on this is its validation cutoff; on newer data it is a later,
    truly unseen one. One row per active customer: customer_id, cutoff, features, churned, future_spend."""
    if cutoff is None:
        cutoff = observed_until(dataset) - pd.Timedelta(days=bundle.horizon_days)
    return build_snapshot(dataset, pd.Timestamp(cutoff), bundle.horizon_days, threads).frame


def baseline_frame(
    dataset: Dataset, bundle: ModelBundle, validation_cutoff: pd.Timestamp, threads: int = 1
) -> pd.DataFrame:
    """Training rows for the baselines: the snapshot one horizon before the validation cutoff.

    Its label window ends where the validation window begins, so the baselines, like the model, learn
    nothing about validation outcomes."""
    cutoff = pd.Timestamp(validation_cutoff) - pd.Timedelta(days=bundle.horizon_days)
    return build_snapshot(dataset, cutoff, bundle.horizon_days, threads).frame


@dataclass
class EvaluationReport:
    """Out-of-time evaluation of a bundle against the baselines every churnguard report uses."""

    cutoff: pd.Timestamp
    churn: pd.DataFrame  # one row per model: roc_auc, pr_auc, brier, log_loss, ece, lift, capture, rate
    # the spend forecast over the horizon (not lifetime value), one row per model: mae, rmse, spearman, gini,
    # capture, predicted_to_actual
    revenue: pd.DataFrame
    business: pd.DataFrame  # one row per ranking: net value of contacting the top share
    # customer_id, churned, future_spend, one probability column per model, expected_revenue, revenue_run_rate
    scores: pd.DataFrame
    models: list[str] = field(default_factory=list)  # churn score columns, the bundle's first


def unseen_rows(bundle: ModelBundle, frame: pd.DataFrame) -> pd.DataFrame:
    """At the model's own validation cutoff, only the customers no fit ever saw (the deployed model was
    refitted on the others, so they would flatter it); at any other cutoff, every row."""
    from training.backtest import held_out

    validation = str(bundle.metadata.get("cutoffs", {}).get("validation", ""))
    if not len(frame) or "metrics_deployed" not in bundle.metadata:
        return frame
    if str(pd.Timestamp(frame["cutoff"].iloc[0]).date()) != validation:
        return frame
    return frame[held_out(frame)].reset_index(drop=True)


def evaluation_report(
    bundle: ModelBundle,
    frame: pd.DataFrame,
    history: pd.DataFrame,
    business: BusinessConfig | None = None,
    seed: int = 42,
) -> EvaluationReport:
    """Metrics of ``bundle`` on ``frame`` (features with outcomes) next to the recency and RFM baselines.

    The baselines are fitted on ``history`` (e.g. :func:`baseline_frame`), which must hold no outcome
    from ``frame``'s window. The spend forecast over the horizon is compared with the run-rate baseline;
    ``business`` prices the value of contacting the top share of customers by value at risk (probability x
    the forecast, as training measures it), by probability and at random."""
    business = business or BusinessConfig()
    frame = unseen_rows(bundle, frame)
    y = frame["churned"].astype(bool).to_numpy(int)
    y_hist = history["churned"].astype(bool).to_numpy(int)
    predicted = bundle.predict(frame)
    churn_scores = {
        "churnguard": predicted["churn_probability"].to_numpy(),
        "rfm_logistic": fit.predict_rfm_logistic(fit.rfm_logistic_baseline(history, y_hist, seed), frame),
        "recency_rule": fit.predict_recency(fit.recency_baseline(history, y_hist), frame),
    }
    spend = frame["future_spend"].to_numpy(float)
    revenue_scores = {
        "churnguard": predicted[f"expected_revenue_{bundle.horizon_days}d"].to_numpy(),
        "run_rate": fit.run_rate_revenue(frame, bundle.horizon_days),
    }
    churn = pd.DataFrame([{"model": k, **ev.churn_metrics(y, v)} for k, v in churn_scores.items()])
    revenue = pd.DataFrame([{"model": k, **ev.revenue_metrics(spend, v)} for k, v in revenue_scores.items()])
    value = ev.business_value(
        y.astype(bool),
        churn_scores["churnguard"],
        revenue_scores["churnguard"],
        spend_if_kept=revenue_scores["run_rate"],
        policy=business,
        seed=seed,
    )
    contacted = value.pop("contacted")
    value_table = pd.DataFrame(
        {"ranking": [k.removeprefix("net_value_") for k in value], "net_value": list(value.values())}
    ).assign(contacted=int(contacted))
    scores = pd.DataFrame(
        {
            "customer_id": frame["customer_id"].to_numpy(),
            "churned": y.astype(bool),
            "future_spend": spend,
            **churn_scores,
            "expected_revenue": revenue_scores["churnguard"],
            "revenue_run_rate": revenue_scores["run_rate"],
        }
    )
    cutoff = pd.Timestamp(frame["cutoff"].iloc[0]) if "cutoff" in frame.columns and len(frame) else pd.NaT
    return EvaluationReport(cutoff, churn, revenue, value_table, scores, list(churn_scores))


def recorded_vs_recomputed(bundle: ModelBundle, report: EvaluationReport) -> pd.DataFrame:
    """Churn metrics recorded at training next to those recomputed now (metric, recorded, recomputed).

    On the training data and its validation cutoff both columns agree (on the customers no fit saw, as
    training recorded them for the deployed model): the model and the features are reproducible. Differences mean newer data, another cutoff or changed feature code."""
    metadata = bundle.metadata
    source = metadata.get("metrics_deployed") or metadata.get("metrics", {})
    recorded = {k.removeprefix("churn_"): v for k, v in source.items() if k.startswith("churn_")}
    now = report.churn.set_index("model").loc["churnguard"]
    rows = [
        {"metric": k, "recorded": recorded.get(k, np.nan), "recomputed": float(now[k])} for k in now.index
    ]
    out = pd.DataFrame(rows)
    out["difference"] = out["recomputed"] - out["recorded"]
    return out


def reliability_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """:func:`training.evaluate.reliability_table` (the bins the ECE uses) with the churners per bin and a
    95% interval of the observed rate: ``bin, mean_predicted, observed, count, churned, observed_low,
    observed_high``."""
    out = ev.reliability_table(y, p, bins)
    out["churned"] = np.rint(out["observed"] * out["count"]).astype(int)
    out["observed_low"], out["observed_high"] = wilson_interval(out["churned"], out["count"])
    return out


def gains_by_model(y: np.ndarray, scores: dict[str, np.ndarray], points: int = 100) -> pd.DataFrame:
    """:func:`training.evaluate.gains_table` of every ranking in ``scores``, stacked in long format:
    ``model, contacted_share, churners_reached``."""
    parts = [ev.gains_table(y, p, points).assign(model=name) for name, p in scores.items()]
    return pd.concat(parts, ignore_index=True)[["model", "contacted_share", "churners_reached"]]


# ------------------------------------------------------------------------------------------ explanations


def _display_values(bundle: ModelBundle, frame: pd.DataFrame) -> np.ndarray:
    """Feature values as a reader knows them: category names, numbers rounded for the plots."""
    x = bundle.model_input(frame)
    columns = [
        x[c].astype(object) if isinstance(x[c].dtype, pd.CategoricalDtype) else x[c].round(2) for c in x
    ]
    return pd.concat(columns, axis=1).to_numpy(dtype=object)


def shap_explanation(
    bundle: ModelBundle, frame: pd.DataFrame, max_rows: int | None = 2000, seed: int = 0
) -> shap.Explanation:
    """Exact TreeSHAP of the churn model (log-odds units) for the rows of ``frame``, as a shap.Explanation.

    At most ``max_rows`` rows, sampled reproducibly with ``seed``; rows keep their order in ``frame``.
    ``data`` holds the model input (categories as codes) for colouring; ``display_data`` the readable
    values; base value plus a row's values equals its raw score exactly."""
    import shap

    rows = frame
    if max_rows is not None and len(frame) > max_rows:
        positions = np.random.default_rng(seed).choice(len(frame), size=max_rows, replace=False)
        rows = frame.iloc[np.sort(positions)]
    matrix = bundle.matrix(rows)
    contrib = bundle.contributions(matrix)
    return shap.Explanation(
        values=contrib[:, :-1],
        base_values=contrib[:, -1],
        data=matrix,
        display_data=_display_values(bundle, rows),
        feature_names=bundle.feature_names,
    )


def shap_importance(explanation: shap.Explanation, top: int | None = None) -> pd.DataFrame:
    """Features by mean |SHAP| (log-odds), largest first, with the share of total importance."""
    values = np.abs(np.asarray(explanation.values)).mean(axis=0)
    out = pd.DataFrame({"feature": explanation.feature_names, "mean_abs_shap": values})
    out["share"] = out["mean_abs_shap"] / max(out["mean_abs_shap"].sum(), 1e-12)
    out = out.sort_values("mean_abs_shap", ascending=False, kind="stable").reset_index(drop=True)
    return out.head(top) if top else out


def numeric_top_features(bundle: ModelBundle, importance: pd.DataFrame, n: int = 3) -> list[str]:
    """The ``n`` most important numeric features: the ones a dependence plot shows best."""
    numeric = {f.name for f in bundle.features if f.categories is None}
    return [f for f in importance["feature"] if f in numeric][:n]


# ------------------------------------------------------------------------------------------------ figures


def reliability_figure(report: EvaluationReport, bins: int = 10) -> Figure:
    """Reliability diagram of the bundle's calibrated probability: does 30% mean 30%?"""
    table = reliability_table(
        report.scores["churned"].to_numpy(), report.scores["churnguard"].to_numpy(), bins
    )
    fig, axes = new_figure(1, 1, (5.5, 5.0))
    ax = axes[0, 0]
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="perfect calibration")
    err = np.vstack([table["observed"] - table["observed_low"], table["observed_high"] - table["observed"]])
    ax.errorbar(
        table["mean_predicted"], table["observed"], yerr=err, marker="o", capsize=3, label="churnguard"
    )
    ax.set(xlabel="predicted churn probability", ylabel="observed churn rate", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(f"Reliability at {report.cutoff.date()} ({bins} equal-count bins)")
    ax.legend()
    return fig


def gains_figure(report: EvaluationReport) -> Figure:
    """Cumulative gains of every churn model: churners reached per share of customers contacted."""
    y = report.scores["churned"].to_numpy()
    table = gains_by_model(y, {m: report.scores[m].to_numpy() for m in report.models})
    fig, axes = new_figure(1, 1, (6.0, 4.5))
    ax = axes[0, 0]
    for model, part in table.groupby("model", sort=False):
        ax.plot(part["contacted_share"], part["churners_reached"], label=model)
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="random")
    ax.set(xlabel="share of customers contacted (riskiest first)", ylabel="share of churners reached")
    ax.set_title("Cumulative gains")
    ax.legend()
    return fig


def backtest_table(champion: Champion) -> pd.DataFrame:
    """The champion's rolling-origin backtest as training logged it (``tables/backtest.csv`` of its run):
    one row per origin, oldest first. Empty when the run logged none (too little history)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if champion.run_id is None:
        return pd.DataFrame()
    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=champion.run_id, artifact_path="tables/backtest.csv"
        )
    except (MlflowException, OSError):
        return pd.DataFrame()
    # Compatibility: runs logged before clv meant lifetime value (issue #13) named the column clv_total_ratio.
    table = pd.read_csv(path).rename(columns={"clv_total_ratio": "revenue_total_ratio"})
    return table.sort_values("origin").reset_index(drop=True)


def backtest_figure(table: pd.DataFrame) -> Figure:
    """Ranking (ROC AUC) and calibration (ECE) at each origin: is any single cutoff deciding the verdict?"""
    fig, axes = new_figure(1, 2, size=(10.0, 3.6))
    left, right = axes[0]
    origins = pd.to_datetime(table["origin"]).dt.strftime("%Y-%m-%d")
    left.plot(origins, table["roc_auc"], marker="o")
    left.set_title("ROC AUC by origin")
    left.set_ylim(0.5, 1.0)
    right.bar(origins, table["ece"])
    right.set_title("ECE by origin (lower is better)")
    for axis in (left, right):
        axis.tick_params(axis="x", rotation=30)
    return fig


# -------------------------------------------------------------------------------------- lifetime value

VALUE_MEANING = "lifetime value (discounted, to the end of the relationship)"
_BASIS_WORDS = {
    "contribution": "contribution basis: margin less the cost to serve, from the economics config",
    "revenue": "revenue basis: no economics config",
}


def lifetime_values(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per scored customer with a lifetime value, from scores as the API returns them (``clv`` an
    object): ``customer_id, segment, residual_value, value_1y, beyond_1y, share_beyond_1y, p_alive, basis,
    annual_discount_rate``.

    ``beyond_1y`` is the part of the value that lies beyond the next 365 days (``residual_value -
    value_1y``), the part a one-year view misses; ``share_beyond_1y`` is it over the value, for customers
    whose value is positive (NaN otherwise). Customers the value model could not value are left out."""
    valued = scores[scores["clv"].map(lambda v: isinstance(v, dict))]
    detail = pd.DataFrame(valued["clv"].tolist(), index=valued.index)
    out = pd.DataFrame(
        {
            "customer_id": valued["customer_id"].astype(str),
            "segment": valued["segment"].astype(str),
            "residual_value": detail.get("residual_value", pd.Series(dtype=float)).astype(float),
            "value_1y": detail.get("value_1y", pd.Series(dtype=float)).astype(float),
        }
    )
    out["beyond_1y"] = out["residual_value"] - out["value_1y"]
    out["share_beyond_1y"] = out["beyond_1y"] / out["residual_value"].where(out["residual_value"] > 0)
    out["p_alive"] = detail.get("p_alive", pd.Series(dtype=float)).astype(float)
    out["basis"] = detail.get("basis", pd.Series(dtype=str))
    out["annual_discount_rate"] = detail.get("annual_discount_rate", pd.Series(dtype=float)).astype(float)
    return out.reset_index(drop=True)


def value_terms(values: pd.DataFrame, scored: int | None = None) -> str:
    """What the values measure, in one line: basis, discount rate and how many customers have one."""
    if values.empty:
        return f"{VALUE_MEANING}: not available (the model has no value model)"
    basis = str(values["basis"].iloc[0])
    rate = float(values["annual_discount_rate"].iloc[0])
    counted = f"{len(values):,}" + (f" of {scored:,}" if scored is not None else "")
    return (
        f"{VALUE_MEANING}; {_BASIS_WORDS.get(basis, basis + ' basis')}; annual discount rate {rate * 100:g}%; "
        f"{counted} customers valued"
    )


VALUE_BY_SEGMENT_COLUMNS = (
    "segment",
    "customers",
    "lifetime_value",
    "median_lifetime_value",
    "share_of_value",
    "value_1y",
    "share_beyond_1y",
)


def value_by_segment(values: pd.DataFrame) -> pd.DataFrame:
    """Where the value is: per segment, customers, total and median lifetime value, the segment's share of
    all value, the value of the next year and the share of the segment's value beyond one year. Sorted by
    total value, largest first; a last row ``all`` totals them."""
    if values.empty:
        return pd.DataFrame(columns=list(VALUE_BY_SEGMENT_COLUMNS))
    parts = pd.concat([values, values.assign(segment="all")], ignore_index=True)
    out = (
        parts.groupby("segment", sort=False)
        .agg(
            customers=("customer_id", "size"),
            lifetime_value=("residual_value", "sum"),
            median_lifetime_value=("residual_value", "median"),
            value_1y=("value_1y", "sum"),
            beyond_1y=("beyond_1y", "sum"),
        )
        .reset_index()
    )
    total = float(values["residual_value"].sum())
    out["share_of_value"] = out["lifetime_value"] / total if total > 0 else np.nan
    out["share_beyond_1y"] = out["beyond_1y"] / out["lifetime_value"].where(out["lifetime_value"] > 0)
    segments = out[out["segment"] != "all"].sort_values("lifetime_value", ascending=False, kind="stable")
    ordered = pd.concat([segments, out[out["segment"] == "all"]], ignore_index=True)
    return ordered[list(VALUE_BY_SEGMENT_COLUMNS)]


def lifetime_value_figure(values: pd.DataFrame) -> Figure:
    """Left: the distribution of lifetime value (1st to 99th percentile; a few customers hold extreme
    values). Right: the share of each customer's value that lies beyond one year (positive values)."""
    fig, axes = new_figure(1, 2, (11.0, 4.0))
    left, right = axes[0]
    value = values["residual_value"].dropna()
    if len(value):
        low, high = np.quantile(value, [0.01, 0.99])
        left.hist(value.clip(low, high), bins=40)
        left.axvline(float(value.median()), ls="--", color="grey", label=f"median {value.median():,.0f}")
        left.legend()
    left.set(xlabel="lifetime value per customer (1st-99th percentile)", ylabel="customers")
    left.set_title("Lifetime value (discounted, to the end of the relationship)")
    share = values["share_beyond_1y"].dropna()
    if len(share):
        right.hist(share.clip(0, 1), bins=np.linspace(0, 1, 21))
        right.axvline(float(share.median()), ls="--", color="grey", label=f"median {share.median():.0%}")
        right.legend()
    right.set(xlabel="share of the customer's value beyond the next 365 days", ylabel="customers")
    right.set_title("Share of each customer's value beyond one year")
    return fig
