"""The benchmarks read what the product writes: when a stored form changes, `make bench` must not be the
first to find out (the API benchmark once broke on the serving store's compact rows)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_api

pytestmark = pytest.mark.slow


def test_api_benchmark_requests_carry_each_customers_stored_inputs(trained) -> None:
    pools = bench_api.request_pools(trained.home, trained.api_key)
    gets, _ = pools[bench_api.GET]
    scores, score_headers = pools[bench_api.SCORE]
    invocations, _ = pools[bench_api.MLFLOW]
    assert len(gets) == len(scores) == len(invocations) > 10
    assert score_headers["Authorization"] == f"Bearer {trained.api_key}"
    first = json.loads(scores[0][2])["records"][0]
    assert gets[0][1] == f"/v1/customers/{first['customer_id']}"
    assert first["features"] and all(value is not None for value in first["features"].values())
    split = json.loads(invocations[0][2])["dataframe_split"]
    assert len(split["columns"]) == len(split["data"][0]) >= len(first["features"])
    assert {k: v for k, v in zip(split["columns"], split["data"][0], strict=True) if v is not None} == first[
        "features"
    ]


def test_the_quality_benchmark_cuts_a_world_without_changing_its_shape(tmp_path: Path) -> None:
    """The cut keeps each file's own shape (a shop export stays an invoice CSV read through its
    columns.yaml) and nothing dated at or after the scoring date."""
    import bench_quality
    import pandas as pd

    from features.loading import load_dataset
    from features.snapshots import observed_until
    from features.synthetic import generate_dataset

    world = tmp_path / "shop"
    generate_dataset(world, 300, 2, scenario="shop_export")
    full = load_dataset(world)
    cut_at = observed_until(full) - pd.Timedelta(days=90)
    bench_quality.cut_folder(world, tmp_path / "cut", cut_at)
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == ["columns.yaml", "invoices.csv"]
    seen = load_dataset(tmp_path / "cut")
    assert seen.transactions["timestamp"].max() < cut_at
    before = full.transactions[full.transactions["timestamp"] < cut_at]
    assert len(seen.transactions) == len(before)


def test_the_first_train_on_a_bare_purchase_log_leaves_a_champion_that_scores(tmp_path: Path) -> None:
    """Issue #11's promise on one world per run of the suite (the benchmark checks every world)."""
    import bench_quality

    quality = bench_quality.evaluate_world("purchase_log", 1500, 5, tmp_path)
    assert quality.champion, quality.promotion
    assert quality.customers_scored > 300 and 0.5 < quality.auc <= 1.0
    assert quality.auc >= quality.auc_recency - 0.03  # never clearly worse than a recency rule
