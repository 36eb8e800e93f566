"""Batch scores computed on Spark equal local batch scores, and load into the serving store."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.features.spark_support import spark_backend

pytestmark = [pytest.mark.spark, pytest.mark.slow]


# Spark's feature sums agree with DuckDB's to about 1e-15, not always to the bit: a feature value that lies
# on a rounding boundary of its printed form (an average order value of 24.00875 shown to 4 decimals) can
# print one unit of its last digit apart. Texts are compared word for word and number for number, numbers
# to one unit of their last printed digit; everything else must be identical.
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _unit(printed: str) -> float:
    return 10.0 ** -len(printed.partition(".")[2])


def assert_same_text(spark: str, local: str, where: str) -> None:
    assert _NUMBER.split(spark) == _NUMBER.split(local), where
    for a, b in zip(_NUMBER.findall(spark), _NUMBER.findall(local), strict=True):
        assert abs(float(a) - float(b)) <= 1.000001 * max(_unit(a), _unit(b)), f"{where}: {a} vs {b}"


def assert_same_json(spark: Any, local: Any, where: str) -> None:
    if isinstance(local, dict):
        assert isinstance(spark, dict) and spark.keys() == local.keys(), where
        for key, value in local.items():
            assert_same_json(spark[key], value, f"{where}.{key}")
    elif isinstance(local, list):
        assert isinstance(spark, list) and len(spark) == len(local), where
        for i, (a, b) in enumerate(zip(spark, local, strict=True)):
            assert_same_json(a, b, f"{where}[{i}]")
    elif isinstance(local, str):
        assert isinstance(spark, str), where
        assert_same_text(spark, local, where)
    elif isinstance(local, float) and not isinstance(spark, bool):
        # scores print at most 6 decimals and money at 2: a printed 2.0 may be a rounded 2.0000
        unit = min(max(_unit(repr(float(spark))), _unit(repr(local))), 0.01)
        assert abs(spark - local) <= 1.000001 * max(unit, 1e-9 * abs(local)), f"{where}: {spark} vs {local}"
    else:  # whole numbers, booleans, null: exact
        assert spark == local and type(spark) is type(local), f"{where}: {spark!r} vs {local!r}"


def assert_same_documents(spark: pd.Series, local: pd.Series, name: str) -> None:
    """Every row's JSON text (reasons, action, value detail) the same, as above; null where the other is."""
    for i, (a, b) in enumerate(zip(spark.tolist(), local.tolist(), strict=True)):
        if a is None or b is None:
            assert a is None and b is None, f"{name}[{i}]"
        else:
            assert_same_json(json.loads(a), json.loads(b), f"{name}[{i}]")


@dataclass(frozen=True)
class SparkRun:
    output: str  # what `churnguard score --engine spark` printed
    out: Path
    spark: pd.DataFrame  # the Spark scores folder, by customer_id
    local: pd.DataFrame  # `churnguard score`'s file for the same model and data, by customer_id


@pytest.fixture(scope="module")
def spark_run(trained: Any, tmp_path_factory: pytest.TempPathFactory) -> SparkRun:
    """One `churnguard score --engine spark` of the trained champion over the data the local batch scored
    (a run costs tens of seconds in local mode, so the tests below share it). ``--no-store``: the trained
    home's store belongs to the other suites."""
    spark_backend()
    from typer.testing import CliRunner

    from features.cli import build_app

    out = tmp_path_factory.mktemp("spark_scores") / "scores.parquet"
    command = ["score", "--data", str(trained.data), "--out", str(out), "--engine", "spark", "--no-store"]
    result = CliRunner().invoke(build_app(), command)
    assert result.exit_code == 0, result.output
    local = pd.read_parquet(trained.scores_file).sort_values("customer_id", ignore_index=True)
    spark = pd.read_parquet(out).sort_values("customer_id", ignore_index=True)
    return SparkRun(result.output, out, spark, local)


