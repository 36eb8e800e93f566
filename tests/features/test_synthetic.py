"""The synthetic CRM generator, as a user of its data notices it.

The tables must honour the data contract (names, dtypes, domains, integrity), be reproducible for a seed,
look like a real business (heavy-tailed spend, a Christmas peak, contracts that cancel, service failures
that drive churn), and come with a ground truth whose oracle churn probability clearly beats chance.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from features.errors import ConfigError
from features.loading import load_dataset
from features.synthetic import (
    TABLE_NAMES,
    GenerationSummary,
    Period,
    Scenario,
    generate_dataset,
    load_truth,
    true_churn_probability,
)

START, END = pd.Timestamp("2023-01-01"), pd.Timestamp("2026-06-30")
N_CUSTOMERS = 1500

DTYPES: dict[str, dict[str, str]] = {
    "transactions": {
        "customer_id": "str",
        "timestamp": "datetime64[us]",
        "amount": "float64",
        "order_id": "str",
        "quantity": "int64",
        "discount": "float64",
        "channel": "str",
        "returned": "bool",
        "delivery_delay_days": "float64",
    },
    "customers": {
        "customer_id": "str",
        "signup_date": "datetime64[us]",
        "country": "str",
        "segment": "str",
        "acquisition_channel": "str",
        "plan": "str",
    },
    "interactions": {
        "customer_id": "str",
        "timestamp": "datetime64[us]",
        "type": "str",
        "channel": "str",
        "resolved": "boolean",
        "resolution_hours": "float64",
        "satisfaction": "Int64",
        "nps": "Int64",
    },
    "cancellations": {"customer_id": "str", "timestamp": "datetime64[us]"},
}
TIME_COLUMNS = {"transactions": "timestamp", "interactions": "timestamp", "cancellations": "timestamp"}


def _read(folder: Path, file_format: str = "parquet") -> dict[str, pd.DataFrame]:
    """Read all tables; CSV with the contract dtypes, parquet as pandas restores it on its own."""
    tables = {}
    for name in TABLE_NAMES:
        path = folder / f"{name}.{file_format}"
        if file_format == "parquet":
            tables[name] = pd.read_parquet(path)
            continue
        dtypes = DTYPES[name]
        dates = [column for column, dtype in dtypes.items() if dtype.startswith("datetime")]
        plain = {column: dtype for column, dtype in dtypes.items() if column not in dates}
        frame = pd.read_csv(path, dtype=plain, parse_dates=dates)
        tables[name] = frame.astype({column: dtypes[column] for column in dates})
    return tables


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[GenerationSummary, dict[str, pd.DataFrame]]:
    summary = generate_dataset(tmp_path_factory.mktemp("synthetic") / "data", n_customers=N_CUSTOMERS, seed=7)
    return summary, _read(summary.out_dir)


@pytest.fixture(scope="module")
def tables(generated: tuple[GenerationSummary, dict[str, pd.DataFrame]]) -> dict[str, pd.DataFrame]:
    return generated[1]


@pytest.fixture(scope="module")
def truth(generated: tuple[GenerationSummary, dict[str, pd.DataFrame]]) -> pd.DataFrame:
    return load_truth(generated[0].truth_dir)


# ------------------------------------------------------------------------------------ files and contract


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path: Path) -> None:
    first = generate_dataset(tmp_path / "a", n_customers=300, seed=11)
    again = generate_dataset(tmp_path / "b", n_customers=300, seed=11)
    other = generate_dataset(tmp_path / "c", n_customers=300, seed=12)
    for name in TABLE_NAMES:
        file = f"{name}.parquet"
        assert (first.out_dir / file).read_bytes() == (again.out_dir / file).read_bytes(), name
    assert sorted(p.name for p in first.truth_dir.iterdir()) == sorted(
        p.name for p in again.truth_dir.iterdir()
    )
    for path in first.truth_dir.iterdir():
        assert path.read_bytes() == (again.truth_dir / path.name).read_bytes(), path.name
    differ = [
        (first.out_dir / f"{n}.parquet").read_bytes() != (other.out_dir / f"{n}.parquet").read_bytes()
        for n in TABLE_NAMES
    ]
    assert all(differ)


def test_referrals_name_an_earlier_customer_still_there_and_change_no_other_file(tmp_path: Path) -> None:
    """With referrals asked for, every customer acquired through the referral channel who can have a
    referrer gets one: a customer who signed up on an earlier day and had not left by the referred one's
    signup, dated at that signup; the loader takes the table as it is; every other file is byte-identical
    to the world without referrals."""
    plain = generate_dataset(tmp_path / "plain", n_customers=600, seed=5)
    summary = generate_dataset(tmp_path / "ref", n_customers=600, seed=5, scenario=Scenario(referrals=True))
    for name in TABLE_NAMES:
        file = f"{name}.parquet"
        assert (plain.out_dir / file).read_bytes() == (summary.out_dir / file).read_bytes(), name
    assert not (plain.out_dir / "referrals.parquet").exists()
    referrals = pd.read_parquet(summary.out_dir / "referrals.parquet")
    customers = pd.read_parquet(summary.out_dir / "customers.parquet").set_index("customer_id")
    traits = load_truth(summary.truth_dir)
    assert summary.n_referrals == len(referrals) > 0
    by_referral = customers.index[customers["acquisition_channel"] == "referral"]
    assert set(referrals["referred_id"]) <= set(by_referral)
    assert len(referrals) >= 0.95 * len(by_referral)  # only the very first customers can lack a referrer
    assert referrals["referred_id"].is_unique and (referrals["referrer_id"] != referrals["referred_id"]).all()
    signup = customers["signup_date"]
    referred_on = signup.loc[referrals["referred_id"]].to_numpy()
    assert (signup.loc[referrals["referrer_id"]].to_numpy() < referred_on).all()
    assert (referrals["timestamp"].to_numpy() == referred_on).all()
    left = traits["death_time"].loc[referrals["referrer_id"]].to_numpy()
    assert not (left <= referred_on).any()  # NaT (still there) compares False
    dataset = load_dataset(summary.out_dir)
    assert dataset.referrals is not None and len(dataset.referrals) == len(referrals)
    with pytest.raises(ConfigError, match="referrals need a world with the contract tables"):
        generate_dataset(tmp_path / "log", 50, 1, scenario=Scenario("purchase_log", referrals=True))


def test_summary_counts_match_written_tables(
    generated: tuple[GenerationSummary, dict[str, pd.DataFrame]],
) -> None:
    summary, tables = generated
    assert summary.truth_dir == summary.out_dir.parent / "data-truth"
    assert sorted(p.name for p in summary.out_dir.iterdir()) == sorted(f"{n}.parquet" for n in TABLE_NAMES)
    assert (summary.n_customers, summary.n_transactions) == (
        len(tables["customers"]),
        len(tables["transactions"]),
    )
    assert (summary.n_interactions, summary.n_cancellations) == (
        len(tables["interactions"]),
        len(tables["cancellations"]),
    )
    assert (summary.start, summary.end) == (date(2023, 1, 1), date(2026, 6, 30))
    assert summary.seconds > 0
    assert not [p for p in summary.out_dir.parent.iterdir() if p.name.startswith(".")], "temp folders left"


def test_tables_have_the_contract_columns_and_dtypes(tables: dict[str, pd.DataFrame]) -> None:
    for name, expected in DTYPES.items():
        actual = {column: str(dtype) for column, dtype in tables[name].dtypes.items()}
        assert actual == expected, name


def test_transactions_values_are_in_their_domains(tables: dict[str, pd.DataFrame]) -> None:
    tx = tables["transactions"]
    assert len(tx) > 10 * N_CUSTOMERS
    assert tx["order_id"].is_unique
    assert tx["customer_id"].str.fullmatch(r"C\d{7}").all()
    assert (tx["amount"] >= 0).all() and (tx["discount"] >= 0).all() and (tx["quantity"] >= 1).all()
    assert np.allclose(tx["amount"], tx["amount"].round(2)) and np.allclose(
        tx["discount"], tx["discount"].round(2)
    )
    assert set(tx["channel"]) == {"web", "app", "store", "phone"}
    assert (tx["delivery_delay_days"] >= 0).all()
    assert (tx.loc[tx["channel"] == "store", "delivery_delay_days"] == 0).all()
    assert 0.01 < (tx["delivery_delay_days"] > 0).mean() < 0.2
    assert 0.01 < tx["returned"].mean() < 0.3 and 0.05 < (tx["discount"] > 0).mean() < 0.6
    assert (tx["timestamp"].dt.floor("D") != tx["timestamp"]).mean() > 0.9, "timestamps carry a time of day"


def test_customers_and_interactions_values_are_in_their_domains(tables: dict[str, pd.DataFrame]) -> None:
    customers, contacts = tables["customers"], tables["interactions"]
    assert customers["customer_id"].is_unique and len(customers) == N_CUSTOMERS
    assert (customers["signup_date"] == customers["signup_date"].dt.normalize()).all()
    assert set(customers["plan"]) == {"none", "monthly", "annual"}
    assert set(customers["segment"]) == {"consumer", "small_business", "enterprise"}
    assert set(customers["acquisition_channel"]) == {"search", "social", "referral", "store", "partner"}
    assert 3 <= customers["country"].nunique() <= 10

    assert set(contacts["type"]) == {"complaint", "support", "inquiry", "survey"}
    assert set(contacts["channel"]) <= {"phone", "email", "chat", "store", "web"}
    survey = contacts["type"] == "survey"
    assert contacts.loc[survey, "resolved"].isna().all() and contacts.loc[~survey, "resolved"].notna().all()
    unresolved = survey | ~contacts["resolved"].fillna(False).astype(bool)
    assert contacts.loc[unresolved, "resolution_hours"].isna().all()
    assert (contacts.loc[~unresolved, "resolution_hours"] > 0).all()
    assert contacts.loc[survey, ["satisfaction", "nps"]].notna().all().all()
    assert contacts.loc[~survey, "nps"].isna().all()
    assert contacts.loc[~survey & contacts["satisfaction"].notna(), "resolved"].all()
    assert (
        contacts["satisfaction"].dropna().between(1, 5).all()
        and contacts["nps"].dropna().between(0, 10).all()
    )
    assert (contacts.loc[contacts["type"] == "complaint", "resolved"] == False).any()  # noqa: E712


def test_ids_exist_and_no_event_is_before_signup_or_outside_the_period(
    tables: dict[str, pd.DataFrame],
) -> None:
    signup = tables["customers"].set_index("customer_id")["signup_date"]
    assert signup.between(START, END, inclusive="left").all()
    for name, column in TIME_COLUMNS.items():
        events = tables[name]
        assert events["customer_id"].isin(signup.index).all(), name
        assert events[column].between(START, END, inclusive="left").all(), name
        assert (events[column] >= events["customer_id"].map(signup)).all(), name
        assert not events.duplicated().any(), name


def test_cancelled_customers_never_come_back(tables: dict[str, pd.DataFrame]) -> None:
    cancelled = tables["cancellations"].set_index("customer_id")["timestamp"]
    assert cancelled.index.is_unique
    plans = tables["customers"].set_index("customer_id")["plan"]
    assert (plans.loc[cancelled.index] != "none").all()
    for name in ("transactions", "interactions"):
        events = tables[name]
        after = events["timestamp"] >= events["customer_id"].map(cancelled)
        assert not after.any(), name


def test_contract_customers_are_a_minority_and_annual_ones_cancel_around_anniversaries(
    tables: dict[str, pd.DataFrame],
) -> None:
    customers = tables["customers"].set_index("customer_id")
    assert 0.15 <= (customers["plan"] != "none").mean() <= 0.3
    cancelled = tables["cancellations"].set_index("customer_id")["timestamp"]
    assert len(cancelled) >= 50
    annual = cancelled[customers.loc[cancelled.index, "plan"] == "annual"]
    days = (annual - customers.loc[annual.index, "signup_date"]).dt.days.to_numpy()
    to_anniversary = np.minimum(days % 365, 365 - days % 365)
    near_anniversary = (to_anniversary <= 31) & (days > 300)
    assert len(annual) >= 10
    assert near_anniversary.mean() > 2 * 62 / 365  # over twice the share a uniform timing would give


# -------------------------------------------------------------------------------------------- realism


def test_spend_is_heavy_tailed(tables: dict[str, pd.DataFrame]) -> None:
    spend = tables["transactions"].groupby("customer_id")["amount"].sum()
    spend = spend.reindex(tables["customers"]["customer_id"], fill_value=0.0).sort_values(ascending=False)
    assert spend.iloc[: len(spend) // 5].sum() / spend.sum() > 0.55
    orders = tables["transactions"].groupby("customer_id").size()
    assert orders.quantile(0.9) > 4 * orders.quantile(0.25)


def test_november_and_december_are_the_peak(tables: dict[str, pd.DataFrame]) -> None:
    monthly = tables["transactions"].groupby(tables["transactions"]["timestamp"].dt.to_period("M")).size()
    for year in (2023, 2024, 2025):
        peak = monthly[[pd.Period(f"{year}-11"), pd.Period(f"{year}-12")]].mean()
        around = [f"{year}-09", f"{year}-10", f"{year + 1}-01", f"{year + 1}-02"]
        assert peak > 1.2 * monthly[[pd.Period(m) for m in around]].mean(), year


def test_loyal_unprofitable_customers_order_often_cheaply_with_discounts_and_returns(
    tables: dict[str, pd.DataFrame], truth: pd.DataFrame
) -> None:
    tx = tables["transactions"]
    loyal = tx["customer_id"].map(truth["loyal_unprofitable"]).astype(bool)
    assert loyal.any() and truth["loyal_unprofitable"].mean() < 0.15
    assert tx.loc[loyal, "amount"].median() < tx.loc[~loyal, "amount"].median()
    assert tx.loc[loyal, "returned"].mean() > 2 * tx.loc[~loyal, "returned"].mean()
    assert (tx.loc[loyal, "discount"] > 0).mean() > 2 * (tx.loc[~loyal, "discount"] > 0).mean()


def test_service_failures_precede_true_churn(tables: dict[str, pd.DataFrame], truth: pd.DataFrame) -> None:
    """Customer-months after a late delivery or an unresolved complaint see more true departures."""
    tx, contacts = tables["transactions"], tables["interactions"]
    late = tx.loc[tx["delivery_delay_days"] > 0, ["customer_id", "timestamp"]]
    unresolved = contacts.loc[contacts["resolved"] == False, ["customer_id", "timestamp"]]  # noqa: E712
    failures = pd.concat([late, unresolved])
    exposed_rates, unexposed_rates = [], []
    for cutoff in pd.date_range("2023-07-01", "2025-12-01", freq="2MS"):
        at_risk = truth[(truth["signup_date"] < cutoff) & ~(truth["death_time"] <= cutoff)]
        recent = failures[
            failures["timestamp"].between(cutoff - pd.Timedelta(days=60), cutoff, inclusive="left")
        ]
        exposed = at_risk.index.isin(recent["customer_id"])
        leaves = (at_risk["death_time"] < cutoff + pd.Timedelta(days=120)).to_numpy()
        exposed_rates.append((leaves[exposed].sum(), exposed.sum()))
        unexposed_rates.append((leaves[~exposed].sum(), (~exposed).sum()))
    exposed_rate = sum(k for k, _ in exposed_rates) / sum(n for _, n in exposed_rates)
    unexposed_rate = sum(k for k, _ in unexposed_rates) / sum(n for _, n in unexposed_rates)
    assert exposed_rate > 1.5 * unexposed_rate


def test_surveys_reflect_recent_service(tables: dict[str, pd.DataFrame]) -> None:
    contacts, tx = tables["interactions"], tables["transactions"]
    surveys = contacts[contacts["type"] == "survey"]
    late_customers = set(tx.loc[tx["delivery_delay_days"] > 0, "customer_id"])
    unresolved_customers = set(contacts.loc[contacts["resolved"] == False, "customer_id"])  # noqa: E712
    hurt = surveys["customer_id"].isin(late_customers | unresolved_customers)
    assert surveys.loc[hurt, "nps"].mean() < surveys.loc[~hurt, "nps"].mean()


# ---------------------------------------------------------------------------------------------- truth


def test_truth_lists_every_customer_with_traits_and_monthly_state(
    tables: dict[str, pd.DataFrame], truth: pd.DataFrame
) -> None:
    assert list(truth.index) == list(tables["customers"]["customer_id"])
    for column in ("purchase_rate", "spend_level", "expectation", "base_hazard", "is_contract"):
        assert truth[column].notna().all(), column
    assert len(truth.filter(like="gap_").columns) == len(truth.filter(like="activity_").columns) == 42

    left = truth["death_time"].dropna()
    assert (left > truth.loc[left.index, "signup_date"]).all()
    last_purchase = tables["transactions"].groupby("customer_id")["timestamp"].max()
    bought_then_left = left.index.intersection(last_purchase.index)
    assert (last_purchase[bought_then_left] < left[bought_then_left]).all(), "nobody buys after leaving"

    cancelled = tables["cancellations"].set_index("customer_id")["timestamp"].rename("cancellation_time")
    assert truth["cancellation_time"].dropna().sort_index().equals(cancelled.sort_index())
    assert truth.loc[~truth["is_contract"], "cancellation_time"].isna().all()


def _observed_churn(
    tables: dict[str, pd.DataFrame], ids: pd.Index, cutoff: pd.Timestamp, days: int
) -> np.ndarray:
    """The label: no purchase in [cutoff, cutoff + days) or a cancellation in it."""
    end = cutoff + pd.Timedelta(days=days)
    tx, cancelled = tables["transactions"], tables["cancellations"]
    bought = tx.loc[tx["timestamp"].between(cutoff, end, inclusive="left"), "customer_id"]
    cancels = cancelled.loc[cancelled["timestamp"].between(cutoff, end, inclusive="left"), "customer_id"]
    return (~ids.isin(bought) | ids.isin(cancels)).astype(int)


@pytest.mark.parametrize("cutoff", ["2024-09-15", "2025-12-01"])
def test_oracle_churn_probability_is_valid_and_predictive(
    tables: dict[str, pd.DataFrame], truth: pd.DataFrame, cutoff: str
) -> None:
    when = pd.Timestamp(cutoff)
    probability = true_churn_probability(truth, when, 90)
    assert probability.index.name == "customer_id" and probability.dtype == "float64"
    assert probability.between(0.0, 1.0).all()
    assert set(probability.index) == set(truth.index[truth["signup_date"] <= when])
    already_gone = truth.loc[probability.index, "death_time"] <= when
    assert already_gone.any() and (probability[already_gone] == 1.0).all()
    label = _observed_churn(tables, probability.index, when, 90)
    assert roc_auc_score(label, probability) > 0.8
    assert abs(probability.mean() - label.mean()) < 0.05, "the oracle is calibrated on average"
    alive = ~already_gone.to_numpy()
    assert roc_auc_score(label[alive], probability[alive]) > 0.75


def test_oracle_checks_its_inputs(truth: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="outside the simulated period"):
        true_churn_probability(truth, pd.Timestamp("2022-12-31"), 90)
    with pytest.raises(ConfigError, match="positive"):
        true_churn_probability(truth, pd.Timestamp("2024-01-01"), 0)
    without_period = truth.copy()
    without_period.attrs = {}
    with pytest.raises(ConfigError, match="load_truth"):
        true_churn_probability(without_period, pd.Timestamp("2024-01-01"), 90)


# ------------------------------------------------------------------------------------- writing safely


def test_refuses_a_non_empty_out_dir_and_leaves_it_untouched(tmp_path: Path) -> None:
    out_dir = tmp_path / "data"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        generate_dataset(out_dir, n_customers=50)
    assert [p.name for p in out_dir.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "no truth or temporary folder left behind"


def test_refuses_a_non_empty_truth_dir(tmp_path: Path) -> None:
    truth_dir = tmp_path / "elsewhere"
    truth_dir.mkdir()
    (truth_dir / "old.npy").write_bytes(b"x")
    with pytest.raises(FileExistsError):
        generate_dataset(tmp_path / "data", n_customers=50, truth_dir=truth_dir)
    assert not (tmp_path / "data").exists()


def test_an_empty_out_dir_is_filled_and_truth_can_live_elsewhere(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    summary = generate_dataset(tmp_path / "data", n_customers=50, truth_dir=tmp_path / "secret" / "truth")
    assert summary.truth_dir == tmp_path / "secret" / "truth"
    assert (summary.truth_dir / "meta.json").exists() and (tmp_path / "data" / "customers.parquet").exists()


def test_invalid_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        generate_dataset(tmp_path / "a", n_customers=0)
    with pytest.raises(ConfigError):
        generate_dataset(tmp_path / "b", scenario=Scenario(period=Period(date(2024, 1, 1), date(2023, 1, 1))))
    with pytest.raises(ConfigError):
        generate_dataset(tmp_path / "c", file_format="xlsx")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_csv_and_parquet_hold_the_same_data(tmp_path: Path) -> None:
    as_parquet = generate_dataset(tmp_path / "p", n_customers=300, seed=5)
    as_csv = generate_dataset(tmp_path / "c", n_customers=300, seed=5, file_format="csv")
    assert sorted(p.name for p in as_csv.out_dir.iterdir()) == sorted(f"{n}.csv" for n in TABLE_NAMES)
    parquet_tables, csv_tables = _read(as_parquet.out_dir), _read(as_csv.out_dir, "csv")
    for name in TABLE_NAMES:
        pd.testing.assert_frame_equal(csv_tables[name], parquet_tables[name], check_exact=True, obj=name)


def test_custom_period_and_progress_reports(tmp_path: Path) -> None:
    seen: list[tuple[str, float]] = []
    summary = generate_dataset(
        tmp_path / "d",
        n_customers=200,
        scenario=Scenario(period=Period(date(2024, 3, 15), date(2024, 9, 1))),
        progress=lambda stage, fraction: seen.append((stage, fraction)),
    )
    tables = _read(summary.out_dir)
    for name, column in TIME_COLUMNS.items():
        assert tables[name][column].between("2024-03-15", "2024-09-01", inclusive="left").all(), name
    simulate = [fraction for stage, fraction in seen if stage == "simulate"]
    assert simulate == sorted(simulate) and simulate[-1] == 1.0 and len(simulate) == 6
    assert {stage for stage, _ in seen} == {"simulate", "write", "truth"}
    assert all(0.0 <= fraction <= 1.0 for _, fraction in seen)
    probability = true_churn_probability(load_truth(summary.truth_dir), pd.Timestamp("2024-08-01"), 90)
    assert probability.between(0, 1).all()
