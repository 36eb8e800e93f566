"""The feature and label expressions give the same answers on Spark (local[2]) as on DuckDB."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
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


def _value_inputs_on_spark(
    backend: Any, transactions: Any, ids: list[str], as_of: pd.Timestamp, economics: Any
) -> pd.DataFrame:
    from features.engine.spark_value import attach_value_inputs

    # text as Python objects: pyspark 4.3 does not take pandas 3's str dtype everywhere
    ids_frame = pd.DataFrame({"customer_id": pd.Series(ids, dtype=object)})
    customers = backend._session.createDataFrame(ids_frame, "customer_id string")
    frame = attach_value_inputs(customers, transactions, as_of, economics).toPandas()
    return frame.sort_values("customer_id", ignore_index=True)


def _assert_same_inputs(spark: pd.DataFrame, local: pd.DataFrame) -> None:
    from features.value import INPUT_COLUMNS

    assert spark["customer_id"].tolist() == local["customer_id"].tolist()
    for name in INPUT_COLUMNS:
        np.testing.assert_allclose(spark[name], local[name], rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("scenario", ["base", "shop_export"])
def test_purchase_summary_equals_the_local_value_inputs(
    backend: Any, folders: dict[str, Path], scenario: str
) -> None:
    """The exact purchase summary Spark computes for batch scoring is `features.value.value_inputs`'
    (the shop export books credit notes: negative days, returns netted into spend)."""
    from features.economics import EconomicsConfig
    from features.value import value_inputs

    dataset = load_dataset(folders[scenario])
    as_of = observed_until(dataset) - pd.Timedelta(days=120)
    economics = EconomicsConfig(gross_margin=0.3, margin_by_channel={"Web": 0.45, "app": 0.2})
    tables = spark_engine.tables_from_dataset(backend, dataset, prefix=f"value_{scenario}")
    known = (dataset.customers["customer_id"], dataset.transactions["customer_id"])
    ids = sorted(set().union(*(c.astype(str) for c in known)))  # a shop export lists no customers
    spark = _value_inputs_on_spark(
        backend, spark_engine.spark_frame(tables.transactions), ids, as_of, economics
    )
    ordered = pd.Series(ids)
    local = value_inputs(dataset.transactions, as_of, ordered, economics).assign(customer_id=ids)
    _assert_same_inputs(spark, local)
    assert (local["value_frequency"] > 0).sum() > 100 and (local["value_T"] == 0).sum() > 10
    if scenario == "base":  # channels are named: margins vary by customer
        assert local["value_margin"].nunique() > 10


def test_purchase_summary_follows_rfm_summary_conventions(backend: Any) -> None:
    """One occasion per calendar day after netting; a day that nets to nothing is no purchase but counts
    against spend after the first one; events at or after the as-of instant are not read."""
    from features.economics import EconomicsConfig
    from features.value import value_inputs

    rows = [
        ("A", "2024-01-01 09:00", 10.0, "web"),  # A's first occasion: one day, two lines
        ("A", "2024-01-01 18:00", 5.0, "app"),
        ("A", "2024-01-05 10:00", 20.0, "store"),
        ("A", "2024-01-05 11:00", -25.0, "store"),  # nets to -5: no occasion, lowers the repeat value
        ("A", "2024-01-09 00:00", 30.0, "Web"),
        ("A", "2024-01-20 12:00", 99.0, "web"),  # at the as-of instant: not read
        ("B", "2024-01-02 10:00", 8.0, "web"),
        ("B", "2024-01-02 12:00", -8.0, "web"),  # nets to zero: B has bought nothing yet
        ("C", "2023-12-30 23:59:59.5", -4.0, "phone"),  # before C's first occasion: not counted
        ("C", "2023-12-31 00:00", 12.0, "unknown"),
        ("C", "2024-01-10 07:30", 3.0, "web"),
    ]
    tx = pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount", "channel"])
    tx["timestamp"] = pd.to_datetime(tx["timestamp"], format="ISO8601")
    as_of = pd.Timestamp("2024-01-20 12:00")
    economics = EconomicsConfig(gross_margin=0.3, margin_by_channel={"Web": 0.5, "app": 0.2})
    transactions = backend._session.createDataFrame(
        tx.astype({"customer_id": object, "channel": object}),
        "customer_id string, timestamp timestamp, amount double, channel string",
    )
    ids = ["A", "B", "C", "D"]
    spark = _value_inputs_on_spark(backend, transactions, ids, as_of, economics)
    local = value_inputs(tx, as_of, pd.Series(ids), economics).assign(customer_id=ids)
    _assert_same_inputs(spark, local)
    by_id = spark.set_index("customer_id")
    summary = by_id[["value_frequency", "value_recency", "value_T", "value_monetary"]]
    assert summary.loc["A"].tolist() == [1.0, 8.0, 19.5, 25.0]
    assert summary.loc["B"].tolist() == summary.loc["D"].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert summary.loc["C"].tolist() == [1.0, 10.0, 20.5, 3.0]
    assert by_id.loc["A", "value_margin"] == pytest.approx((10 * 0.5 + 5 * 0.2 + 20 * 0.3 + 30 * 0.5) / 65)
    assert by_id.loc["B", "value_margin"] == 0.5  # its purchase line counts, though the day nets to zero
    assert by_id.loc["D", "value_margin"] == 0.3


def test_referral_values_on_spark_equal_the_local_ones(backend: Any) -> None:
    """Spark's referral values (the referred customers' spend summed where the transactions lie) are
    `features.referrals`' to the cent, channel margins, the referral day and unscored customers included."""
    from types import SimpleNamespace

    from features.economics import EconomicsConfig
    from features.engine.spark_referrals import referrer_values
    from features.referrals import referral_values, referred_values

    tx = pd.DataFrame(
        [
            ("B", "2024-01-01 09:00", 40.0, "web"),  # before B's referral: not credited
            ("B", "2024-02-01 08:00", 30.0, "app"),  # the referral's day, before its hour: credited
            ("B", "2024-02-10 10:00", -10.0, "web"),
            ("B", "2024-03-01 10:00", 50.0, "store"),
            ("B", "2024-04-02 10:00", 99.0, "web"),  # after as-of
            ("C", "2024-01-15 10:00", 20.0, "web"),
            ("C", "2024-03-05 10:00", -60.0, "web"),  # C returned more than they bought since: 0
            ("E", "2023-11-01 10:00", 100.0, "Web"),  # E is no longer active: their spend only
            ("A", "2024-01-01 10:00", 5.0, "web"),
        ],
        columns=["customer_id", "timestamp", "amount", "channel"],
    )
    tx["timestamp"] = pd.to_datetime(tx["timestamp"], format="ISO8601")
    referrals = pd.DataFrame(
        [
            ("A", "B", "2024-02-01 20:00"),
            ("A", "C", "2024-02-01 00:00"),
            ("A", "E", "2023-10-01 00:00"),
            ("G", "D", "2024-01-01 00:00"),  # D bought nothing yet
            ("K", "F", "2024-01-01 00:00"),  # F's value is unknown
            ("H", "B", "2024-03-01 00:00"),  # B was referred by A first
            ("A", "A", "2024-01-01 00:00"),
            ("L", "M", "2024-05-01 00:00"),  # after as-of
        ],
        columns=["referrer_id", "referred_id", "timestamp"],
    )
    referrals["timestamp"] = pd.to_datetime(referrals["timestamp"], format="ISO8601")
    scored = pd.DataFrame(
        {
            "customer_id": ["A", "B", "C", "D", "F", "M"],
            "residual_value": [3.0, 10.5, 2.25, 7.0, np.nan, 1.0],
        }
    )
    as_of = pd.Timestamp("2024-04-01")
    economics = EconomicsConfig(gross_margin=0.3, margin_by_channel={"web": 0.5, "app": 0.2})
    session = backend._session
    transactions = session.createDataFrame(
        tx.astype({"customer_id": object, "channel": object}),
        "customer_id string, timestamp timestamp, amount double, channel string",
    )
    on_spark = session.createDataFrame(
        scored.astype({"customer_id": object}), "customer_id string, residual_value double"
    )

    spark = referrer_values(referrals, transactions, on_spark, as_of, economics).set_index("customer_id")
    data = SimpleNamespace(referrals=referrals, transactions=tx)
    ids = sorted(spark.index)
    local = referral_values(referrals, referred_values(data, as_of, scored, economics), as_of, ids)

    assert ids == ["A", "G", "K"]  # H's repeat, A's self-referral and L's later referral count for nobody
    np.testing.assert_allclose(spark.loc[ids, "referral_value"], local, rtol=0, atol=1e-9)
    b_margin = (40 * 0.5 + 30 * 0.2 + 50 * 0.3) / 120
    assert spark.loc["A", "referral_value"] == pytest.approx((70 * b_margin + 10.5) + 2.25 + 100 * 0.5)
    assert spark.loc["G", "referral_value"] == 7.0
    assert np.isnan(spark.loc["K", "referral_value"])