def test_spark_batch_equals_local_batch(spark_run: SparkRun, tmp_path: Path) -> None:
    from serving.spark_batch import load_store
    from serving.store import SqliteScoreStore

    out, spark, local = spark_run.out, spark_run.spark, spark_run.local
    assert (out / "_SUCCESS").exists()
    assert f"scored {len(local):,} customers" in spark_run.output
    assert len(spark) == len(local)
    assert spark["customer_id"].tolist() == local["customer_id"].tolist()
    np.testing.assert_allclose(spark["churn_probability"], local["churn_probability"], rtol=0, atol=1e-9)
    assert spark["risk_tier"].tolist() == local["risk_tier"].tolist()
    assert_same_documents(spark["reasons"], local["reasons"], "reasons")
    for i, (a, b) in enumerate(zip(spark["top_reason"], local["top_reason"], strict=True)):
        assert_same_text(a, b, f"top_reason[{i}]")
    if "expected_revenue_90d" in local.columns:
        np.testing.assert_allclose(spark["expected_revenue_90d"], local["expected_revenue_90d"], atol=1e-9)

    store = SqliteScoreStore(tmp_path / "store.db")
    assert load_store(out, store) == len(local)
    row = local.loc[local["clv"].notna()].iloc[0]
    stored = store.get(row["customer_id"])
    assert stored is not None
    assert stored["churn_probability"] == pytest.approx(row["churn_probability"], abs=1e-9)
    assert stored["clv"] == pytest.approx(row["clv"], abs=1e-9)
    assert store.meta()["as_of"] == local["as_of"].iloc[0]


def test_spark_batch_values_and_actions_equal_local(spark_run: SparkRun) -> None:
    """Lifetime values read the exact purchase summary on Spark too, so values, segments and actions are
    the local ones (they differed while Spark valued customers from feature-based stand-ins)."""
    spark, local = spark_run.spark, spark_run.local
    assert local["clv"].notna().mean() > 0.9  # the champion has a value model: values to compare
    for column in ("clv", "value_at_risk", "value_1y", "p_alive", "expected_net_value"):
        assert spark[column].isna().tolist() == local[column].isna().tolist(), column
        np.testing.assert_allclose(spark[column], local[column], rtol=0, atol=1e-9, err_msg=column)
    for column in ("value_basis", "segment", "action_name"):
        assert spark[column].tolist() == local[column].tolist(), column
    for column in ("clv_detail", "action"):
        assert_same_documents(spark[column], local[column], column)


def test_registered_model_predicts_on_the_feature_table(trained: Any, tmp_path: Path) -> None:
    """The README's model.predict(features_frame) on `churnguard features` output, int64 counts and all."""
    import mlflow

    from features.engine import compute_features
    from features.loading import load_dataset
    from features.model_store import connect
    from features.settings import get_settings
    from features.snapshots import observed_until

    connect(get_settings())
    dataset = load_dataset(trained.data)
    frame = compute_features(dataset, observed_until(dataset))
    assert any(frame[c].dtype == "int64" for c in frame.columns)
    model = mlflow.pyfunc.load_model("models:/churnguard@champion")
    predicted = model.predict(frame.drop(columns=["customer_id"]))
    assert len(predicted) == len(frame)
    assert np.isfinite(np.asarray(predicted.iloc[:, 0], dtype=float)).all()
    json.dumps(predicted.head(1).to_dict("records"), default=str)


def test_untyped_numeric_signature_serves_predict_and_spark_udf(trained: Any, tmp_path: Path) -> None:
    """The signature the Spark report asks training to log (numbers untyped, text as string) takes the
    feature table as `churnguard features` writes it, through predict and through spark_udf."""
    import mlflow
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    import features.pyfunc_model
    from features.engine import compute_features
    from features.loading import load_dataset
    from features.model_store import connect, load_model
    from features.settings import get_settings
    from features.snapshots import observed_until

    backend = spark_backend()
    connect(get_settings())
    bundle = load_model("models:/churnguard@champion").bundle
    bundle_dir = tmp_path / "bundle"
    bundle.save(bundle_dir)
    dataset = load_dataset(trained.data)
    frame = compute_features(dataset, observed_until(dataset))[bundle.feature_names].head(200)
    inputs = Schema(
        [
            ColSpec("string" if info.categories is not None else AnyType(), info.name, required=False)
            for info in bundle.features
        ]
    )
    expected = bundle.predict(features.pyfunc_model.as_model_numbers(frame))
    outputs = infer_signature(frame.head(3), expected.head(3)).outputs
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="untyped",
            python_model=features.pyfunc_model.__file__,
            artifacts={"bundle": str(bundle_dir)},
            signature=ModelSignature(inputs=inputs, outputs=outputs),
        )
    predicted = mlflow.pyfunc.load_model(info.model_uri).predict(frame)
    np.testing.assert_allclose(predicted["churn_probability"], expected["churn_probability"], atol=1e-12)

    session = backend._session
    udf = mlflow.pyfunc.spark_udf(
        session,
        info.model_uri,
        result_type="churn_probability double",
        env_manager="local",
    )
    spark_frame = session.createDataFrame(
        frame.astype({c: object for c in frame.columns if frame[c].dtype == "str"})
    )
    out = spark_frame.select(udf(*bundle.feature_names).alias("p")).select("p.*").toPandas()
    np.testing.assert_allclose(out["churn_probability"], expected["churn_probability"], atol=1e-12)


