"""Loading and validating a data folder, as a user meets it.

Good data loads into a :class:`Dataset` with every optional column filled in; bad data raises one
:class:`DataValidationError` whose message names the file, the column, how many rows are wrong, shows an
example and says how to fix it. Nothing else may escape ``load_dataset``.
"""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.errors import DataProblem, DataValidationError
from features.loading import Dataset, load_dataset

NOW = datetime(2025, 1, 1)
PLAIN = "customer_id,timestamp,amount\nC1,2024-01-05,10.5\nC1,2024-02-01 13:30:00,20\nC2,2024-03-01,0\n"


def _write(folder: Path, files: dict[str, str | bytes]) -> Path:
    """Write each named file (text as UTF-8, bytes as they are) into ``folder``."""
    for name, content in files.items():
        data = content.encode("utf-8") if isinstance(content, str) else content
        (folder / name).write_bytes(data)
    return folder


def _errors(
    folder: Path, files: dict[str, str | bytes], now: datetime = NOW, duplicates: str | None = None
) -> DataValidationError:
    """Load a folder that must fail and return the error."""
    _write(folder, files)
    with pytest.raises(DataValidationError) as caught:
        load_dataset(folder, now=now, duplicates=duplicates)
    return caught.value


def _only(error: DataValidationError) -> DataProblem:
    assert len(error.problems) == 1, str(error)
    return error.problems[0]


def _assert_row_problem(
    error: DataValidationError, file: str, column: str, n_rows: int, example: str, hint: str
) -> None:
    """The message names file and column, counts the rows, shows an example and gives the fix."""
    problem = _only(error)
    message = str(error)
    assert problem.file.endswith(file) and file in message
    assert problem.column == column and f"column '{column}'" in message
    assert problem.n_rows == n_rows and f"({n_rows} row" in message
    assert f"e.g. {example}" in message
    assert hint in problem.hint and f"fix: {problem.hint}" in message


def _assert_file_problem(error: DataValidationError, file: str, problem_text: str, hint: str) -> None:
    problem = _only(error)
    assert problem.file.endswith(file) and file in str(error)
    assert problem_text in problem.problem
    assert hint in problem.hint and "fix:" in str(error)


# ------------------------------------------------------------------------------------------- good data


def test_plain_purchase_log_loads_and_every_optional_column_gets_its_default(tmp_path: Path) -> None:
    dataset = load_dataset(_write(tmp_path, {"transactions.csv": PLAIN}), now=NOW)

    tx = dataset.transactions
    assert tx["customer_id"].tolist() == ["C1", "C1", "C2"]
    assert tx["timestamp"].tolist() == [
        pd.Timestamp("2024-01-05"),
        pd.Timestamp("2024-02-01 13:30"),
        pd.Timestamp("2024-03-01"),
    ]
    assert tx["amount"].tolist() == [10.5, 20.0, 0.0]
    assert dataset.rows_are_orders and "order_id" not in tx.columns  # every row is its own order
    assert tx["quantity"].eq(1).all() and tx["discount"].eq(0).all()
    assert tx["channel"].eq("unknown").all() and tx["delivery_delay_days"].eq(0).all()
    assert not tx["returned"].any()
    assert str(tx["timestamp"].dtype) == "datetime64[us]" and tx["amount"].dtype == "float64"
    for name, column in (
        ("customers", "signup_date"),
        ("interactions", "type"),
        ("cancellations", "timestamp"),
    ):
        frame = getattr(dataset, name)
        assert frame.empty and column in frame.columns
    assert dataset.provided == {
        "transactions",
        "transactions.customer_id",
        "transactions.timestamp",
        "transactions.amount",
    }


def _full_dataset(folder: Path) -> Path:
    pd.DataFrame(
        {
            "customer_id": ["C1", "C1", "C2"],
            "timestamp": pd.to_datetime(["2024-01-05 10:00", "2024-01-05 10:00", "2024-02-01 00:00"]),
            "amount": [10.0, 5.0, 30.0],
            "order_id": ["O1", "O1", "O2"],
            "quantity": [1, 2, 1],
            "discount": [0.0, 1.5, 0.0],
            "channel": ["Web", "web", "Store"],
            "returned": [False, False, True],
            "delivery_delay_days": [0.0, 0.0, 2.0],
        }
    ).to_parquet(folder / "transactions.parquet")
    (folder / "customers.csv").write_text(
        "customer_id,signup_date,country,employees\nC1,2023-06-01,DE,12\nC2,,FR,3\nC3,2024-01-01,DE,1\n"
    )
    pd.DataFrame(
        {
            "customer_id": ["C1", "C2"],
            "timestamp": pd.to_datetime(["2024-01-10", "2024-02-03"]),
            "type": ["Complaint", "survey"],
            "channel": ["phone", "email"],
            "resolved": [False, None],
            "resolution_hours": [None, 2.0],
            "satisfaction": [None, 4.0],
            "nps": [None, 9.0],
        }
    ).to_parquet(folder / "interactions.parquet")
    (folder / "cancellations.csv").write_text("customer_id,timestamp\nC3,2024-03-01\n")
    return folder


