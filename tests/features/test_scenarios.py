"""Generator worlds ("scenarios"), as a user testing a model on many worlds notices them.

Every world must generate, keep an exact oracle (calibrated and predictive against the churn its own data
shows) and differ from the base world in the one way it promises: seasonal churn, acquisition trends, one
cohort, contracts only, a bare purchase log, a shop's invoice export, a late-delivery spike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from features.errors import ConfigError
from features.synthetic import (
    SCENARIOS,
    GenerationSummary,
    generate_dataset,
    load_truth,
    true_churn_probability,
    true_residual_value,
)

N_CUSTOMERS = 1500
SEED = 4
HORIZON = 90
PAST_CUTOFF = pd.Timestamp("2025-06-01")
SHOP_HEADER = [
    "Invoice",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "Price",
    "Customer ID",
    "Country",
]


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, GenerationSummary]:
    root = tmp_path_factory.mktemp("worlds")
    return {name: generate_dataset(root / name, N_CUSTOMERS, SEED, scenario=name) for name in SCENARIOS}


def _read_invoices(folder: Path) -> pd.DataFrame:
    """The export as a spreadsheet user would read it: text invoice numbers, float-looking customer ids."""
    return pd.read_csv(folder / "invoices.csv", dtype={"Invoice": str, "StockCode": str})


def _purchases_and_cancellations(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Purchases (customer_id, timestamp) and cancellations from whatever shape the world wrote."""
    if (folder / "invoices.csv").exists():
        lines = _read_invoices(folder)
        sales = lines[~lines["Invoice"].str.startswith("C") & lines["Customer ID"].notna()]
        purchases = pd.DataFrame(
            {
                "customer_id": sales["Customer ID"].astype("int64").astype(str),  # 13085.0 -> "13085"
                "timestamp": pd.to_datetime(sales["InvoiceDate"], format="%m/%d/%Y %H:%M"),
            }
        )
        return purchases, purchases.iloc[:0]
    purchases = pd.read_parquet(folder / "transactions.parquet")
    cancellations = folder / "cancellations.parquet"
    return purchases, pd.read_parquet(cancellations) if cancellations.exists() else purchases.iloc[:0]


def _observed_churn(folder: Path, ids: pd.Index, cutoff: pd.Timestamp) -> np.ndarray:
    """The label the oracle predicts: no purchase in [cutoff, cutoff + HORIZON) or a cancellation in it."""
    purchases, cancellations = _purchases_and_cancellations(folder)
    end = cutoff + pd.Timedelta(days=HORIZON)
    bought = purchases.loc[purchases["timestamp"].between(cutoff, end, inclusive="left"), "customer_id"]
    cancels = cancellations.loc[
        cancellations["timestamp"].between(cutoff, end, inclusive="left"), "customer_id"
    ]
    return (~ids.isin(bought) | ids.isin(cancels)).astype(int)


def _spend(folder: Path) -> pd.DataFrame:
    """Every booked amount (customer_id, timestamp, amount), credit notes negative, in any world's shape."""
    if (folder / "invoices.csv").exists():
        lines = _read_invoices(folder).dropna(subset=["Customer ID"])
        return pd.DataFrame(
            {
                "customer_id": lines["Customer ID"].astype("int64").astype(str),
                "timestamp": pd.to_datetime(lines["InvoiceDate"], format="%m/%d/%Y %H:%M"),
                "amount": lines["Quantity"] * lines["Price"],
            }
        )
    return pd.read_parquet(folder / "transactions.parquet", columns=["customer_id", "timestamp", "amount"])


def _death_rate(truth: pd.DataFrame, cutoff: pd.Timestamp) -> float:
    """Share of the customers there at ``cutoff`` who truly leave within the horizon."""
    there = truth[(truth["signup_date"] <= cutoff) & ~(truth["death_time"] <= cutoff)]
    return float((there["death_time"] < cutoff + pd.Timedelta(days=HORIZON)).mean())


