"""Optional hyper-parameter search (``churnguard train --tune N``) with Optuna.

Time-split aware: every trial fits on the older training cutoffs and is scored on the newest training
cutoff, never on the validation cutoff, which stays untouched for the honest evaluation and for
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
from training.fit import _lgb_params


def tune_churn(
    x_fit: pd.DataFrame,
    y_fit: np.ndarray,
    x_es: pd.DataFrame,
    y_es: np.ndarray,
    cfg: ChurnModelConfig,
    trials: int,
    threads: int,
    seed: int,
    monotone: list[int] | None = None,
) -> ChurnModelConfig:
    """The config with the best trial's parameters; num_leaves_grid becomes the best size and a cheaper one."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    fit_set = lgb.Dataset(x_fit, y_fit, free_raw_data=False)
    es_set = lgb.Dataset(x_es, y_es, reference=fit_set, free_raw_data=False)

    def objective(trial: optuna.Trial) -> float:
        params = _lgb_params(
            threads,
            seed,
            objective="binary",
            metric="binary_logloss",
            num_leaves=trial.suggest_int("num_leaves", 4, 63, log=True),
            learning_rate=trial.suggest_float("learning_rate", 0.03, 0.3, log=True),
            min_child_samples=trial.suggest_int("min_child_samples", 10, 300, log=True),
            feature_fraction=trial.suggest_float("feature_fraction", 0.5, 1.0),
            bagging_fraction=cfg.bagging_fraction,
            lambda_l2=trial.suggest_float("lambda_l2", 1e-3, 30.0, log=True),
            monotone_constraints=monotone or [0] * x_fit.shape[1],
            monotone_constraints_method="advanced",
        )
        booster = lgb.train(
            params,
            fit_set,
            num_boost_round=cfg.max_trees,
            valid_sets=[es_set],
            callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)],
        )
        return float(roc_auc_score(y_es, booster.predict(x_es, num_iteration=booster.best_iteration)))

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
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
