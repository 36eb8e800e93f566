"""Point-in-time features and labels: hand-computed values, no look-ahead, and sensible behaviour.

Features see events strictly before the cutoff; labels see ``[cutoff, cutoff + horizon)``. The leakage
property test changes anything at or after the cutoff and requires the feature frame to stay identical.
"""

from __future__ import annotations

import math
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

from features.engine import compute_features, compute_labels
from features.errors import DataValidationError
from features.loading import Dataset, load_dataset
from features.snapshots import observed_until, snapshot_cutoffs
from features.spec import BASE_FEATURES

CUTOFF = pd.Timestamp("2024-07-01")
NOW = datetime(2025, 12, 31)

# ----------------------------------------------------------------------------------------- tiny dataset

CUSTOMERS = """customer_id,signup_date,segment
A,2023-07-01,retail
B,2024-01-01,retail
C,2024-02-01,business
D,2023-01-01,retail
E,2024-08-01,retail
F,2023-09-01,business
G,2022-01-01,retail
"""
TRANSACTIONS = """customer_id,timestamp,amount,order_id,discount,channel,delivery_delay_days
A,2024-01-02,60,O1,10,web,0
A,2024-01-02,40,O1,0,web,0
A,2024-04-02,50,O2,0,app,0
A,2024-06-21,30,O3,0,web,2
A,2024-07-01,999,O4,0,web,0
A,2024-08-01,20,O5,0,web,0
A,2024-09-29,500,O6,0,web,0
B,2024-03-01,40,O7,0,web,0
B,2024-07-10,25,O8,0,web,0
D,2024-03-01,15,O9,0,web,0
E,2024-08-05,15,O10,0,web,0
F,2024-06-01,10,O11,0,store,0
G,2023-06-01,10,O12,0,store,0
"""
INTERACTIONS = """customer_id,timestamp,type,channel,resolved,resolution_hours,satisfaction,nps
B,2023-12-01,complaint,phone,false,,,
B,2024-03-15,complaint,email,true,10,,
B,2024-06-01,complaint,chat,false,,,
B,2024-05-01,survey,email,,,2,3
B,2024-06-15,survey,web,,,4,
B,2024-06-20,support,phone,true,2,,
B,2024-07-01,survey,email,,,1,0
"""
CANCELLATIONS = """customer_id,timestamp
D,2024-05-01
B,2024-07-15
F,2024-07-01
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    folder = tmp_path_factory.mktemp("tiny")
    for name, text in (
        ("customers", CUSTOMERS),
        ("transactions", TRANSACTIONS),
        ("interactions", INTERACTIONS),
        ("cancellations", CANCELLATIONS),
    ):
        (folder / f"{name}.csv").write_text(text)
    return load_dataset(folder, now=NOW)


@pytest.fixture(scope="module")
def tiny_features(tiny: Dataset) -> pd.DataFrame:
    return compute_features(tiny, CUTOFF).set_index("customer_id")


NAN = float("nan")
EXPECTED: dict[str, dict[str, Any]] = {
    # A: orders O1 (two lines, 100, age 181), O2 (50, age exactly 90), O3 (30, age 10, 2 days late);
    # O4 lies exactly at the cutoff and must not count.
    "A": {
        "recency_days": 10.0,
        "tenure_days": 366.0,
        "orders_total": 3,
        "spend_total": 180.0,
        "avg_order_value": 60.0,
        "orders_30d": 1,
        "spend_30d": 30.0,
        "orders_90d": 1,
        "spend_90d": 30.0,
        "orders_180d": 2,
        "spend_180d": 80.0,
        "orders_365d": 3,
        "spend_365d": 180.0,
        "order_trend_90d": 1.0,
        "spend_trend_180d": 81 / 101,
        "mean_gap_days": 85.5,
        "gap_variability": 5.5 / 85.5,
        "overdue_ratio": 10 / 85.5,
        "active_months_365d": 3,
        "discount_rate": 10 / 190,
        "discounted_order_share": 1 / 3,
        "channels_used": 2,
        "main_channel_share": 2 / 3,
        "late_deliveries_90d": 1,
        "late_deliveries_365d": 1,
        "mean_delay_days_365d": 2 / 3,
        "complaints_365d": 0,
        "last_satisfaction": NAN,
        "service_failures_per_order_365d": 1 / 3,
        "segment": "retail",
    },
    # B: one order 122 days ago; complaints 213 (unresolved), 108 (resolved) and 30 (unresolved) days ago;
    # surveys 61 days (sat 2, nps 3) and 16 days (sat 4, no nps) ago; the survey at the cutoff is unseen.
    "B": {
        "recency_days": 122.0,
        "tenure_days": 182.0,
        "orders_total": 1,
        "mean_gap_days": NAN,
        "overdue_ratio": NAN,
        "gap_variability": NAN,
        "complaints_90d": 1,
        "complaints_365d": 3,
        "unresolved_complaints_90d": 1,
        "unresolved_complaints_365d": 2,
        "support_90d": 1,
        "support_365d": 1,
        "contacts_90d": 2,
        "days_since_last_complaint": 30.0,
        "last_satisfaction": 4.0,
        "last_nps": 3.0,
        "mean_satisfaction_365d": 3.0,
        "mean_resolution_hours_365d": 6.0,
        "contacts_phone_365d": 2,
        "contacts_email_365d": 1,
        "contacts_chat_365d": 1,
        "contacts_web_365d": 0,
        "service_failures_per_order_365d": 3.0,
    },
    # C: signed up 151 days ago and did nothing since.
    "C": {
        "recency_days": NAN,
        "tenure_days": 151.0,
        "orders_total": 0,
        "spend_total": 0.0,
        "orders_30d": 0,
        "spend_365d": 0.0,
        "avg_order_value": NAN,
        "mean_gap_days": NAN,
        "order_trend_90d": 1.0,
        "spend_trend_180d": 1.0,
        "complaints_90d": 0,
        "unresolved_complaints_365d": 0,
        "contacts_web_365d": 0,
        "days_since_last_complaint": NAN,
        "main_channel_share": NAN,
        "discount_rate": NAN,
        "service_failures_per_order_365d": 0.0,
        "segment": "business",
    },
    # F: cancels exactly at the cutoff, so is still a customer for the features.
    "F": {"recency_days": 30.0, "orders_total": 1, "channels_used": 1, "main_channel_share": 1.0},
}


def _same(actual: object, expected: object) -> bool:
    if isinstance(expected, float) and math.isnan(expected):
        return pd.isna(actual)
    if isinstance(expected, float):
        return actual == pytest.approx(expected, rel=1e-9, abs=1e-9)
    return actual == expected


def test_features_match_hand_computed_values(tiny_features: pd.DataFrame) -> None:
    wrong = {
        (customer, name): (tiny_features.loc[customer, name], value)
        for customer, values in EXPECTED.items()
        for name, value in values.items()
        if not _same(tiny_features.loc[customer, name], value)
    }
    assert not wrong, wrong


def test_feature_frame_has_every_base_feature_then_the_attributes(tiny_features: pd.DataFrame) -> None:
    assert list(tiny_features.columns) == [f.name for f in BASE_FEATURES] + ["segment"]
    assert tiny_features["orders_total"].dtype == "int64" and tiny_features["recency_days"].dtype == "float64"


def test_only_active_uncancelled_customers_get_a_row(tiny_features: pd.DataFrame) -> None:
    # D cancelled before the cutoff, E signed up after it, G has been inactive for over a year.
    assert list(tiny_features.index) == ["A", "B", "C", "F"]


def test_labels_count_the_event_at_the_cutoff_but_not_the_one_at_the_horizon(tiny: Dataset) -> None:
    labels = compute_labels(tiny, CUTOFF, horizon_days=90).set_index("customer_id")

    assert list(labels.index) == ["A", "B", "C", "F"]
    # A: O4 (at the cutoff) and O5 count; O6 at cutoff + 90 days is outside the window.
    assert labels.loc["A", "future_spend"] == 1019.0 and labels.loc["A", "future_orders"] == 2
    assert not labels.loc["A", "churned"]
    # B bought in the window but cancelled in it; C did nothing; F cancelled exactly at the cutoff.
    assert labels.loc["B", "future_spend"] == 25.0 and labels.loc["B", "churned"]
    assert labels.loc["C", "future_spend"] == 0.0 and labels.loc["C", "churned"]
    assert labels.loc["F", "churned"]


# ------------------------------------------------------------------------------------ leakage property

DAY = 86_400
IDS = ("C1", "C2", "C3")
_PAST = st.integers(1, 420 * DAY)  # seconds before the cutoff
_FUTURE = st.one_of(st.just(0), st.integers(0, 120 * DAY))  # seconds at or after the cutoff
_AMOUNTS = st.sampled_from([0.0, 4.5, 20.0, 99.99, -4.5, -30.0])  # negative: a return line
_TYPES = st.sampled_from(["complaint", "support", "inquiry", "survey", "callback"])


def _transaction(offset: st.SearchStrategy[int]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "customer_id": st.sampled_from(IDS),
            "offset": offset,
            "amount": _AMOUNTS,
            "order_id": st.sampled_from(["O1", "O2", "O3", "O4", "O5"]),
            "discount": st.sampled_from([0.0, 2.0]),
            "channel": st.sampled_from(["web", "app"]),
            "returned": st.booleans(),
            "delivery_delay_days": st.sampled_from([0.0, 3.0]),
        }
    )


def _interaction(offset: st.SearchStrategy[int]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "customer_id": st.sampled_from(IDS),
            "offset": offset,
            "type": _TYPES,
            "channel": st.sampled_from(["phone", "email", "web"]),
            "resolved": st.sampled_from([True, False, None]),
            "resolution_hours": st.sampled_from([None, 1.0, 30.0]),
            "satisfaction": st.sampled_from([None, 1.0, 5.0]),
            "nps": st.sampled_from([None, 0.0, 9.0]),
        }
    )


def _cancellation(offset: st.SearchStrategy[int]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"customer_id": st.sampled_from(IDS), "offset": offset})


_EVENT = {"transactions": _transaction, "interactions": _interaction, "cancellations": _cancellation}
_ALTERABLE = {
    "transactions": {"offset": _FUTURE, "amount": _AMOUNTS, "customer_id": st.sampled_from(IDS)},
    "interactions": {"offset": _FUTURE, "type": _TYPES, "satisfaction": st.sampled_from([None, 2.0])},
    "cancellations": {"offset": _FUTURE, "customer_id": st.sampled_from(IDS)},
}


def _mutate(data: st.DataObject, future: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Add, remove or alter events at or after the cutoff; every changed event stays at or after it."""
    changed = {table: [dict(event) for event in events] for table, events in future.items()}
    for _ in range(data.draw(st.integers(1, 4), label="n_changes")):
        table = data.draw(st.sampled_from(sorted(changed)), label="table")
        events = changed[table]
        action = data.draw(st.sampled_from(["add", "remove", "alter"] if events else ["add"]), label="action")
        if action == "add":
            events.append(data.draw(_EVENT[table](_FUTURE), label="added"))
            continue
        index = data.draw(st.integers(0, len(events) - 1), label="index")
        if action == "remove":
            events.pop(index)
        else:
            field = data.draw(st.sampled_from(sorted(_ALTERABLE[table])), label="field")
            events[index][field] = data.draw(_ALTERABLE[table][field], label="value")
    return changed