# ------------------------------------------------------------------------------------ every world


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_world_has_an_oracle_that_is_calibrated_and_ranks_its_observed_churn(
    worlds: dict[str, GenerationSummary], name: str
) -> None:
    summary = worlds[name]
    truth = load_truth(summary.truth_dir)
    assert truth.attrs["synthetic"]["scenario"] == name
    probability = true_churn_probability(truth, PAST_CUTOFF, HORIZON)
    assert probability.between(0.0, 1.0).all()
    assert set(probability.index) == set(truth.index[truth["signup_date"] <= PAST_CUTOFF])
    label = _observed_churn(summary.out_dir, probability.index, PAST_CUTOFF)
    assert roc_auc_score(label, probability) > 0.85
    alive = ~(truth.loc[probability.index, "death_time"] <= PAST_CUTOFF).to_numpy()
    assert roc_auc_score(label[alive], probability[alive]) > 0.8
    assert abs(probability.mean() - label.mean()) < 0.05, "the oracle uses the rates the world simulated"


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_world_values_who_is_there_and_its_value_ranks_what_they_then_spend(
    worlds: dict[str, GenerationSummary], name: str
) -> None:
    summary = worlds[name]
    truth = load_truth(summary.truth_dir)
    at_end = true_residual_value(truth, truth.attrs["synthetic"]["end"], draws=8)
    gone = truth["death_time"].notna()
    assert (at_end[gone] == 0.0).all() and (at_end[~gone] > 0.0).all()
    value = true_residual_value(truth, PAST_CUTOFF, draws=8)
    assert set(value.index) == set(truth.index[truth["signup_date"] <= PAST_CUTOFF])
    spend = _spend(summary.out_dir)
    year = spend[spend["timestamp"].between(PAST_CUTOFF, PAST_CUTOFF + pd.Timedelta(days=365), "left")]
    spent = year.groupby("customer_id")["amount"].sum().reindex(value.index, fill_value=0.0)
    assert spearmanr(value, spent).statistic > 0.7
    there = value > 0
    assert spearmanr(value[there], spent[there]).statistic > 0.55


@pytest.mark.parametrize("name", ["seasonal", "shop_export"])
def test_same_seed_and_world_give_identical_files_and_the_world_changes_them(
    tmp_path: Path, name: str
) -> None:
    first = generate_dataset(tmp_path / "a", 300, 11, scenario=name)
    again = generate_dataset(tmp_path / "b", 300, 11, scenario=name)
    base = generate_dataset(tmp_path / "c", 300, 11)
    for folder, other in ((first.out_dir, again.out_dir), (first.truth_dir, again.truth_dir)):
        files = sorted(p.name for p in folder.iterdir())
        assert files == sorted(p.name for p in other.iterdir())
        for file in files:
            assert (folder / file).read_bytes() == (other / file).read_bytes(), file
    assert (first.truth_dir / "gap.npy").read_bytes() != (base.truth_dir / "gap.npy").read_bytes()


def test_an_unknown_world_is_refused_with_the_choices_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown scenario 'mars'.*seasonal"):
        generate_dataset(tmp_path / "data", 50, scenario="mars")
    assert list(tmp_path.iterdir()) == []


def test_the_base_world_records_no_scenario_and_the_others_record_theirs(
    worlds: dict[str, GenerationSummary],
) -> None:
    base_meta = (worlds["base"].truth_dir / "meta.json").read_text()
    assert '"scenario"' not in base_meta, "the base world's truth is unchanged"
    seasonal = load_truth(worlds["seasonal"].truth_dir).attrs["synthetic"]
    assert len(seasonal["hazard_factor"]) == len(
        load_truth(worlds["seasonal"].truth_dir).filter(like="gap_").columns
    )


# ------------------------------------------------------------------------------ what each world changes


def test_seasonal_churn_differs_clearly_between_cutoffs_six_months_apart(
    worlds: dict[str, GenerationSummary],
) -> None:
    truth = load_truth(worlds["seasonal"].truth_dir)
    winter = _death_rate(truth, pd.Timestamp("2025-01-01"))
    summer = _death_rate(truth, pd.Timestamp("2025-07-01"))
    assert winter > 1.8 * summer
    base = load_truth(worlds["base"].truth_dir)
    base_ratio = _death_rate(base, pd.Timestamp("2025-01-01")) / _death_rate(base, pd.Timestamp("2025-07-01"))
    assert base_ratio < winter / summer


def test_the_oracle_follows_the_recorded_hazard_factor(worlds: dict[str, GenerationSummary]) -> None:
    truth = load_truth(worlds["seasonal"].truth_dir)
    recorded = true_churn_probability(truth, pd.Timestamp("2025-01-01"), HORIZON)
    flat = truth.copy()
    flat.attrs = {"synthetic": {**truth.attrs["synthetic"], "hazard_factor": None}}
    without = true_churn_probability(flat, pd.Timestamp("2025-01-01"), HORIZON)
    there = recorded < 1.0  # customers who have not left yet
    assert (recorded >= without).all() and (recorded[there] > without[there]).mean() > 0.99, (
        "January's hazard"
    )