def test_full_dataset_with_all_four_tables_in_csv_and_parquet_loads(tmp_path: Path) -> None:
    dataset = load_dataset(_full_dataset(tmp_path), now=NOW)

    assert len(dataset.transactions) == 3 and dataset.transactions["order_id"].nunique() == 2
    assert dataset.transactions["channel"].tolist() == ["web", "web", "store"]
    assert dataset.transactions["returned"].tolist() == [False, False, True]
    assert dataset.customers["customer_id"].tolist() == ["C1", "C2", "C3"]
    assert pd.isna(dataset.customers.loc[1, "signup_date"])
    assert dataset.attribute_columns == ["country", "employees"]
    assert dataset.customers["country"].tolist() == ["de", "fr", "de"]
    assert dataset.customers["employees"].dtype == "float64"
    assert dataset.interactions["type"].tolist() == ["complaint", "survey"]
    assert dataset.interactions["satisfaction"].isna().tolist() == [True, False]
    assert dataset.cancellations["timestamp"].tolist() == [pd.Timestamp("2024-03-01")]
    assert {"customers", "interactions", "interactions.nps", "cancellations"} <= dataset.provided
    assert set(dataset.files) == {"transactions", "customers", "interactions", "cancellations"}
    assert dataset.last_date == pd.Timestamp("2024-03-01")


def test_an_attribute_with_one_late_word_among_numbers_stays_text(tmp_path: Path) -> None:
    ids = [f"C{i}" for i in range(1, 1501)]
    sizes = [str(i % 40) for i in range(1, 1500)] + ["about 10"]
    customers = "customer_id,employees,revenue\n" + "".join(
        f"{c},{size},{i}.5\n" for i, (c, size) in enumerate(zip(ids, sizes, strict=True))
    )
    _write(tmp_path, {"transactions.csv": PLAIN, "customers.csv": customers})

    dataset = load_dataset(tmp_path, now=NOW)

    assert dataset.customers["employees"].tolist()[-2:] == ["19", "about 10"]  # text, as written
    assert dataset.customers["revenue"].dtype == "float64"


MAPPING = """\
transactions:
  file: orders.csv
  columns: {customer_id: CustID, timestamp: OrderDate, amount: Total}
  date_format: "%d/%m/%Y"
  encoding: latin-1
"""


def test_column_mapping_loads_non_standard_data_unchanged(tmp_path: Path) -> None:
    orders = "CustID;OrderDate;Total\n".replace(";", ",") + "José,03/02/2024,12.5\nZoë,25/12/2023,7\n"
    _write(tmp_path, {"orders.csv": orders.encode("latin-1"), "columns.yaml": MAPPING})

    dataset = load_dataset(tmp_path, now=NOW)

    tx = dataset.transactions
    assert tx["customer_id"].tolist() == ["José", "Zoë"]
    assert tx["timestamp"].tolist() == [pd.Timestamp("2024-02-03"), pd.Timestamp("2023-12-25")]
    assert tx["amount"].tolist() == [12.5, 7.0]
    assert dataset.files["transactions"] == tmp_path / "orders.csv"


def test_mapping_file_can_live_outside_the_data_folder(tmp_path: Path) -> None:
    data = tmp_path / "export"
    data.mkdir()
    _write(data, {"orders.csv": "CustID,OrderDate,Total\nA,31/01/2024,1\n".encode("latin-1")})
    mapping = tmp_path / "my-mapping.yaml"
    mapping.write_text(MAPPING)

    dataset = load_dataset(data, mapping, now=NOW)

    assert dataset.transactions["timestamp"].tolist() == [pd.Timestamp("2024-01-31")]


# ----------------------------------------------------------------------------- rows as orders


def test_a_purchase_log_without_order_ids_counts_every_row_as_an_order(tmp_path: Path) -> None:
    dataset = load_dataset(_write(tmp_path, {"transactions.csv": PLAIN}), now=NOW)

    assert dataset.rows_are_orders


