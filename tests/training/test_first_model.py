"""A new user's first ``train`` leaves a usable champion, even above the calibration guard (with a loud
warning everywhere they look); the guard still protects that champion afterwards. Also the rolling-origin
backtest and the refit are logged with the run."""

from __future__ import annotations

import os

import mlflow
import pytest
from mlflow import MlflowClient

from features.model_store import load_model
from features.settings import get_settings
from training import pipeline
from training.config import TrainConfig
from training.registry import CHAMPION, configure_mlflow, version_by_alias

pytestmark = pytest.mark.slow

STRICT = {  # a guard no model meets: the first model must still become champion, with the warning
    "threads": 1,
    "churn": {"num_leaves_grid": [7], "max_trees": 80},
    "revenue": {"max_trees": 60},
    "promotion": {"max_ece": 0.0001},
}


@pytest.fixture
def fresh_home(tmp_path, monkeypatch):
    from tests.conftest import clear_settings_caches

    monkeypatch.setenv("CHURNGUARD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    clear_settings_caches()
    yield tmp_path / "home"
    clear_settings_caches()


def test_first_model_above_the_guard_is_champion_with_a_warning_and_the_guard_holds_after(
    fresh_home, small_data
) -> None:
    assert os.environ["CHURNGUARD_HOME"] == str(fresh_home)
    cfg = TrainConfig.model_validate(STRICT)
    first = pipeline.train(small_data, cfg, get_settings())
    assert first.promoted and "first champion" in first.promotion_reason
    assert "WARNING" in first.promotion_reason and first.warnings
    configure_mlflow(get_settings())
    client = MlflowClient()
    assert version_by_alias(client, "churnguard", CHAMPION) == first.version
    bundle = load_model("models:/churnguard@champion").bundle
    assert bundle.metadata["warnings"] and bundle.metadata["warnings"][0].startswith("calibration: ECE")
    run_id = client.get_model_version("churnguard", first.version).tags["run_id"]
    card = mlflow.artifacts.load_text(f"runs:/{run_id}/model_card.md")
    assert "WARNING" in card and "calibration: ECE" in card and "refitted through" in card

    # the backtest: 3 origins (6 training cutoffs), metrics per origin and a reliability plot each
    backtest = mlflow.artifacts.load_text(f"runs:/{run_id}/tables/backtest.csv").splitlines()
    assert len(backtest) == 1 + 3 and "reference_roc_auc" in backtest[0]
    plots = {a.path for a in client.list_artifacts(run_id, "plots/backtest")}
    assert len(plots) == 3
    assert len(client.get_metric_history(run_id, "backtest.roc_auc")) == 3
    assert bundle.metadata["refit"]["through"] == bundle.metadata["cutoffs"]["validation"]
    assert bundle.revenue_scale > 0

    second = pipeline.train(small_data, cfg, get_settings())
    assert not second.promoted and "guard" in second.promotion_reason
    assert version_by_alias(client, "churnguard", CHAMPION) == first.version