def test_growth_and_decline_have_opposite_acquisition_and_hazard_trends(
    worlds: dict[str, GenerationSummary],
) -> None:
    middle = pd.Timestamp("2024-10-01")
    halves = {}
    for name in ("growth", "decline"):
        signups = load_truth(worlds[name].truth_dir)["signup_date"]
        late = signups[signups >= middle]
        early = signups[(signups < middle) & (signups >= pd.Timestamp("2023-03-01"))]  # past the launch wave
        halves[name] = len(late) / len(early)
    assert halves["growth"] > 1.6 and halves["decline"] < 0.6
    growth = load_truth(worlds["growth"].truth_dir).attrs["synthetic"]["hazard_factor"]
    decline = load_truth(worlds["decline"].truth_dir).attrs["synthetic"]["hazard_factor"]
    assert growth[-1] < growth[0] and decline[-1] > 1.5 * decline[0]


def test_single_cohort_signs_everyone_up_in_the_first_months_and_only_decays(
    worlds: dict[str, GenerationSummary],
) -> None:
    customers = pd.read_parquet(worlds["single_cohort"].out_dir / "customers.parquet")
    assert customers["signup_date"].max() < pd.Timestamp("2023-03-03")
    truth = load_truth(worlds["single_cohort"].truth_dir)
    there = [
        (~(truth["death_time"] <= cutoff)).sum()
        for cutoff in pd.date_range("2023-04-01", "2026-04-01", freq="6MS")
    ]
    assert there == sorted(there, reverse=True) and there[-1] < 0.8 * there[0]


def test_contract_only_customers_all_have_plans_and_every_leaver_cancels(
    worlds: dict[str, GenerationSummary],
) -> None:
    folder = worlds["contract_only"].out_dir
    customers = pd.read_parquet(folder / "customers.parquet")
    assert set(customers["plan"]) == {"monthly", "annual"}
    cancellations = pd.read_parquet(folder / "cancellations.parquet").set_index("customer_id")["timestamp"]
    leavers = load_truth(worlds["contract_only"].truth_dir)["death_time"].dropna()
    assert len(leavers) > 50
    assert cancellations.sort_index().equals(leavers.rename("timestamp").sort_index())


def test_purchase_log_writes_only_transactions_with_three_columns(
    worlds: dict[str, GenerationSummary],
) -> None:
    summary = worlds["purchase_log"]
    assert [p.name for p in summary.out_dir.iterdir()] == ["transactions.parquet"]
    transactions = pd.read_parquet(summary.out_dir / "transactions.parquet")
    assert list(transactions.columns) == ["customer_id", "timestamp", "amount"]
    assert len(transactions) == summary.n_transactions > 10 * N_CUSTOMERS
    assert transactions["customer_id"].isin(load_truth(summary.truth_dir).index).all()
    assert (summary.n_interactions, summary.n_cancellations) == (0, 0)


def test_purchase_log_csv_keeps_the_three_columns(tmp_path: Path) -> None:
    summary = generate_dataset(tmp_path / "log", 100, 1, scenario="purchase_log", file_format="csv")
    assert [p.name for p in summary.out_dir.iterdir()] == ["transactions.csv"]
    assert pd.read_csv(summary.out_dir / "transactions.csv").columns.tolist() == [
        "customer_id",
        "timestamp",
        "amount",
    ]


def test_drift_quadruples_late_deliveries_from_the_recorded_date(
    worlds: dict[str, GenerationSummary],
) -> None:
    meta = (worlds["drift"].truth_dir / "meta.json").read_text()
    assert '"from": "2026-03-01"' in meta
    transactions = pd.read_parquet(worlds["drift"].out_dir / "transactions.parquet")
    late = (transactions["delivery_delay_days"] > 0).groupby(transactions["timestamp"] >= "2026-03-01").mean()
    same_season_before = transactions["timestamp"].between("2025-03-01", "2025-06-30", inclusive="left")
    before = (transactions.loc[same_season_before, "delivery_delay_days"] > 0).mean()
    assert late[True] > 2.5 * before


# ------------------------------------------------------------------------------------------- shop export


@pytest.fixture(scope="module")
def invoices(worlds: dict[str, GenerationSummary]) -> pd.DataFrame:
    return _read_invoices(worlds["shop_export"].out_dir)