def test_unique_order_ids_make_every_row_an_order(tmp_path: Path) -> None:
    rows = (
        "customer_id,timestamp,amount,order_id\nC1,2024-01-05,5,O1\nC1,2024-01-05,5,O2\nC2,2024-03-01,0,O3\n"
    )
    dataset = load_dataset(_write(tmp_path, {"transactions.csv": rows}), now=NOW)

    assert dataset.rows_are_orders
    assert len(dataset.transactions) == 3  # equal but for the order id: two orders, not a duplicate


def test_an_order_id_on_several_rows_makes_them_order_lines(tmp_path: Path) -> None:
    rows = "customer_id,timestamp,amount,order_id\nC1,2024-01-05,5,O1\nC1,2024-01-05,7, O1 \nC2,2024-03-01,0,O2\n"
    dataset = load_dataset(_write(tmp_path, {"transactions.csv": rows}), now=NOW)

    assert not dataset.rows_are_orders  # " O1 " is O1 once trimmed
    assert dataset.transactions["order_id"].tolist() == ["O1", "O1", "O2"]


def test_duplicated_rows_sharing_an_order_id_are_counted_and_shown(tmp_path: Path) -> None:
    rows = (
        "customer_id,timestamp,amount,order_id\n"
        "C1,2024-01-01,5,O1\nC1,2024-01-01,5,O1\nC2,2024-01-01,5,O2\nC1,2024-01-01,5,O1\n"
    )
    problem = _only(error := _errors(tmp_path, {"transactions.csv": rows}, duplicates="fail"))
    assert problem.column is None and "duplicate rows" in problem.problem
    assert problem.n_rows == 2 and "(2 rows)" in str(error)
    assert (
        problem.examples
        == [{"customer_id": "C1", "timestamp": pd.Timestamp("2024-01-01"), "amount": 5.0}] * 2
    )


# -------------------------------------------------------------------------------------------- bad data


def test_missing_required_column_is_named_with_the_columns_found(tmp_path: Path) -> None:
    error = _errors(tmp_path, {"transactions.csv": "customer_id,date,amount\nC1,2024-01-01,5\n"})
    problem = _only(error)
    assert problem.file.endswith("transactions.csv") and problem.column == "timestamp"
    assert "required column is missing" in problem.problem
    assert "rename a column to 'timestamp'" in problem.hint and "customer_id, date, amount" in problem.hint
    assert "column 'timestamp'" in str(error)


def test_unparseable_dates_are_counted_and_shown(tmp_path: Path) -> None:
    rows = "customer_id,timestamp,amount\nC1,2024-01-01,5\nC2,yesterday,5\nC3,31/01/2024,5\n"
    error = _errors(tmp_path, {"transactions.csv": rows})
    _assert_row_problem(error, "transactions.csv", "timestamp", 2, "'yesterday', '31/01/2024'", "date_format")


def test_negative_amounts_on_rows_not_marked_as_returns_are_counted_and_shown(tmp_path: Path) -> None:
    rows = "customer_id,timestamp,amount,order_id\nC1,2024-01-01,5,1\nC2,2024-01-02,-3.5,2\nC2,2024-01-03,-1,C3\n"
    mapping = "transactions:\n  returns: {order_id_prefix: C}\n"
    error = _errors(tmp_path, {"transactions.csv": rows, "columns.yaml": mapping})
    _assert_row_problem(error, "transactions.csv", "amount", 1, "-3.5", "mark those rows as returns")


def test_only_return_lines_and_no_purchase_is_an_error(tmp_path: Path) -> None:
    error = _errors(tmp_path, {"transactions.csv": "customer_id,timestamp,amount\nC1,2024-01-01,-5\n"})
    problem = _only(error)
    assert problem.file.endswith("transactions.csv") and problem.column == "amount"
    assert "no purchases" in problem.problem and "learns from purchases" in problem.hint


def test_non_numeric_amounts_are_counted_and_shown(tmp_path: Path) -> None:
    rows = 'customer_id,timestamp,amount\nC1,2024-01-01,$5\nC2,2024-01-02,"1,5"\nC3,2024-01-03,7\n'
    error = _errors(tmp_path, {"transactions.csv": rows})
    _assert_row_problem(error, "transactions.csv", "amount", 2, "'$5', '1,5'", "'.' as decimal point")


def test_infinite_amounts_are_counted_and_shown(tmp_path: Path) -> None:
    rows = "customer_id,timestamp,amount\nC1,2024-01-01,inf\nC2,2024-01-02,4\n"
    error = _errors(tmp_path, {"transactions.csv": rows})
    _assert_row_problem(error, "transactions.csv", "amount", 1, "inf", "replace infinite values")


