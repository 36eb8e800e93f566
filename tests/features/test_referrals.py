"""Referral value: the optional referrals table as the loader takes it, and the value a customer brought
through the customers they referred (features.referrals)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.contract import describe_contract, read_mapping
from features.economics import EconomicsConfig
from features.errors import DataValidationError
from features.loading import format_load_report, load_dataset
from features.referrals import referral_values, referred_values

NOW = datetime(2025, 1, 1)
AS_OF = pd.Timestamp("2024-05-01")


def _referrals(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    referrer, referred, stamps = zip(*rows, strict=True) if rows else ((), (), ())
    return pd.DataFrame(
        {
            "referrer_id": pd.Series(referrer, dtype=str),
            "referred_id": pd.Series(referred, dtype=str),
            "timestamp": pd.to_datetime(pd.Series(stamps, dtype=str), format="ISO8601").astype(
                "datetime64[us]"
            ),
        }
    )


# ------------------------------------------------------------------------------------------------ value

REFERRALS = _referrals(
    [
        ("A", "B", "2024-01-01"),
        ("A", "C", "2024-02-01"),
        ("B", "D", "2024-03-01"),  # B's, not A's: chains are not followed
        ("A", "A", "2024-01-01"),  # a self-referral never counts
        ("E", "C", "2024-02-10"),  # C was already referred by A: only the earliest referral counts
        ("A", "F", "2024-06-01"),  # after the as-of date
        ("H", "X", "2024-01-01"),  # X is nobody the scores know
        ("K", "G", "2024-01-01"),  # G's value is unknown
    ]
)
VALUED = {
    "customer_id": ["B", "C", "D", "F", "G"],
    "historic": [100.0, 20.0, 10.0, 1000.0, 7.0],
    "residual": [50.0, -5.0, 30.0, 0.0, np.nan],
}


@pytest.mark.parametrize(
    ("historic", "residual"), [("historic_value", "residual_value"), ("value_historic", "value_lifetime")]
)
def test_referral_value_on_a_hand_checked_example(historic: str, residual: str) -> None:
    valued = pd.DataFrame(
        {"customer_id": VALUED["customer_id"], historic: VALUED["historic"], residual: VALUED["residual"]}
    )
    ids = ["A", "B", "C", "E", "H", "K", "Z"]

    values = dict(zip(ids, referral_values(REFERRALS, valued, AS_OF, ids), strict=True))

    assert values["A"] == pytest.approx((100 + 50) + (20 - 5))  # B and C, a negative residual included
    assert values["B"] == pytest.approx(10 + 30)  # D's value is B's to claim, and never A's as well
    assert values["C"] == values["E"] == values["H"] == values["Z"] == 0.0
    assert np.isnan(values["K"])  # a referred customer of unknown value: unknown, not a guess
    later = referral_values(REFERRALS, valued, pd.Timestamp("2024-07-01"), ["A"])
    assert later[0] == pytest.approx(165 + 1000)  # F's referral counts once the as-of date passes it


def test_without_a_referrals_table_the_value_is_null_and_with_an_empty_one_zero() -> None:
    valued = pd.DataFrame({"customer_id": ["B"], "historic_value": [1.0], "residual_value": [2.0]})

    assert np.isnan(referral_values(None, valued, AS_OF, ["A", "B"])).all()
    assert referral_values(_referrals([]), valued, AS_OF, ["A", "B"]).tolist() == [0.0, 0.0]


def test_a_referral_brings_what_was_spent_from_its_day_on_plus_the_residual_value() -> None:
    tx = pd.DataFrame(
        {
            "customer_id": ["B", "B", "B", "B", "C", "D"],
            "timestamp": pd.to_datetime(
                ["2024-01-01", "2024-02-10", "2024-03-01", "2024-06-01", "2024-02-05", "2023-01-01"]
            ).astype("datetime64[us]"),
            "amount": [40.0, 60.0, -10.0, 500.0, 30.0, 80.0],
            "channel": ["web", "web", "web", "web", "store", "web"],
        }
    )
    referrals = _referrals(
        [("A", "B", "2024-02-10 15:00"), ("A", "C", "2024-02-01"), ("A", "D", "2022-12-31")]
    )

    class Data:
        def __init__(self) -> None:
            self.referrals, self.transactions = referrals, tx

    scored = pd.DataFrame({"customer_id": ["A", "B", "C"], "residual_value": [5.0, 50.0, 20.0]})
    economics = EconomicsConfig(gross_margin=0.5, margin_by_channel={"store": 0.2})

    brought = referred_values(Data(), AS_OF, scored, economics).set_index("customer_id")

    # B: bought before the referral (40, not credited), then 60 on its day and a return of 10 (at 0.5);
    # the purchase after the as-of date is not known yet. C bought in store (0.2). D is no longer active
    # (not scored): what D spent counts, D's future does not.
    assert brought.loc["B"].tolist() == pytest.approx([(60 - 10) * 0.5, 50.0])
    assert brought.loc["C"].tolist() == pytest.approx([30 * 0.2, 20.0])
    assert brought.loc["D"].tolist() == pytest.approx([80 * 0.5, 0.0])
    revenue = referred_values(Data(), AS_OF, scored, None).set_index("customer_id")
    assert revenue.loc[["B", "C", "D"], "historic_value"].tolist() == pytest.approx([50.0, 30.0, 80.0])
    total = referral_values(referrals, brought.reset_index(), AS_OF, ["A"])[0]
    assert total == pytest.approx(25 + 50 + 6 + 20 + 40)


# ------------------------------------------------------------------------------------------------- load

TRANSACTIONS = """customer_id,timestamp,amount
A,2024-01-05,10
B,2024-02-01,20
C,2024-03-01,30
D,2024-01-10,5
D,2024-04-01,15
E,2024-04-10,8
"""


def _folder(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in {"transactions.csv": TRANSACTIONS, **files}.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def test_the_loader_keeps_the_referrals_that_can_count_and_reports_the_rest(tmp_path: Path) -> None:
    rows = """referrer_id,referred_id,timestamp