def test_shop_export_writes_one_invoice_file_and_its_column_mapping(
    worlds: dict[str, GenerationSummary], invoices: pd.DataFrame
) -> None:
    folder = worlds["shop_export"].out_dir
    assert sorted(p.name for p in folder.iterdir()) == ["columns.yaml", "invoices.csv"]
    assert (folder / "invoices.csv").read_text().splitlines()[0] == ",".join(SHOP_HEADER)
    assert list(invoices.columns) == SHOP_HEADER and len(invoices) == worlds["shop_export"].n_transactions
    mapping = yaml.safe_load((folder / "columns.yaml").read_text())["transactions"]
    assert mapping["file"] == "invoices.csv" and mapping["amount"] == "quantity * unit_price"
    assert mapping["columns"] == {
        "order_id": "Invoice",
        "customer_id": "Customer ID",
        "timestamp": "InvoiceDate",
        "quantity": "Quantity",
        "unit_price": "Price",
    }
    assert mapping["returns"] == {"order_id_prefix": "C"}
    dates = pd.to_datetime(invoices["InvoiceDate"], format=mapping["date_format"])
    assert dates.between("2023-01-01", "2026-06-30", inclusive="left").all()
    assert (dates.dt.floor("D") != dates).mean() > 0.9


def test_shop_export_lines_look_like_a_real_export(invoices: pd.DataFrame) -> None:
    sales = invoices[~invoices["Invoice"].str.startswith("C")]
    assert (sales["Quantity"] > 0).all() and (invoices["Price"] > 0).all()
    assert sales.groupby("Invoice").size().between(1, 12).all()  # 1-6 lines, a repeated line at most doubles
    assert (sales.groupby("Invoice").size() > 1).mean() > 0.4
    assert 0.015 < invoices["Customer ID"].isna().mean() < 0.05, "guest lines"
    assert 0.001 < invoices.duplicated().mean() < 0.1, "exact repeated lines"
    within = sales.drop_duplicates().duplicated(["Invoice", "Quantity", "Price"], keep=False)
    assert within.any(), "lines of one invoice with the same quantity and price (other products)"
    known = invoices["Customer ID"].dropna()
    assert (known == known.round()).all()
    assert invoices["Customer ID"].dropna().map("{:.1f}".format).str.fullmatch(r"\d{5,}\.0").all()


def test_shop_export_credit_notes_are_negative_lines_after_a_sale(invoices: pd.DataFrame) -> None:
    credit = invoices[invoices["Invoice"].str.startswith("C")]
    assert len(credit) > 20
    assert credit["Invoice"].str.fullmatch(r"C\d{7}").all()
    assert (credit["Quantity"] < 0).all() and (credit["Price"] > 0).all()
    assert credit["Customer ID"].notna().all()
    when = pd.to_datetime(invoices["InvoiceDate"], format="%m/%d/%Y %H:%M")
    first_sale = when[~invoices["Invoice"].str.startswith("C")].groupby(invoices["Customer ID"]).min()
    assert (when[credit.index] > credit["Customer ID"].map(first_sale)).all()


def test_shop_export_ids_map_to_the_truth_and_simulate_the_purchase_log_world(
    worlds: dict[str, GenerationSummary], invoices: pd.DataFrame
) -> None:
    shop = load_truth(worlds["shop_export"].truth_dir)
    log = load_truth(worlds["purchase_log"].truth_dir)
    assert shop.index.str.fullmatch(r"\d{5}").all()
    ids = invoices["Customer ID"].dropna().astype("int64").astype(str)
    assert ids.isin(shop.index).all()
    assert (shop["plan"] == "none").all()
    pd.testing.assert_frame_equal(shop.reset_index(drop=True), log.reset_index(drop=True))
    shop_value = true_residual_value(shop, PAST_CUTOFF, draws=4).to_numpy()
    log_value = true_residual_value(log, PAST_CUTOFF, draws=4).to_numpy()
    there = log_value > 0
    assert (shop_value[there] < log_value[there]).all(), "credit notes net returned orders out of revenue"
    sales = invoices[~invoices["Invoice"].str.startswith("C") & invoices["Customer ID"].notna()]
    orders = sales.drop_duplicates(["Invoice"])
    transactions = pd.read_parquet(worlds["purchase_log"].out_dir / "transactions.parquet")
    assert len(orders) == len(transactions), "one invoice per simulated order"
    amounts = (sales["Quantity"] * sales["Price"]).groupby(sales["Invoice"]).sum()
    assert abs(amounts.sum() / transactions["amount"].sum() - 1) < 0.05, (
        "quantity x price carries the amounts"
    )