def test_ids_missing_from_customers_are_counted_and_shown(tmp_path: Path) -> None:
    files = {
        "transactions.csv": "customer_id,timestamp,amount\nC1,2024-01-01,5\nC9,2024-01-02,5\nC9,2024-01-03,1\n",
        "customers.csv": "customer_id,signup_date\nC1,2023-01-01\n",
    }
    error = _errors(tmp_path, files)
    _assert_row_problem(
        error, "transactions.csv", "customer_id", 2, "'C9'", "add those customers to customers.csv"
    )


def test_repeated_customer_rows_are_reported(tmp_path: Path) -> None:
    files = {
        "transactions.csv": "customer_id,timestamp,amount\nC1,2024-01-01,5\n",
        "customers.csv": "customer_id,signup_date\nC1,2023-01-01\nC1,2023-05-01\nC2,2023-01-01\n",
    }
    error = _errors(tmp_path, files)
    _assert_row_problem(error, "customers.csv", "customer_id", 2, "'C1'", "one row per customer")


def test_duplicated_rows_are_dropped_by_default_and_counted(tmp_path: Path) -> None:
    rows = "customer_id,timestamp,amount\nC1,2024-01-01,5\nC1,2024-01-01,5\nC2,2024-01-01,5\n"
    dataset = load_dataset(_write(tmp_path, {"transactions.csv": rows}), now=NOW)

    assert dataset.transactions["customer_id"].tolist() == ["C1", "C2"]
    report = dataset.report.tables["transactions"]
    assert (report.rows_read, report.duplicate_rows, report.rows_kept) == (3, 1, 2)
    assert any("dropped 1 exact duplicate rows" in w for w in dataset.report.warnings)


def test_duplicated_rows_are_counted_and_shown_when_duplicates_fail(tmp_path: Path) -> None:
    rows = "customer_id,timestamp,amount\nC1,2024-01-01,5\nC1,2024-01-01,5\nC2,2024-01-01,5\n"
    problem = _only(error := _errors(tmp_path, {"transactions.csv": rows}, duplicates="fail"))
    assert problem.file.endswith("transactions.csv") and problem.n_rows == 1 and "(1 row)" in str(error)
    assert "duplicate rows" in problem.problem and "'customer_id': 'C1'" in str(error)
    assert "remove the repeated rows" in problem.hint


def test_timestamps_in_the_future_are_counted_and_shown(tmp_path: Path) -> None:
    rows = "customer_id,timestamp,amount\nC1,2024-12-31,5\nC2,2025-01-02,5\n"
    error = _errors(tmp_path, {"transactions.csv": rows}, now=datetime(2025, 1, 1))
    _assert_row_problem(
        error, "transactions.csv", "timestamp", 1, "Timestamp('2025-01-02 00:00:00')", "day and month swapped"
    )


def test_empty_file_is_reported(tmp_path: Path) -> None:
    error = _errors(tmp_path, {"transactions.csv": b""})
    _assert_file_problem(error, "transactions.csv", "empty (0 bytes)", "header row")


def test_header_only_transactions_are_reported(tmp_path: Path) -> None:
    error = _errors(tmp_path, {"transactions.csv": "customer_id,timestamp,amount\n"})
    _assert_file_problem(error, "transactions.csv", "header but no rows", "export the table with its rows")


def test_latin1_bytes_without_a_mapping_are_reported_as_wrong_encoding(tmp_path: Path) -> None:
    rows = "customer_id,timestamp,amount\nJosé,2024-01-01,5\n".encode("latin-1")
    error = _errors(tmp_path, {"transactions.csv": rows})
    _assert_file_problem(error, "transactions.csv", "not valid utf-8", "set 'encoding'")


