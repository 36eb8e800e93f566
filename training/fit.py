"""Fitting: the churn classifier (sized for accuracy per unit of explanation cost), its calibration,
the revenue forecast's regressor, and the baselines every report compares against."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from features.bundle import Calibration, FeatureInfo
from features.spec import FeatureDef
from training.config import ChurnModelConfig, RevenueModelConfig

RFM_COLUMNS = ["recency_days", "orders_365d", "spend_365d", "orders_total", "spend_total", "tenure_days"]


def describe_features(defs: list[FeatureDef], train: pd.DataFrame) -> list[FeatureInfo]:
    """Feature infos with training categories and the typical values among customers who stayed."""
    stayed = train.loc[~train["churned"].astype(bool)]
    stayed = stayed if len(stayed) else train
    infos = []
    for d in defs:
        column = stayed[d.name]
        if d.unit == "category":
            levels = sorted(str(v).lower() for v in train[d.name].dropna().unique())
            mode = column.mode()
            infos.append(
                FeatureInfo(
                    d.name,
                    d.description,
                    d.unit,
                    d.group,
                    categories=levels,
                    typical=str(mode.iloc[0]) if len(mode) else None,
                )
            )
            continue
        values = pd.to_numeric(column, errors="coerce").dropna()
        quant = values.quantile([0.1, 0.5, 0.9]).tolist() if len(values) else [None, None, None]
        infos.append(
            FeatureInfo(d.name, d.description, d.unit, d.group, typical=quant[1], p10=quant[0], p90=quant[2])
        )
    return infos


@dataclass(frozen=True)
class Runtime:
    """How to fit, as opposed to what: threads and seed (from :class:`~training.config.TrainConfig`)."""

    threads: int = 2
    seed: int = 42


def lgb_params(runtime: Runtime, **params: object) -> dict[str, object]:
    """LightGBM parameters every model here shares (quiet, deterministic for a seed), plus ``params``."""
    return {
        "verbosity": -1,
        "num_threads": runtime.threads,
        "seed": runtime.seed,
        "deterministic": True,
        "force_row_wise": True,
        "bagging_freq": 1,
        **params,
    }


def boost(
    params: dict[str, object], train: lgb.Dataset, valid: lgb.Dataset, *, max_trees: int, patience: int
) -> lgb.Booster:
    """Boost up to ``max_trees`` trees, stop after ``patience`` rounds without gain on ``valid``, and keep
    only the trees up to the best iteration (a trimmed copy: what is saved is what was validated)."""
    booster = lgb.train(
        params,
        train,
        num_boost_round=max_trees,
        valid_sets=[valid],
        callbacks=[lgb.early_stopping(patience, verbose=False)],
    )
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration))


def explanation_cost(booster: lgb.Booster) -> float:
    """Deterministic cost of exact TreeSHAP per row: the summed depth of every leaf of every tree.

    LightGBM's TreeSHAP walks every root-to-leaf path of every tree; measured on this kind of machine
    its time per row follows the total path length at about 25 ns per unit on one core (from 2-leaf
    stumps to 31-leaf trees; the textbook bound trees x leaves x depth^2 overstates deep, thin trees
    and understates shallow ones). Unlike a timing, it picks the same model on a busy machine as on
    a quiet one."""

    def path_length(node: dict[str, object], depth: int = 0) -> int:
        if "leaf_index" in node:
            return depth
        left, right = node["left_child"], node["right_child"]
        return path_length(left, depth + 1) + path_length(right, depth + 1)  # type: ignore[arg-type]

    trees = booster.dump_model()["tree_info"]
    return float(sum(path_length(t["tree_structure"]) for t in trees))


def balanced_depth(num_leaves: int) -> int:
    """The depth of a balanced tree with this many leaves: the cheapest shape to explain."""
    return max(1, math.ceil(math.log2(num_leaves)))


def shap_ms_per_row(booster: lgb.Booster, x: pd.DataFrame, rows: int = 2000) -> float:
    sample = x.iloc[:rows]
    start = time.perf_counter()
    booster.predict(sample, pred_contrib=True, num_threads=1)
    return 1000 * (time.perf_counter() - start) / max(len(sample), 1)


def churn_params(
    cfg: ChurnModelConfig, runtime: Runtime, *, num_leaves: int, monotone: list[int]
) -> dict[str, object]:
    """The churn classifier's LightGBM parameters for one size (also the tuner's trials)."""
    return lgb_params(
        runtime,
        objective="binary",
        metric="binary_logloss",
        num_leaves=num_leaves,
        max_depth=balanced_depth(num_leaves) if cfg.balanced_trees else -1,
        learning_rate=cfg.learning_rate,
        min_child_samples=cfg.min_child_samples,
        feature_fraction=cfg.feature_fraction,
        bagging_fraction=cfg.bagging_fraction,
        lambda_l2=cfg.lambda_l2,
        monotone_constraints=monotone,
        monotone_constraints_method="advanced",
    )


@dataclass
class ChurnFit:
    booster: lgb.Booster
    size_table: pd.DataFrame  # num_leaves, trees, auc, explanation_cost, shap_ms_per_row, chosen
    params: dict[str, object]  # the chosen size's parameters: a refit on more data reuses them


def fit_churn(
    x: pd.DataFrame,
    y: np.ndarray,
    *,
    eval_set: tuple[pd.DataFrame, np.ndarray],
    cfg: ChurnModelConfig,
    runtime: Runtime,
    monotone: list[int] | None = None,
) -> ChurnFit:
    """Try each size of ``cfg.num_leaves_grid`` with early stopping on ``eval_set``; keep the knee: among
    sizes within the explanation budget, the cheapest to explain whose AUC is within tolerance of the best.

    ``monotone`` holds domain rules (more unresolved complaints never lowers risk...) as LightGBM
    monotone constraints, one per column."""
    x_es, y_es = eval_set
    constraints = monotone or [0] * x.shape[1]
    train_set = lgb.Dataset(x, y, free_raw_data=False)
    valid_set = lgb.Dataset(x_es, y_es, reference=train_set, free_raw_data=False)
    rows, boosters, params = [], {}, {}
    for leaves in cfg.num_leaves_grid:
        params[leaves] = churn_params(cfg, runtime, num_leaves=leaves, monotone=constraints)
        booster = boost(
            params[leaves],
            train_set,
            valid_set,
            max_trees=cfg.max_trees,
            patience=cfg.early_stopping_rounds,
        )
        rows.append(
            {
                "num_leaves": leaves,
                "trees": booster.num_trees(),
                "auc": float(roc_auc_score(y_es, booster.predict(x_es))),
                "explanation_cost": explanation_cost(booster),
                "shap_ms_per_row": shap_ms_per_row(booster, x_es),
            }
        )
        boosters[leaves] = booster
    table = pd.DataFrame(rows)
    affordable = table[table["explanation_cost"] <= cfg.max_explanation_cost]
    if affordable.empty:  # nothing within budget: the cheapest to explain
        affordable = table.nsmallest(1, "explanation_cost")
    best = affordable["auc"].max()
    good = affordable[affordable["auc"] >= best - cfg.auc_tolerance]
    chosen = int(good.sort_values(["explanation_cost", "num_leaves"]).iloc[0]["num_leaves"])
    table["chosen"] = table["num_leaves"] == chosen
    return ChurnFit(boosters[chosen], table, params[chosen])


def refit(params: dict[str, object], x: pd.DataFrame, y: np.ndarray, *, trees: int) -> lgb.Booster:
    """The same model fitted again on (more) data, with the tree count early stopping chose before: there
    is no held-out set left to stop on."""
    return lgb.train(params, lgb.Dataset(x, y), num_boost_round=max(1, trees))


def fit_calibration(
    p_fit: np.ndarray,
    y_fit: np.ndarray,
    p_check: np.ndarray,
    y_check: np.ndarray,
    weights: np.ndarray | None = None,
) -> Calibration:
    """Isotonic and Platt fitted on held-out ``p_fit, y_fit`` (optionally ``weights`` per row, e.g. more
    weight on recent cutoffs); the lower Brier score on ``p_check, y_check`` wins."""
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(
        p_fit, y_fit, sample_weight=weights
    )
    isotonic = Calibration("isotonic", x=iso.X_thresholds_.tolist(), y=iso.y_thresholds_.tolist())
    logit = np.log(np.clip(p_fit, 1e-12, 1 - 1e-12) / np.clip(1 - p_fit, 1e-12, 1)).reshape(-1, 1)
    lr = LogisticRegression(C=1e6).fit(logit, y_fit, sample_weight=weights)
    platt = Calibration("platt", a=float(lr.coef_[0][0]), b=float(lr.intercept_[0]))
    scores = {c.method: brier_score_loss(y_check, c.apply(p_check)) for c in (isotonic, platt)}
    return isotonic if scores["isotonic"] <= scores["platt"] else platt


def revenue_params(cfg: RevenueModelConfig, runtime: Runtime) -> dict[str, object]:
    return lgb_params(
        runtime,
        objective="tweedie",
        tweedie_variance_power=cfg.tweedie_variance_power,
        metric="tweedie",
        num_leaves=cfg.num_leaves,
        learning_rate=cfg.learning_rate,
        min_child_samples=cfg.min_child_samples,
        feature_fraction=0.8,
        bagging_fraction=0.8,
    )


def fit_revenue(
    x: pd.DataFrame,
    y: np.ndarray,
    *,
    eval_set: tuple[pd.DataFrame, np.ndarray],
    cfg: RevenueModelConfig,
    runtime: Runtime,
) -> lgb.Booster:
    """Tweedie regression of spend over the horizon: many zeros and a long tail."""
    train_set = lgb.Dataset(x, y, free_raw_data=False)
    valid_set = lgb.Dataset(*eval_set, reference=train_set, free_raw_data=False)
    return boost(
        revenue_params(cfg, runtime),
        train_set,
        valid_set,
        max_trees=cfg.max_trees,
        patience=cfg.early_stopping_rounds,
    )


def recency_baseline(fit: pd.DataFrame, y_fit: np.ndarray) -> IsotonicRegression:
    """'The longer since the last purchase, the likelier gone': recency mapped to a rate, monotone."""
    recency = fit["recency_days"].fillna(fit["tenure_days"]).fillna(1e5).to_numpy()
    return IsotonicRegression(out_of_bounds="clip", increasing=True).fit(recency, y_fit)


def predict_recency(model: IsotonicRegression, frame: pd.DataFrame) -> np.ndarray:
    recency = frame["recency_days"].fillna(frame["tenure_days"]).fillna(1e5).to_numpy()
    return np.asarray(model.predict(recency), dtype=float)


def _rfm_matrix(frame: pd.DataFrame) -> np.ndarray:
    cols = [c for c in RFM_COLUMNS if c in frame.columns]
    filled = frame[cols].fillna({"recency_days": 3650.0}).fillna(0.0)
    return np.log1p(filled.clip(lower=0).to_numpy(float))


def rfm_logistic_baseline(fit: pd.DataFrame, y_fit: np.ndarray, seed: int) -> object:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, random_state=seed))
    return model.fit(_rfm_matrix(fit), y_fit)


def predict_rfm_logistic(model: object, frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(model.predict_proba(_rfm_matrix(frame))[:, 1], dtype=float)  # type: ignore[attr-defined]


def run_rate_revenue(frame: pd.DataFrame, horizon_days: int) -> np.ndarray:
    """Baseline revenue forecast: last year's spend, scaled to the horizon."""
    return frame["spend_365d"].fillna(0).to_numpy(float) * horizon_days / 365.0