_COLUMNS = {
    "transactions": [
        "customer_id",
        "offset",
        "amount",
        "order_id",
        "discount",
        "channel",
        "returned",
        "delivery_delay_days",
    ],
    "interactions": [
        "customer_id",
        "offset",
        "type",
        "channel",
        "resolved",
        "resolution_hours",
        "satisfaction",
        "nps",
    ],
    "cancellations": ["customer_id", "offset"],
}


Events = dict[str, list[dict[str, Any]]]


def _tables(prefix: str, signups: list[int | None], past: Events, future: Events) -> dict[str, pd.DataFrame]:
    """One copy of the generated data as contract tables, customer ids prefixed with ``prefix``."""
    signup = [CUTOFF - pd.Timedelta(seconds=s) if s is not None else pd.NaT for s in signups]
    tables = {
        "customers": pd.DataFrame({"customer_id": IDS, "signup_date": signup, "segment": ["a", "b", "a"]})
    }
    for table, columns in _COLUMNS.items():
        frame = pd.DataFrame(past[table] + future[table], columns=columns)  # past rows first
        frame.insert(1, "timestamp", CUTOFF + pd.to_timedelta(frame.pop("offset").astype("int64"), unit="s"))
        tables[table] = frame.drop_duplicates()
    for frame in tables.values():
        frame["customer_id"] = prefix + frame["customer_id"]
    return tables


