"""Optional hyper-parameter search (``churnguard train --tune N``) with Optuna.

Time-split aware: every trial fits on the older training cutoffs and is scored on the held-out training
rows, never on the validation cutoff, which stays untouched for the honest evaluation and for
promotion. The search space is deliberately small; the size knee (explanation cost) still applies
afterwards to the leaf counts around the best trial.
"""

from __future__ import annotations

import logging

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from training.config import ChurnModelConfig
from training.fit import Runtime, boost, churn_params


def tune_churn(
    x: pd.DataFrame,
    y: np.ndarray,
    *,
    eval_set: tuple[pd.DataFrame, np.ndarray],
    cfg: ChurnModelConfig,
    trials: int,
    runtime: Runtime,
    monotone: list[int] | None = None,
) -> ChurnModelConfig:
    """The config with the best trial's parameters; num_leaves_grid becomes the best size and a cheaper one.

    Trials are built by :func:`training.fit.churn_params`, so a trial is the model ``fit_churn`` would fit."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    x_es, y_es = eval_set
    constraints = monotone or [0] * x.shape[1]
    fit_set = lgb.Dataset(x, y, free_raw_data=False)
    es_set = lgb.Dataset(x_es, y_es, reference=fit_set, free_raw_data=False)

    def objective(trial: optuna.Trial) -> float:
        trial_cfg = cfg.model_copy(
            update={
                "learning_rate": trial.suggest_float("learning_rate", 0.03, 0.3, log=True),
                "min_child_samples": trial.suggest_int("min_child_samples", 10, 300, log=True),
                "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
                "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 30.0, log=True),
            }
        )
        leaves = trial.suggest_int("num_leaves", 4, 63, log=True)
        params = churn_params(trial_cfg, runtime, num_leaves=leaves, monotone=constraints)
        booster = boost(params, fit_set, es_set, max_trees=cfg.max_trees, patience=cfg.early_stopping_rounds)
        return float(roc_auc_score(y_es, booster.predict(x_es)))

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=runtime.seed))
    study.optimize(objective, n_trials=trials)
    best = study.best_params
    leaves = int(best["num_leaves"])
    return cfg.model_copy(
        update={
            "num_leaves_grid": sorted({max(2, leaves // 2), leaves}),
            "learning_rate": float(best["learning_rate"]),
            "min_child_samples": int(best["min_child_samples"]),
            "feature_fraction": float(best["feature_fraction"]),
            "lambda_l2": float(best["lambda_l2"]),
        }
    )
