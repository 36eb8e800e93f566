"""The rolling-origin backtest's time rules, and the bundle's CLV level surviving a save."""

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


def test_bundle_keeps_its_clv_level_and_old_bundles_still_load(tmp_path, small_data) -> None:
    import lightgbm as lgb

    from features.bundle import Calibration, FeatureInfo, ModelBundle

    x = pd.DataFrame({"a": np.arange(200.0)})
    booster = lgb.train({"verbosity": -1, "objective": "regression"}, lgb.Dataset(x, np.arange(200.0)), 5)
    bundle = ModelBundle(
        [FeatureInfo("a", "a number", "count", "g")], booster, booster, Calibration("platt"), 90, {}, {}, 2.0
    )
    bundle.save(tmp_path / "b")
    loaded = ModelBundle.load(tmp_path / "b")
    assert loaded.clv_scale == 2.0
    frame = pd.DataFrame({"a": [150.0]})
    raw = float(booster.predict(frame.to_numpy())[0])
    assert loaded.predict(frame)["expected_revenue_90d"].iloc[0] == pytest.approx(2.0 * raw)
    spec = json.loads((tmp_path / "b" / "bundle.json").read_text())
    spec["format"] = 1
    del spec["clv_scale"]
    (tmp_path / "b" / "bundle.json").write_text(json.dumps(spec))
    assert ModelBundle.load(tmp_path / "b").clv_scale == 1.0
    spec["format"] = 99
    (tmp_path / "b" / "bundle.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="format 99"):
        ModelBundle.load(tmp_path / "b")
