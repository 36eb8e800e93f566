"""Shared fixtures: one small generated dataset and one really trained, registered and scored model
per test session (a real SQLite MLflow store, no mocks). Suites that need them ask for ``trained``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SMALL_TRAIN = {
    "snapshots": 3,
    "threads": 1,
    "churn": {"num_leaves_grid": [7, 15], "max_trees": 150},
    "revenue": {"max_trees": 150},
    "promotion": {"max_ece": 0.1},
}


@dataclass(frozen=True)
class Trained:
    home: Path
    data: Path
    truth: Path
    version: str
    api_key: str
    scores_file: Path
    churn_table: Any
    revenue_table: Any


@pytest.fixture(scope="session")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from features.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("data")
    generate_dataset(root / "crm", n_customers=1500, seed=7)
    return root / "crm"


def _isolated_env(home: Path) -> dict[str, str | None]:
    saved = {
        k: os.environ.get(k) for k in ("CHURNGUARD_HOME", "MLFLOW_TRACKING_URI", "CHURNGUARD_POLL_SECONDS")
    }
    os.environ["CHURNGUARD_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["CHURNGUARD_POLL_SECONDS"] = "0"
    return saved


def clear_settings_caches() -> None:
    from features.settings import get_settings
    from serving.settings import get_serving_settings

    get_settings.cache_clear()
    get_serving_settings.cache_clear()


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, small_data: Path) -> Iterator[Trained]:
    """Train, register (champion), batch-score into the serving store and create an API key, once."""
    from features.settings import get_settings
    from serving.batch import PublishRequest, ScoresFile, publish_scores
    from serving.keys import KeyStore
    from serving.store import SqliteScoreStore
    from training.config import TrainConfig
    from training.pipeline import train

    home = tmp_path_factory.mktemp("home")
    saved = _isolated_env(home)
    clear_settings_caches()
    try:
        result = train(small_data, TrainConfig.model_validate(SMALL_TRAIN), get_settings())
        scores_file = home / "scores.parquet"
        publish_scores(
            PublishRequest(
                small_data,
                "models:/churnguard@champion",
                out_file=ScoresFile(scores_file),
                store=SqliteScoreStore(home / "scores.db"),
                threads=1,
            )
        )
        _, key = KeyStore(home / "api_keys.json").create("tests")
        yield Trained(
            home,
            small_data,
            small_data.parent / "crm-truth",
            result.version,
            key,
            scores_file,
            result.churn_table,
            result.revenue_table,
        )
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        clear_settings_caches()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Any]:
    """Real server processes (``churnguard serve``, ``mlflow server``), always stopped after the test."""
    from tests.integration.servers import Servers

    pool = Servers(tmp_path)
    try:
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture
def api_home(trained: Trained, tmp_path: Path) -> Path:
    """This test's own copy of the trained home (registry, artifacts, serving store, API keys)."""
    from tests.integration.servers import copy_home

    return copy_home(trained.home, tmp_path / "home")
