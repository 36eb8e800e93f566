"""Fitting pieces: reproducible for a seed, calibration that means what it says, evaluation maths."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from features.bundle import to_model_input
from features.loading import load_dataset
from features.snapshots import build_snapshot, model_features, snapshot_cutoffs
from training import evaluate as ev
from training import fit
from training.config import BusinessConfig, ChurnModelConfig

RUNTIME = fit.Runtime(threads=1, seed=3)


def _fit(xs, ys, cfg: ChurnModelConfig) -> fit.ChurnFit:
    """Fit on every cutoff but the newest, stop early on the newest."""
    return fit.fit_churn(
        pd.concat(xs[:-1]), np.concatenate(ys[:-1]), eval_set=(xs[-1], ys[-1]), cfg=cfg, runtime=RUNTIME
    )


@pytest.fixture(scope="module")
def frames(small_data):
    dataset = load_dataset(small_data)
    train_cutoffs, _ = snapshot_cutoffs(dataset, 90, 3)
    snaps = [build_snapshot(dataset, c, 90, threads=1).frame for c in train_cutoffs]
    infos = fit.describe_features(model_features(dataset), pd.concat(snaps))
    return [to_model_input(s, infos) for s in snaps], [s["churned"].to_numpy(int) for s in snaps], snaps


def test_same_data_and_seed_give_the_same_model(frames) -> None:
    xs, ys, _ = frames
    cfg = ChurnModelConfig(num_leaves_grid=[7], max_trees=60)
    first, second = _fit(xs, ys, cfg), _fit(xs, ys, cfg)
    assert first.booster.model_to_string() == second.booster.model_to_string()


def test_size_table_picks_the_cheapest_size_within_tolerance(frames) -> None:
    xs, ys, _ = frames
    cfg = ChurnModelConfig(num_leaves_grid=[3, 15], max_trees=60, auc_tolerance=0.05)
    result = _fit(xs, ys, cfg)
    table = result.size_table
    assert table["chosen"].sum() == 1
    chosen = table[table["chosen"]].iloc[0]
    assert chosen["auc"] >= table["auc"].max() - 0.05
    assert (
        chosen["explanation_cost"]
        == table[table["auc"] >= table["auc"].max() - 0.05]["explanation_cost"].min()
    )


def test_calibration_brings_predicted_rates_to_observed_rates() -> None:
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.05, 0.95, 20_000)
    y = (rng.random(20_000) < truth).astype(int)
    overconfident = np.clip(truth**3, 1e-4, 1 - 1e-4)  # badly calibrated but well ranked
    half = 10_000
    calibration = fit.fit_calibration(overconfident[:half], y[:half], overconfident[half:], y[half:])
    calibrated = calibration.apply(overconfident[half:])
    assert ev.expected_calibration_error(y[half:], calibrated) < 0.02
    assert ev.expected_calibration_error(y[half:], overconfident[half:]) > 0.1


def test_metrics_on_known_cases() -> None:
    y = np.array([0, 0, 1, 1])
    perfect = ev.churn_metrics(y, np.array([0.1, 0.2, 0.8, 0.9]))
    assert perfect["roc_auc"] == 1.0 and perfect["pr_auc"] == 1.0
    spend = np.array([0.0, 0.0, 10.0, 90.0])
    assert ev.revenue_metrics(spend, spend)["gini"] == pytest.approx(1.0)
    assert ev.revenue_metrics(spend, spend)["predicted_to_actual"] == pytest.approx(1.0)
    value = ev.business_value(
        np.array([True, False]),
        np.array([0.9, 0.1]),
        np.array([100.0, 100.0]),
        spend_if_kept=np.array([100.0, 100.0]),
        policy=BusinessConfig(contact_cost=5, success_rate=0.5, top_share=0.5),
    )
    assert value["net_value_by_value_at_risk"] == pytest.approx(0.5 * 100 - 5)


def test_tuning_searches_on_training_cutoffs_only_and_returns_a_usable_config(frames) -> None:
    from training.tuning import tune_churn

    xs, ys, _ = frames
    cfg = ChurnModelConfig(max_trees=40)
    x, y = pd.concat(xs[:-1]), np.concatenate(ys[:-1])
    runtime = fit.Runtime(threads=1, seed=5)
    tuned = tune_churn(x, y, eval_set=(xs[-1], ys[-1]), cfg=cfg, trials=3, runtime=runtime)
    assert tuned != cfg and 1 <= len(tuned.num_leaves_grid) <= 2
    assert 0.03 <= tuned.learning_rate <= 0.3
    again = tune_churn(x, y, eval_set=(xs[-1], ys[-1]), cfg=cfg, trials=3, runtime=runtime)
    assert again == tuned  # seeded: the same search gives the same answer


def test_explanation_budget_rules_out_models_too_costly_to_explain(frames) -> None:
    xs, ys, _ = frames
    cfg = ChurnModelConfig(num_leaves_grid=[3, 31], max_trees=60, auc_tolerance=0.0, max_explanation_cost=1.0)
    result = _fit(xs, ys, cfg)
    table = result.size_table.set_index("num_leaves")
    assert table.loc[3, "explanation_cost"] < table.loc[31, "explanation_cost"]
    assert bool(table.loc[3, "chosen"])  # nothing fits a budget of 1: the cheapest is kept


def _max_depth(node: dict) -> int:
    if "leaf_index" in node:
        return 0
    return 1 + max(_max_depth(node["left_child"]), _max_depth(node["right_child"]))


def test_explanation_cost_is_the_summed_leaf_depth_and_balanced_trees_stay_shallow(frames) -> None:
    """The cost that sizes the model counts every root-to-leaf path TreeSHAP walks; balanced trees keep
    those paths short (7 leaves at most 3 deep instead of up to 6)."""
    xs, ys, _ = frames
    x, y = pd.concat(xs[:-1]), np.concatenate(ys[:-1])
    stumps = lgb.train({"num_leaves": 2, "verbosity": -1, "num_threads": 1}, lgb.Dataset(x, y), 25)
    assert fit.explanation_cost(stumps) == 2 * stumps.num_trees()  # two leaves, each one split deep
    cfg = ChurnModelConfig(num_leaves_grid=[7], max_trees=40)
    booster = _fit(xs, ys, cfg).booster
    depths = [_max_depth(t["tree_structure"]) for t in booster.dump_model()["tree_info"]]
    assert max(depths) <= 3
    assert fit.explanation_cost(booster) <= booster.num_trees() * 7 * 3