def test_truncated_parquet_is_reported(tmp_path: Path) -> None:
    source = tmp_path / "full.parquet"
    pd.DataFrame(
        {"customer_id": ["C1"] * 50, "timestamp": pd.Timestamp("2024-01-01"), "amount": 1.0}
    ).to_parquet(source)
    data = source.read_bytes()
    folder = tmp_path / "data"
    folder.mkdir()
    error = _errors(folder, {"transactions.parquet": data[: len(data) // 2]})
    _assert_file_problem(error, "transactions.parquet", "Parquet", "truncated or corrupt")


def test_missing_transactions_file_is_reported(tmp_path: Path) -> None:
    error = _errors(tmp_path, {"customers.csv": "customer_id\nC1\n"})
    _assert_file_problem(error, "transactions.csv", "missing (required)", "customer_id, timestamp, amount")


def test_satisfaction_outside_1_to_5_is_counted_and_shown(tmp_path: Path) -> None:
    files = {
        "transactions.csv": PLAIN,
        "interactions.csv": "customer_id,timestamp,type,satisfaction\n"
        "C1,2024-01-01,survey,5\nC1,2024-01-02,survey,7\nC2,2024-01-03,survey,\n",
    }
    error = _errors(tmp_path, files)
    _assert_row_problem(error, "interactions.csv", "satisfaction", 1, "7.0", "at most 5")


def test_several_problems_in_several_files_are_reported_together(tmp_path: Path) -> None:
    files = {
        "transactions.csv": "customer_id,timestamp,amount\nC1,2024-13-01,5\nC2,2024-01-01,five\n",
        "interactions.csv": "customer_id,timestamp,type,nps\nC1,2024-01-01,survey,11\n",
        "cancellations.csv": "customer_id,when\nC1,2024-01-01\n",
    }
    error = _errors(tmp_path, files)
    found = {(Path(p.file).name, p.column) for p in error.problems}
    assert found == {
        ("transactions.csv", "timestamp"),
        ("transactions.csv", "amount"),
        ("interactions.csv", "nps"),
        ("cancellations.csv", "timestamp"),
    }
    assert str(error).startswith("The input data breaks the data contract (4 problems):")


def test_parquet_with_empty_required_timestamps_is_reported(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"customer_id": ["C1", "C2"], "timestamp": pd.to_datetime(["2024-01-01", None]), "amount": [1.0, 2.0]}
    )
    frame.to_parquet(tmp_path / "transactions.parquet")
    with pytest.raises(DataValidationError) as caught:
        load_dataset(tmp_path, now=NOW)
    problem = _only(caught.value)
    assert (problem.column, problem.problem, problem.n_rows) == ("timestamp", "has empty dates", 1)


def test_repeated_column_after_trimming_spaces_is_reported(tmp_path: Path) -> None:
    error = _errors(
        tmp_path, {"transactions.csv": "customer_id, customer_id,timestamp,amount\nA,B,2024-01-01,1\n"}
    )
    _assert_file_problem(error, "transactions.csv", "more than once in the header", "keep one column")


# ---------------------------------------------------------------------------------------- robustness

# fmt: off
_NAMES = [
    "customer_id", "timestamp", "amount", "order_id", "quantity", "discount", "channel", "returned",
    "delivery_delay_days", "signup_date", "type", "satisfaction", "nps", "resolved", "resolution_hours",
    "referrer_id", "referred_id",
]
_HEADER_EXTRAS = st.sampled_from([*_NAMES, " customer_id", "amount ", " timestamp", " type", "nps ", "", "x"])
_VALUES = st.sampled_from([
    "C1", "C2", " C1 ", "2024-01-01", "2024-02-30", "01/02/2024", "2024-01-01T10:00:00+05:00", "9999-12-31",
    "1969-12-31", "0", "-1", "2", "1e400", "nan", "inf", "NaN", "", " ", "true", "no", "maybe", "3.5", '"1,5"',
    "é", "\x00", '"', "'", "complaint", "survey", "12345678901234567890", "1.5e-300",
])
# fmt: on
_HEADER = st.lists(_HEADER_EXTRAS, max_size=4).map(
    lambda extra: ",".join(["customer_id", "timestamp", "amount", *extra])
)
_ROW = st.lists(_VALUES, max_size=7).map(",".join)
_CSV_LIKE = st.builds(
    lambda header, rows, end: "\n".join([header, *rows]) + end,
    st.one_of(_HEADER, _HEADER, st.lists(_HEADER_EXTRAS, max_size=5).map(",".join)),
    st.lists(_ROW, max_size=6),
    st.sampled_from(["", "\n", "\r\n", '"']),
)
_GARBAGE = st.one_of(
    _CSV_LIKE.map(str.encode),
    _CSV_LIKE.map(str.encode),
    _CSV_LIKE.map(lambda t: t.encode("utf-16")),
    st.text(max_size=200).map(str.encode),
    st.binary(max_size=200),
)
_VALID_TX = "customer_id,timestamp,amount\nC1,2024-01-01,5\nC2,2024-01-02,6\n"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    content=_GARBAGE,
    target=st.sampled_from(["transactions.csv"] * 2 + ["customers.csv", "interactions.csv", "referrals.csv"]),
)
def test_garbage_input_gives_a_dataset_or_a_data_validation_error(content: bytes, target: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if target != "transactions.csv":
            (folder / "transactions.csv").write_text(_VALID_TX)
        (folder / target).write_bytes(content)
        try:
            result = load_dataset(folder, now=NOW)
        except DataValidationError as error:
            assert error.problems and all(p.hint for p in error.problems)
        else:
            assert isinstance(result, Dataset) and len(result.transactions) > 0
