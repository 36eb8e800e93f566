"""The benchmark's pandas implementation computes exactly what ``compute_features`` computes.

This is what keeps the benchmark's comparison honest: if ``features/build.py`` changes, the pandas twin in
``benchmarks/pandas_features.py`` must change with it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from datetime import datetime
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from features.engine import compute_features, compute_labels
from features.loading import Dataset, load_dataset
from features.snapshots import observed_until
from features.synthetic import generate_dataset

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


reference = _module("pandas_features")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    root = tmp_path_factory.mktemp("synthetic")
    generate_dataset(root / "data", 300, seed=7, truth_dir=root / "truth")
    return load_dataset(root / "data")


def _with_order_ids(dataset: Dataset) -> Dataset:
    """The same data with an order id on every row: the features must then roll lines up to orders."""
    order_ids = pd.RangeIndex(len(dataset.transactions)).astype(str)
    return dataclasses.replace(dataset, transactions=dataset.transactions.assign(order_id=order_ids))


@pytest.mark.parametrize("rows_are_orders", [False, True], ids=["rolled-up", "rows-as-orders"])
@pytest.mark.parametrize("days_before_end", [0, 200, 700])
def test_pandas_reference_equals_compute_features_on_synthetic_data(
    synthetic: Dataset, days_before_end: int, rows_are_orders: bool
) -> None:
    dataset = synthetic if rows_are_orders else _with_order_ids(synthetic)
    cutoff = observed_until(dataset) - pd.Timedelta(days=days_before_end)
    expected = compute_features(dataset, cutoff)
    assert len(expected) > 50
    assert reference.compare(reference.compute_features_pandas(dataset, cutoff), expected) == []


def test_reading_rows_as_orders_gives_the_rolled_up_features_and_labels_when_order_ids_are_unique(
    synthetic: Dataset,
) -> None:
    """The fast path is a shortcut, not an approximation: same features, same labels, to the bit."""
    assert synthetic.rows_are_orders  # the generator's order ids never repeat, so the loader drops them
    direct, rolled = synthetic, _with_order_ids(synthetic)
    assert not rolled.rows_are_orders
    for days_before_end in (0, 300):
        cutoff = observed_until(synthetic) - pd.Timedelta(days=days_before_end)
        assert reference.compare(compute_features(rolled, cutoff), compute_features(direct, cutoff)) == []
        pd.testing.assert_frame_equal(compute_labels(rolled, cutoff, 90), compute_labels(direct, cutoff, 90))


def test_counting_orders_per_channel_in_the_purchase_pass_gives_the_grouped_channel_features(
    synthetic: Dataset,
) -> None:
    """Channels known in advance are counted in the one pass over the orders; text channels take the
    second grouping by (customer, channel). Both must give the same features, to the bit."""
    assert synthetic.transactions["channel"].dtype == "category"  # the loader's form: the counting path
    as_text = synthetic.transactions.assign(channel=synthetic.transactions["channel"].astype(str))
    grouped = dataclasses.replace(synthetic, transactions=as_text)
    for days_before_end in (0, 300):
        cutoff = observed_until(synthetic) - pd.Timedelta(days=days_before_end)
        counted = compute_features(synthetic, cutoff)
        assert counted["channels_used"].max() > 1 and counted["main_channel_share"].min() < 1
        pd.testing.assert_frame_equal(compute_features(grouped, cutoff), counted)


EDGE_TRANSACTIONS = """customer_id,timestamp,amount,order_id,discount,channel,returned,delivery_delay_days
A,2024-01-02 10:00,60,O1,,web,false,
A,2024-01-02 11:00,40,O1,5,app,true,1
A,2024-01-02 11:00,10,O2,,store,false,0
A,2024-03-31 23:59:59.5,0,O3,0,web,false,
B,2024-02-01,20,O1,,web,false,
B,2024-06-30 12:00,20,O4,3,phone,false,4
B,2024-07-01,99,O5,,web,false,
C,2023-08-01,5,O6,0,web,false,0
"""
EDGE_INTERACTIONS = """customer_id,timestamp,type,channel,resolved,resolution_hours,satisfaction,nps
A,2024-05-01,complaint,phone,,,,
A,2024-05-01,survey,email,,,3,
A,2024-05-01,survey,web,,,5,10
A,2024-06-01,callback,chat,true,3,,
B,2023-01-01,complaint,store,false,100,1,0
B,2024-06-30,inquiry,web,true,,,
"""
EDGE_CUSTOMERS = "customer_id,signup_date,tier\nA,,1\nB,2024-01-15,2\nC,2023-07-01,3\nD,2024-06-01,1\n"


def test_pandas_reference_equals_compute_features_on_edge_cases(tmp_path: Path) -> None:
    """Null discounts and delays, orders split over lines and channels, equal timestamps, unknown types."""
    for name, text in (
        ("transactions", EDGE_TRANSACTIONS),
        ("interactions", EDGE_INTERACTIONS),
        ("customers", EDGE_CUSTOMERS),
    ):
        (tmp_path / f"{name}.csv").write_text(text)
    dataset = load_dataset(tmp_path, now=datetime(2025, 1, 1))
    cutoff = pd.Timestamp("2024-07-01")
    expected = compute_features(dataset, cutoff)
    assert expected["customer_id"].tolist() == ["A", "B", "C", "D"]
    assert reference.compare(reference.compute_features_pandas(dataset, cutoff), expected) == []


def test_compare_reports_a_wrong_value_and_a_missing_customer(synthetic: Dataset) -> None:
    cutoff = observed_until(synthetic)
    good = reference.compute_features_pandas(synthetic, cutoff)
    wrong = good.copy()
    wrong.loc[3, "spend_total"] += 0.01
    assert reference.compare(good, wrong)[0].startswith("spend_total: 1 rows differ")
    assert reference.compare(good, good.iloc[1:])[0].startswith("customers differ")
    shuffled = good.sample(frac=1.0, random_state=1)
    assert reference.compare(good, shuffled) == []


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    from tests.features.test_real_exports import NOW, write_shop_export

    folder = tmp_path_factory.mktemp("shop")
    write_shop_export(folder, n_customers=80, seed=11)
    return load_dataset(folder, now=NOW)


@pytest.mark.parametrize("cutoff", ["2023-06-01", "2024-01-20", "2024-04-01", "2024-11-01"])
def test_pandas_reference_equals_compute_features_on_a_shop_export_with_returns(
    shop: Dataset, cutoff: str
) -> None:
    assert shop.has_returns and not shop.rows_are_orders
    expected = compute_features(shop, pd.Timestamp(cutoff))
    assert len(expected) > 20 and ((expected["return_share"] > 0).any() or cutoff < "2024")
    assert reference.compare(reference.compute_features_pandas(shop, pd.Timestamp(cutoff)), expected) == []


def test_pandas_reference_equals_compute_features_when_return_lines_are_rows(tmp_path: Path) -> None:
    """Without order ids every return line is its own return, and refunds can outweigh a window's spend."""
    (tmp_path / "transactions.csv").write_text(
        "customer_id,timestamp,amount\n"
        "A,2024-01-02,60\nA,2024-03-01,-80\nA,2024-06-20,10\nA,2024-06-25,-5\n"
        "B,2024-02-01,20\nB,2024-02-01,-20\nB,2024-06-30,-1\nC,2023-09-01,5\nC,2024-05-01,-5\n"
    )
    dataset = load_dataset(tmp_path, now=datetime(2025, 1, 1))
    assert dataset.rows_are_orders and dataset.has_returns
    expected = compute_features(dataset, pd.Timestamp("2024-07-01"))
    assert expected.set_index("customer_id").loc["A", "spend_180d"] == 0.0  # 10 - 5 - 80, floored
    assert (
        reference.compare(reference.compute_features_pandas(dataset, pd.Timestamp("2024-07-01")), expected)
        == []
    )