def test_spark_batch_values_referrals_as_local_batch(
    spark_run: SparkRun, trained: Any, tmp_path: Path
) -> None:
    """A folder with a referrals table (behind a column mapping) gets each referrer's referral_value on
    Spark as local `churnguard score` gives it, to the cent: the loader's rules on which referrals count,
    a referred customer no longer active, spend from the referral's day on. Without the table: null."""
    import shutil

    from typer.testing import CliRunner

    from features.cli import build_app

    assert spark_run.spark["referral_value"].isna().all() and spark_run.local["referral_value"].isna().all()

    data = shutil.copytree(trained.data, tmp_path / "crm")
    scored = spark_run.local
    active = scored.loc[scored["clv"] > 0, "customer_id"].astype(str).tolist()  # valued: a clear sum
    tx = pd.read_parquet(data / "transactions.parquet")
    tx["customer_id"] = tx["customer_id"].astype(str)
    spend = tx.groupby("customer_id")["amount"].sum()
    lost = next(c for c in spend.index if c not in set(scored["customer_id"]) and spend[c] > 0)
    first = tx["timestamp"].min() - pd.Timedelta(days=1)
    bought = tx.loc[tx["customer_id"] == active[1], "timestamp"].sort_values()
    midway = bought.iloc[len(bought) // 2].normalize() + pd.Timedelta(hours=23, minutes=59)
    referrer, second, repeater, self_referrer, nobody, stranger = active[0], *active[3:8]
    rows = [
        (referrer, active[1], midway),  # credited from that day on, the day's earlier purchases too
        (referrer, active[2], first),
        (referrer, active[2], first),  # an exact repeat: dropped
        (referrer, lost, first),  # no longer active: what they spent, no residual value
        (second, active[8], first),
        (repeater, active[1], midway + pd.Timedelta(days=3)),  # active[1] was referrer's already
        (self_referrer, self_referrer, first),
        (stranger, "nobody-we-know", first),
    ]
    pd.DataFrame(rows, columns=["ambassador", "friend", "referred_at"]).to_csv(
        data / "ambassadors.csv", index=False
    )
    (data / "columns.yaml").write_text(
        "referrals:\n  file: ambassadors.csv\n"
        "  columns: {referrer_id: ambassador, referred_id: friend, timestamp: referred_at}\n"
    )
    runner, app = CliRunner(), build_app()
    spark_out, local_out = tmp_path / "spark.parquet", tmp_path / "local.parquet"
    for command in (
        ["score", "--data", str(data), "--out", str(local_out), "--no-store"],
        ["score", "--data", str(data), "--out", str(spark_out), "--engine", "spark", "--no-store"],
    ):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, result.output

    local = pd.read_parquet(local_out).sort_values("customer_id", ignore_index=True)
    spark = pd.read_parquet(spark_out).sort_values("customer_id", ignore_index=True)
    assert spark["customer_id"].tolist() == local["customer_id"].tolist()
    assert spark["referral_value"].notna().all() and local["referral_value"].notna().all()
    np.testing.assert_allclose(spark["referral_value"], local["referral_value"], rtol=0, atol=1e-9)
    values = spark.set_index("customer_id")["referral_value"]
    own = spark.set_index("customer_id")["clv"]
    assert values[referrer] > own[active[1]] + own[active[2]] > 0  # plus their spend, and the lost one's
    assert values[second] >= own[active[8]]
    assert values[repeater] == values[self_referrer] == values[nobody] == values[stranger] == 0.0
    assert (values > 0).sum() == 2