A,B,2024-01-20
A,B,2024-01-20
C,B,2024-01-25
A,A,2024-01-01
A,Z,2024-01-01
 ,C,2024-01-01
B,C,2024-02-15
A,D,2024-03-01
A,E,2024-05-01
"""
    dataset = load_dataset(_folder(tmp_path, {"referrals.csv": rows}), now=NOW)

    assert dataset.referrals is not None
    kept = dataset.referrals.sort_values(["referrer_id", "referred_id"])
    assert list(zip(kept["referrer_id"], kept["referred_id"], strict=True)) == [
        ("A", "B"),
        ("A", "D"),
        ("A", "E"),
        ("B", "C"),
    ]
    assert str(dataset.referrals["timestamp"].dtype) == "datetime64[us]"
    report = "\n".join(format_load_report(dataset))
    assert "referrals (referrals.csv): 9 rows read, 4 kept" in report
    for line in (
        "dropped 1 exact duplicate rows",
        "dropped 1 referrals without a referrer or referred id",
        "dropped 1 self-referrals",
        "dropped 1 referrals naming a customer the data does not know",
        "dropped 1 repeat referrals of a customer already referred",
    ):
        assert line in report
    assert "customers not in the transactions, interactions or cancellations (e.g. 'Z')" in report
    assert "1 referrals are dated after the newest purchase or contact (2024-04-10)" in report
    assert "2 referred customers bought before the date of their referral" in report  # D and E
    assert "referrals" in dataset.provided and dataset.fingerprint()["rows"]["referrals"] == 4
    assert dataset.last_date == pd.Timestamp("2024-04-10")  # referrals never move the default as-of


def test_a_dataset_without_referrals_has_none_and_a_header_only_file_has_an_empty_table(
    tmp_path: Path,
) -> None:
    assert load_dataset(_folder(tmp_path, {}), now=NOW).referrals is None
    empty = load_dataset(_folder(tmp_path, {"referrals.csv": "referrer_id,referred_id,timestamp\n"}), now=NOW)
    assert empty.referrals is not None and empty.referrals.empty


def test_ids_are_checked_against_the_customers_table_when_there_is_one(tmp_path: Path) -> None:
    files = {
        "customers.csv": "customer_id\nA\nB\nC\nD\nE\nN\n",
        "referrals.csv": "referrer_id,referred_id,timestamp\nA,N,2024-01-01\nA,B,2024-01-01\n",
    }
    dataset = load_dataset(_folder(tmp_path, files), now=NOW)

    assert dataset.referrals is not None and len(dataset.referrals) == 2  # N never bought, but exists


def test_referrals_load_through_the_column_mapping(tmp_path: Path) -> None:
    mapping = """referrals:
  file: invites.csv
  columns: {referrer_id: Inviter, referred_id: Invitee, timestamp: Joined}
  date_format: "%d/%m/%Y"
"""
    files = {"invites.csv": "Inviter,Invitee,Joined\nA,B,20/01/2024\n", "columns.yaml": mapping}

    dataset = load_dataset(_folder(tmp_path, files), now=NOW)

    assert dataset.referrals is not None
    assert dataset.referrals.to_dict("records") == [
        {"referrer_id": "A", "referred_id": "B", "timestamp": pd.Timestamp("2024-01-20")}
    ]
    assert dataset.files["referrals"] == tmp_path / "invites.csv"
    assert set(read_mapping(tmp_path / "columns.yaml")) == {"referrals"}


@pytest.mark.parametrize(
    ("content", "column", "problem", "hint"),
    [
        (
            "referrer_id,timestamp\nA,2024-01-01\n",
            "referred_id",
            "required column is missing",
            "rename a column",
        ),
        (
            "referrer_id,referred_id,timestamp\nA,B,yesterday\n",
            "timestamp",
            "not dates in format ISO8601",
            "YYYY-MM-DD",
        ),
        (
            "referrer_id,referred_id,timestamp\nA,B,2031-01-01\n",
            "timestamp",
            "not in the future",
            "date format",
        ),
        (
            "referrer_id,referred_id,timestamp\nX1,X2,2024-01-01\nA,A,2024-01-01\n",
            "referrer_id, referred_id",
            "no referral that can count among its rows (1 self-referrals, 1 referrals naming a customer",
            "must hold the customer ids of the transactions",
        ),
        ("", None, "is empty (0 bytes)", "export the table again"),
    ],
)
def test_a_bad_referrals_file_is_refused_with_a_message_naming_file_column_and_fix(
    tmp_path: Path, content: str, column: str | None, problem: str, hint: str
) -> None:
    _folder(tmp_path, {"referrals.csv": content})
    with pytest.raises(DataValidationError) as caught:
        load_dataset(tmp_path, now=NOW)

    (found,) = caught.value.problems
    assert found.file.endswith("referrals.csv") and found.column == column
    assert problem in found.problem and hint in found.hint
    assert "referrals.csv" in str(caught.value) and "fix:" in str(caught.value)


def test_the_contract_lists_the_referrals_table() -> None:
    lines = list(describe_contract())
    start = lines.index(next(line for line in lines if line.startswith("referrals (optional)")))
    assert "referral_value" in lines[start]
    assert [line.split()[0] for line in lines[start + 1 : start + 4]] == [
        "referrer_id",
        "referred_id",
        "timestamp",
    ]
    assert all("required" in line for line in lines[start + 1 : start + 4])
