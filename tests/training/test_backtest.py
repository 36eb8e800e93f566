"""The rolling-origin backtest's time rules, and the bundle's revenue forecast level surviving a save
(and the layout bundles had before the revenue forecast was renamed from ``clv``)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from training.backtest import origins, recency_weights
from training.config import TrainConfig


def test_origins_only_train_on_outcomes_known_at_the_origin() -> None:
    cfg = TrainConfig()  # 90-day horizon, 6 training cutoffs 30 days apart, 3 origins
    validation = pd.Timestamp("2026-04-01")
    train = [validation - pd.Timedelta(days=90 + 30 * k) for k in range(5, -1, -1)]
    found = origins([*train, validation], cfg)
    assert [o for o, _ in found] == [validation, train[-1], train[-2]]  # newest first
    for origin, before in found:
        assert len(before) >= cfg.backtest.min_train_cutoffs
        assert all(c + pd.Timedelta(days=90) <= origin for c in before)  # label windows closed by then


def test_too_few_cutoffs_give_fewer_origins() -> None:
    cfg = TrainConfig.model_validate({"backtest": {"origins": 5}})
    cutoffs = [pd.Timestamp("2026-01-01") + pd.Timedelta(days=30 * k) for k in range(4)]
    assert len(origins(cutoffs, cfg)) < 5


def test_recency_weights_halve_per_half_life_and_are_flat_when_off() -> None:
    cutoffs = pd.Series(pd.to_datetime(["2026-01-01", "2026-01-31", "2026-03-02"]))
    assert np.allclose(recency_weights(cutoffs, 1.0, 30), [0.25, 0.5, 1.0])
    assert np.allclose(recency_weights(cutoffs, None, 30), 1.0)


def _bundle(scale: float, metadata: dict | None = None):
    """A one-feature bundle whose churn and revenue models differ (so swapping them shows)."""
    import lightgbm as lgb

    from features.bundle import Calibration, FeatureInfo, ModelBundle

    x = pd.DataFrame({"a": np.arange(200.0)})
    params = {"verbosity": -1, "objective": "regression", "min_data_in_leaf": 5}
    churn = lgb.train(params, lgb.Dataset(x, (np.arange(200.0) > 100).astype(float)), 5)
    revenue = lgb.train(params, lgb.Dataset(x, np.arange(200.0) * 3), 5)
    info = [FeatureInfo("a", "a number", "count", "g")]
    return ModelBundle(info, churn, revenue, Calibration("platt"), 90, {}, metadata or {}, scale)


def test_bundle_keeps_its_revenue_level_and_old_bundles_still_load(tmp_path) -> None:
    from features.bundle import ModelBundle

    bundle = _bundle(2.0)
    bundle.save(tmp_path / "b")
    loaded = ModelBundle.load(tmp_path / "b")
    assert loaded.revenue_scale == 2.0
    frame = pd.DataFrame({"a": [150.0]})
    raw = float(bundle.revenue_model.predict(frame.to_numpy())[0])
    assert loaded.predict(frame)["expected_revenue_90d"].iloc[0] == pytest.approx(2.0 * raw)
    spec = json.loads((tmp_path / "b" / "bundle.json").read_text())
    spec["format"] = 1
    del spec["revenue_scale"]
    (tmp_path / "b" / "revenue_model.txt").rename(tmp_path / "b" / "clv_model.txt")
    (tmp_path / "b" / "bundle.json").write_text(json.dumps(spec))
    assert ModelBundle.load(tmp_path / "b").revenue_scale == 1.0
    spec["format"] = 99
    (tmp_path / "b" / "bundle.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="format 99"):
        ModelBundle.load(tmp_path / "b")


def test_a_bundle_saved_before_the_rename_forecasts_the_same_revenue(tmp_path) -> None:
    """Models registered before ``clv`` meant lifetime value (bundle format 4) name the revenue forecast's
    file ``clv_model.txt``, its level ``clv_scale`` and its validation metrics ``clv_*``: they still load,
    forecast the same revenue, show their metrics under today's names and are saved again in today's."""
    import shutil

    from features.bundle import ModelBundle

    metrics = {"churn_roc_auc": 0.8, "revenue_predicted_to_actual": 1.05, "revenue_spearman": 0.6}
    bundle = _bundle(1.7, {"metrics": metrics})
    frame = pd.DataFrame({"a": [3.0, 80.0, 150.0, np.nan]})
    expected = bundle.predict(frame)
    bundle.save(tmp_path / "new")
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "new", old)
    (old / "revenue_model.txt").rename(old / "clv_model.txt")
    spec = json.loads((old / "bundle.json").read_text())
    spec["format"], spec["clv_scale"] = 4, spec.pop("revenue_scale")
    spec["metadata"]["metrics"] = {"churn_roc_auc": 0.8, "clv_predicted_to_actual": 1.05, "clv_spearman": 0.6}
    (old / "bundle.json").write_text(json.dumps(spec))

    loaded = ModelBundle.load(old)
    assert loaded.revenue_scale == 1.7
    pd.testing.assert_frame_equal(loaded.predict(frame), expected)
    assert loaded.metadata["metrics"] == metrics
    loaded.save(tmp_path / "again")
    assert (tmp_path / "again" / "revenue_model.txt").is_file()
    assert not (tmp_path / "again" / "clv_model.txt").exists()
    resaved = json.loads((tmp_path / "again" / "bundle.json").read_text())
    assert resaved["revenue_scale"] == 1.7 and "clv_scale" not in resaved
