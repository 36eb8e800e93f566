"""The feature and label expressions give the same answers on Spark (local[2]) as on DuckDB."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from features.engine import duckdb as duck
from features.engine import spark as spark_engine
from features.engine.spark_source import read_folder
from features.loading import load_dataset
from features.snapshots import model_features, observed_until
from tests.features.spark_support import spark_backend

pytestmark = [pytest.mark.spark, pytest.mark.slow]


@pytest.fixture(scope="session")
def backend() -> Any:
    return spark_backend()


@pytest.fixture(scope="session")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from features.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("spark_data")
    out = {}
    for scenario in ("base", "shop_export", "purchase_log"):
        generate_dataset(root / scenario, 1200, 11, scenario=scenario)
        out[scenario] = root / scenario
    generate_dataset(root / "csv", 1200, 12, file_format="csv")
    out["csv"] = root / "csv"
    return out


def assert_same(spark: pd.DataFrame, duckdb: pd.DataFrame) -> None:
    """Equal frames up to dtype spelling (categorical vs text, int64 vs float64) and 1e-9."""
    assert list(spark.columns) == list(duckdb.columns)
    assert len(spark) == len(duckdb) > 100
    for name in duckdb.columns:
        left, right = spark[name].reset_index(drop=True), duckdb[name].reset_index(drop=True)
        if isinstance(right.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(right.dtype):
            left, right = left.astype(str), right.astype(str)
        pd.testing.assert_series_equal(left, right, check_dtype=False, rtol=1e-9, atol=1e-9, obj=name)


@pytest.mark.parametrize("scenario", ["base", "shop_export", "purchase_log"])
def test_features_and_labels_equal_duckdb(backend: Any, folders: dict[str, Path], scenario: str) -> None:
    dataset = load_dataset(folders[scenario])
    cutoff = observed_until(dataset) - pd.Timedelta(days=120)
    tables = spark_engine.tables_from_dataset(backend, dataset, prefix=scenario)
    features = spark_engine.to_pandas(
        spark_engine.compute_features(tables, cutoff, dataset.attribute_columns)
    )
    labels = spark_engine.to_pandas(spark_engine.compute_labels(tables, cutoff, 90))
    assert_same(features, duck.compute_features(dataset, cutoff))
    assert_same(labels, duck.compute_labels(dataset, cutoff, 90))


@pytest.mark.parametrize("scenario", ["base", "csv", "purchase_log"])
def test_spark_reads_the_folder_itself(backend: Any, folders: dict[str, Path], scenario: str) -> None:
    """Parquet and CSV read by Spark give DuckDB's features on the loader's tables, and the same
    feature selection."""
    source = read_folder(backend, folders[scenario])
    dataset = load_dataset(folders[scenario])
    assert source.observed_until() == observed_until(dataset)
    assert [f.name for f in source.model_features()] == [f.name for f in model_features(dataset)]
    cutoff = observed_until(dataset)
    spark = spark_engine.to_pandas(
        spark_engine.compute_features(source.tables, cutoff, source.attribute_columns)
    )
    assert_same(spark, duck.compute_features(dataset, cutoff))


def test_a_non_utc_session_moves_nobody_between_windows(backend: Any, folders: dict[str, Path]) -> None:
    """A New York session (daylight saving) would shift ages by an hour across DST; the engine runs in
    UTC whatever the session said before."""
    session = backend._session
    dataset = load_dataset(folders["base"])
    cutoff = pd.Timestamp("2025-03-10")  # the Monday after the US switch to summer time
    tables = spark_engine.tables_from_dataset(backend, dataset, prefix="tz")
    expression = spark_engine.compute_features(tables, cutoff, dataset.attribute_columns)
    session.conf.set("spark.sql.session.timeZone", "America/New_York")
    try:
        spark = spark_engine.to_pandas(expression)
        assert session.conf.get("spark.sql.session.timeZone") == "UTC"
    finally:
        session.conf.set("spark.sql.session.timeZone", "UTC")
    assert_same(spark, duck.compute_features(dataset, cutoff))


def test_bad_values_are_reported_without_collecting(backend: Any, tmp_path: Path) -> None:
    from features.errors import DataValidationError

    (tmp_path / "transactions.csv").write_text(
        "customer_id,timestamp,amount\nC1,2024-01-02,10\nC1,yesterday,5\nC2,2024-01-03,abc\n,2024-01-04,3\n"
    )
    with pytest.raises(DataValidationError) as caught:
        read_folder(backend, tmp_path)
    message = str(caught.value)
    assert "timestamp" in message and "yesterday" in message
    assert "amount" in message and "abc" in message


def test_cli_features_on_spark(backend: Any, folders: dict[str, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from features.cli import build_app

    runner = CliRunner()
    data = folders["base"]
    spark_out, duck_out = tmp_path / "spark.parquet", tmp_path / "duck.parquet"
    result = runner.invoke(
        build_app(), ["features", "--data", str(data), "--out", str(spark_out), "--engine", "spark"]
    )
    assert result.exit_code == 0, result.output
    assert (spark_out / "_SUCCESS").exists()
    result = runner.invoke(build_app(), ["features", "--data", str(data), "--out", str(duck_out)])
    assert result.exit_code == 0, result.output
    spark = pd.read_parquet(spark_out).sort_values("customer_id", ignore_index=True)
    assert_same(spark, pd.read_parquet(duck_out))


def test_training_sample_is_stratified_and_matches_duckdb_snapshots(
    backend: Any, folders: dict[str, Path]
) -> None:
    from features.engine.spark_jobs import snapshot_sample
    from features.snapshots import build_snapshots

    data = folders["purchase_log"]
    dataset = load_dataset(data)
    end = observed_until(dataset)
    cutoffs = [end - pd.Timedelta(days=270), end - pd.Timedelta(days=180)]
    source = read_folder(backend, data)
    whole = snapshot_sample(source, cutoffs, 90)
    local = pd.concat([s.frame for s in build_snapshots(dataset, cutoffs, 90)], ignore_index=True)
    assert whole.fraction == 1.0 and whole.population == len(local)
    assert_same(whole.frame, local.sort_values(["cutoff", "customer_id"], ignore_index=True))

    half = snapshot_sample(source, cutoffs, 90, max_rows=len(local) // 2, seed=3)
    assert 0.35 * len(local) < len(half.frame) < 0.65 * len(local)
    assert abs(half.frame["churned"].mean() - local["churned"].mean()) < 0.08
    assert half.as_params()["sample.population"] == str(len(local))
