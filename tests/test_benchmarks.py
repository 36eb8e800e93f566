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