def _load(folder: Path, *copies: dict[str, pd.DataFrame]) -> Dataset:
    """Write the copies side by side as CSV files and load them the way production does."""
    for table in ("customers", *_COLUMNS):
        pd.concat([copy[table] for copy in copies]).to_csv(folder / f"{table}.csv", index=False)
    return load_dataset(folder, now=NOW)


def _unprefixed(frame: pd.DataFrame, prefix: str) -> pd.DataFrame:
    rows = frame[frame["customer_id"].str.startswith(prefix)].reset_index(drop=True)
    return rows.assign(customer_id=rows["customer_id"].str.removeprefix(prefix))


def _events(offset: st.SearchStrategy[int], min_transactions: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "transactions": st.lists(_transaction(offset), min_size=min_transactions, max_size=6),
            "interactions": st.lists(_interaction(offset), max_size=5),
            "cancellations": st.lists(_cancellation(offset), max_size=1),
        }
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    signups=st.lists(st.one_of(st.none(), st.integers(-30 * DAY, 500 * DAY)), min_size=3, max_size=3),
    past=_events(st.builds(lambda s: -s, _PAST), min_transactions=1),
    future=_events(_FUTURE, min_transactions=0),
    data=st.data(),
)
def test_events_at_or_after_the_cutoff_never_change_the_features(
    signups: list[int | None], past: Events, future: Events, data: st.DataObject
) -> None:
    """Features of the original customers ("a:") equal those of their copies ("b:") whose events at or
    after the cutoff (purchases and returns alike) were changed. Both copies go through one DuckDB run, which is sound because each
    customer's features depend only on that customer's rows (checked by the independence test below)."""
    assume(any(t["amount"] >= 0 for t in past["transactions"]))  # data with only returns is refused
    original = _tables("a:", signups, past, future)
    changed = _tables("b:", signups, past, _mutate(data, future))
    with tempfile.TemporaryDirectory() as tmp:
        features = compute_features(_load(Path(tmp), original, changed), CUTOFF)
    assert_frame_equal(_unprefixed(features, "a:"), _unprefixed(features, "b:"), check_exact=True)


def test_a_customers_features_ignore_other_customers(tiny: Dataset, tiny_features: pd.DataFrame) -> None:
    """Adding busy, active customers to the data leaves every existing customer's features unchanged."""
    extra_tx = tiny.transactions.assign(customer_id="X" + tiny.transactions["customer_id"])
    extra_it = tiny.interactions.assign(customer_id="X" + tiny.interactions["customer_id"], satisfaction=5.0)
    extra_customers = tiny.customers.assign(customer_id="X" + tiny.customers["customer_id"], segment="big")
    bigger = Dataset(
        transactions=pd.concat([tiny.transactions, extra_tx.assign(amount=extra_tx["amount"] * 7)]),
        customers=pd.concat([tiny.customers, extra_customers]),
        interactions=pd.concat([tiny.interactions, extra_it]),
        cancellations=tiny.cancellations,
        provided=tiny.provided,
    )
    features = compute_features(bigger, CUTOFF).set_index("customer_id")
    assert {"XA", "XB", "XC"} <= set(features.index)
    assert_frame_equal(features.loc[tiny_features.index], tiny_features, check_exact=True)


# ------------------------------------------------------------------------------------------- behaviour


def _with_purchase(dataset: Dataset, customer: str, when: pd.Timestamp) -> Dataset:
    row = dataset.transactions.iloc[[0]].assign(customer_id=customer, timestamp=when, amount=1.0)
    if not dataset.rows_are_orders:
        row = row.assign(order_id="NEW")
    return Dataset(
        pd.concat([dataset.transactions, row], ignore_index=True),
        dataset.customers,
        dataset.interactions,
        dataset.cancellations,
        dataset.provided,
    )


@pytest.mark.parametrize("days_before", [0.25, 10.0, 50.0, 300.0])
def test_another_purchase_never_increases_recency(
    tiny: Dataset, tiny_features: pd.DataFrame, days_before: float
) -> None:
    when = CUTOFF - pd.Timedelta(days=days_before)
    old = tiny_features["recency_days"]
    new = compute_features(_with_purchase(_with_purchase(tiny, "A", when), "C", when), CUTOFF)
    new = new.set_index("customer_id")["recency_days"]

    assert (new.loc[old.index].fillna(math.inf) <= old.fillna(math.inf)).all()
    assert new["A"] == pytest.approx(min(old["A"], days_before))
    assert new["C"] == pytest.approx(days_before)  # C had never bought
    assert_frame_equal(new.loc[["B", "F"]].to_frame(), old.loc[["B", "F"]].to_frame())


@pytest.mark.parametrize(("horizon_days", "n_train"), [(30, 1), (30, 12), (90, 6), (180, 12)])
def test_training_label_windows_end_before_the_validation_cutoff(
    tiny: Dataset, horizon_days: int, n_train: int
) -> None:
    horizon = pd.Timedelta(days=horizon_days)
    train, validation = snapshot_cutoffs(tiny, horizon_days, n_train)

    assert 1 <= len(train) <= n_train and train == sorted(set(train))
    assert all(cutoff + horizon <= validation for cutoff in train)
    assert validation + horizon <= observed_until(tiny)  # the validation labels are fully observed
    assert train[0] > tiny.transactions["timestamp"].min()  # every training cutoff has history before it


def test_too_short_history_is_a_data_validation_error(tmp_path: Path) -> None:
    (tmp_path / "transactions.csv").write_text(
        "customer_id,timestamp,amount\nA,2024-01-01,5\nA,2024-03-01,5\nB,2024-03-30,5\n"
    )
    dataset = load_dataset(tmp_path, now=NOW)
    with pytest.raises(DataValidationError) as caught:
        snapshot_cutoffs(dataset, horizon_days=90, n_train=3)
    problem = caught.value.problems[0]
    assert problem.file.endswith("transactions.csv") and problem.column == "timestamp"
    assert "90-day horizon" in problem.problem and "at least 210 days" in problem.hint
