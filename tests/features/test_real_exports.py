"""A real online shop's export loads as it comes, and every row read is accounted for.

The export is built here, line by line, with every trait of the real thing: invoice lines with a product
code the contract does not use, credit notes as ``C``-prefixed invoices with negative quantities, identical
lines of one invoice (different products), a few lines exported twice, guest rows without a customer id,
customer ids written as floats ("13085.0"), amount only as quantity x unit price, and one invoice whose
lines carry two timestamps. The builder knows what the load report must say, to the row.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.engine import compute_features, compute_labels
from features.errors import ConfigError, DataValidationError
from features.loading import Dataset, format_load_report, load_dataset

NOW = datetime(2025, 6, 1)
HEADER = ["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID", "Country"]
SHOP_MAPPING = """\
transactions:
  file: invoices.csv
  columns: {order_id: Invoice, customer_id: Customer ID, timestamp: InvoiceDate, quantity: Quantity, unit_price: Price}
  date_format: "%m/%d/%Y %H:%M"
  amount: quantity * unit_price     # derive amount when the export has no line total
  returns: {order_id_prefix: "C"}
  duplicates: drop
"""
PRICES = (0.85, 1.25, 2.95, 4.5)
START = pd.Timestamp("2023-01-02 09:00")


def _stamp(moment: pd.Timestamp) -> str:
    return moment.strftime("%m/%d/%Y %H:%M")


@dataclass
class _Shop:
    """The lines of the export and what loading them must report."""

    lines: list[list[str]] = field(default_factory=list)
    purchase_invoices: set[str] = field(default_factory=set)
    return_invoices: set[str] = field(default_factory=set)
    purchase_lines: int = 0
    return_lines: int = 0
    refunded: float = 0.0
    identical_lines: int = 0
    next_invoice: int = 500_000

    def invoice(self) -> str:
        self.next_invoice += 1
        return str(self.next_invoice)

    def line(
        self, invoice: str, code: str, quantity: int, when: pd.Timestamp, price: float, customer: str
    ) -> None:
        self.lines.append(
            [invoice, code, f"item {code}", str(quantity), _stamp(when), f"{price}", customer, "UK"]
        )
        if not customer:
            return
        if invoice.startswith("C"):
            self.return_invoices.add(invoice)
            if quantity * price:
                self.return_lines += 1
                self.refunded += quantity * price
        else:
            self.purchase_invoices.add(invoice)
            self.purchase_lines += 1


def _customer_lines(shop: _Shop, rng: np.random.Generator, customer: str) -> None:
    days = np.sort(rng.integers(0, 660, rng.integers(3, 9)))
    for day in days:
        when = START + pd.Timedelta(days=int(day), hours=int(rng.integers(0, 8)))
        invoice = shop.invoice()
        for k in range(int(rng.integers(1, 5))):
            shop.line(invoice, f"S{k}", int(rng.integers(1, 7)), when, float(rng.choice(PRICES)), customer)
        if day % 4 == 0:  # the same quantity at the same price: another product of the same invoice
            last = shop.lines[-1]
            shop.line(invoice, "S9", int(last[3]), when, float(last[5]), customer)
            shop.identical_lines += 1
    if rng.random() < 0.5:
        when = START + pd.Timedelta(days=int(days[-1]) + int(rng.integers(5, 40)), hours=3)
        credit = "C" + shop.invoice()
        for k in range(int(rng.integers(1, 3))):
            shop.line(credit, f"S{k}", -int(rng.integers(1, 4)), when, float(rng.choice(PRICES)), customer)


def build_shop_export(n_customers: int = 30, seed: int = 3) -> tuple[list[list[str]], dict[str, float]]:
    """The export's lines (header first) and the load report it must produce."""
    rng = np.random.default_rng(seed)
    shop = _Shop()
    for c in range(n_customers):
        _customer_lines(shop, rng, f"{13000 + c}.0")
    # customer P: 10 on Dec 1, 2 x 25 on two lines (100) on Jan 10, a 30 credit on Mar 1
    shop.line("599999", "P0", 1, pd.Timestamp("2023-12-01 10:00"), 10.0, "99999.0")
    shop.line("600001", "P1", 2, pd.Timestamp("2024-01-10 10:00"), 25.0, "99999.0")
    shop.line("600001", "P2", 2, pd.Timestamp("2024-01-10 10:00"), 25.0, "99999.0")
    shop.line("C600002", "P1", -1, pd.Timestamp("2024-03-01 10:00"), 30.0, "99999.0")
    shop.line("C600002", "P9", -1, pd.Timestamp("2024-03-01 10:00"), 0.0, "99999.0")  # credits nothing
    # customer R: bought long ago, returned something within the last year (a return makes nobody active)
    shop.line("600003", "R1", 1, pd.Timestamp("2022-06-01 12:00"), 40.0, "88888.0")
    shop.line("C600004", "R1", -1, pd.Timestamp("2024-03-01 12:00"), 40.0, "88888.0")
    # one invoice keyed across a minute boundary: its lines carry two timestamps
    shop.line("600005", "T1", 1, pd.Timestamp("2024-05-05 10:59"), 4.5, "13000.0")
    shop.line("600005", "T2", 1, pd.Timestamp("2024-05-05 11:00"), 4.5, "13000.0")
    # guests: purchases, a credit, and a bad-debt adjustment with a negative price, none with a customer
    for k, (invoice, quantity, price) in enumerate(
        [
            ("600006", 1, 2.95),
            ("600006", 3, 1.25),
            ("600007", 2, 0.85),
            ("C600008", -1, 2.95),
            ("A600009", 1, -50.0),
        ]
    ):
        shop.line(invoice, f"G{k}", quantity, pd.Timestamp("2024-02-02 10:00"), price, "")
    # lines exported twice: three purchase lines and one credit line, every column equal
    repeated = [
        shop.lines[1],
        shop.lines[7],
        shop.lines[20],
        next(x for x in shop.lines if x[0].startswith("C")),
    ]
    shop.lines += [list(x) for x in repeated]
    guests, duplicates, empty = 5, 4, 1
    read = len(shop.lines)
    expected = {
        "rows_read": read,
        "guest_rows": guests,
        "duplicate_rows": duplicates,
        "empty_return_lines": empty,
        "rows_kept": read - guests - duplicates - empty,
        "return_lines": shop.return_lines,
        "returns": len(shop.return_invoices),
        "refunded": shop.refunded,
        "purchase_lines": shop.purchase_lines,
        "orders": len(shop.purchase_invoices) + 1,  # the invoice at two timestamps is two orders
        "split_order_ids": 1,
        "orders_added_by_split": 1,
        "ids_normalised": read - guests,
        "identical_lines": shop.identical_lines,
    }
    return [HEADER, *shop.lines], expected


def write_shop_export(folder: Path, n_customers: int = 30, seed: int = 3) -> dict[str, float]:
    """Write ``invoices.csv`` and ``columns.yaml`` into ``folder``; returns the report expected."""
    folder.mkdir(parents=True, exist_ok=True)
    rows, expected = build_shop_export(n_customers, seed)
    with (folder / "invoices.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    (folder / "columns.yaml").write_text(SHOP_MAPPING)
    return expected


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Dataset, dict[str, float]]:
    folder = tmp_path_factory.mktemp("shop")
    expected = write_shop_export(folder)
    return load_dataset(folder, now=NOW), expected


# ---------------------------------------------------------------------------------------------- loading


def test_the_shop_export_loads_and_the_report_accounts_for_every_row(
    shop: tuple[Dataset, dict[str, float]],
) -> None:
    dataset, expected = shop
    report = dataset.report.tables["transactions"]
    expected = dict(expected)
    assert expected.pop("identical_lines") > 3
    assert expected.pop("refunded") == pytest.approx(report.refunded)
    assert {name: getattr(report, name) for name in expected} == expected
    assert report.rows_kept == report.rows_read - sum(report.dropped.values()) == len(dataset.transactions)
    assert report.amount_derived and report.duplicates_dropped == 4
    lines = format_load_report(dataset)
    assert (
        lines[0] == f"transactions (invoices.csv): {report.rows_read:,} rows read, {report.rows_kept:,} kept"
    )
    for text in (
        "dropped 5 guest rows (no customer id)",
        "dropped 4 exact duplicate rows",
        "dropped 1 return lines with amount 0",
        f"netted {report.return_lines:,} return lines ({report.returns:,} returns",
        "amount derived as quantity * unit_price",
        "1 order ids appear at several timestamps",
    ):
        assert any(text in line for line in lines), (text, lines)
    assert sum(line.startswith("warning:") for line in lines) == 3  # guests, duplicates, split order id


def test_ids_written_as_floats_are_read_as_whole_numbers(shop: tuple[Dataset, dict[str, float]]) -> None:
    dataset, _ = shop
    ids = dataset.transactions["customer_id"]
    assert "99999" in set(ids) and not ids.str.contains(".", regex=False).any()


def test_float_ids_meet_integer_ids_in_another_table(tmp_path: Path) -> None:
    (tmp_path / "transactions.csv").write_text(
        "customer_id,timestamp,amount\n13085.0,2024-01-01,5\n7.00,2024-01-02,1\n"
    )
    (tmp_path / "customers.csv").write_text("customer_id,signup_date\n13085,2023-01-01\n7,2023-01-01\n")

    dataset = load_dataset(tmp_path, now=NOW)

    assert dataset.transactions["customer_id"].tolist() == ["13085", "7"]
    assert dataset.report.tables["transactions"].ids_normalised == 2


def test_text_ids_that_merely_contain_a_float_are_left_alone(tmp_path: Path) -> None:
    rows = "customer_id,timestamp,amount\n12.0,2024-01-01,5\n12,2024-01-02,1\nA-1,2024-01-03,1\n"
    dataset = load_dataset(_write(tmp_path, rows), now=NOW)
    assert dataset.transactions["customer_id"].tolist() == ["12.0", "12", "A-1"]


def test_identical_lines_of_one_invoice_are_kept_when_the_product_code_tells_them_apart(
    shop: tuple[Dataset, dict[str, float]],
) -> None:
    dataset, _ = shop
    p = dataset.transactions[dataset.transactions["customer_id"] == "99999"]
    assert p["order_id"].tolist() == ["599999", "600001", "600001", "C600002"]  # the 0.00 credit is gone
    assert p["amount"].tolist() == [10.0, 50.0, 50.0, -30.0]


def test_an_invoice_at_two_timestamps_is_one_order_per_timestamp(
    shop: tuple[Dataset, dict[str, float]],
) -> None:
    dataset, _ = shop
    tx = dataset.transactions
    split = tx[tx["order_id"].str.startswith("600005")]
    assert split["order_id"].nunique() == 2
    assert split["timestamp"].tolist() == [pd.Timestamp("2024-05-05 10:59"), pd.Timestamp("2024-05-05 11:00")]


def test_duplicates_fail_names_the_file_and_counts_the_rows(tmp_path: Path) -> None:
    write_shop_export(tmp_path)
    with pytest.raises(DataValidationError) as caught:
        load_dataset(tmp_path, now=NOW, duplicates="fail")
    (problem,) = caught.value.problems
    assert problem.file.endswith("invoices.csv") and problem.n_rows == 4
    assert "exact duplicate rows" in problem.problem and "(4 rows)" in str(caught.value)
    assert "duplicates: drop" in problem.hint and "product code" in problem.hint


def test_duplicates_keep_keeps_every_copy_and_the_mapping_sets_the_default(tmp_path: Path) -> None:
    expected = write_shop_export(tmp_path)
    kept = load_dataset(tmp_path, now=NOW, duplicates="keep").report.tables["transactions"]
    assert (
        kept.rows_kept == expected["rows_kept"] + 4
        and kept.duplicate_rows == 4
        and not kept.dropped.get("exact duplicate rows")
    )
    (tmp_path / "columns.yaml").write_text(SHOP_MAPPING.replace("duplicates: drop", "duplicates: fail"))
    with pytest.raises(DataValidationError, match="exact duplicate rows"):
        load_dataset(tmp_path, now=NOW)
    assert (
        load_dataset(tmp_path, now=NOW, duplicates="drop").report.tables["transactions"].rows_kept
        == expected["rows_kept"]
    )


def test_guest_rows_of_a_plain_purchase_log_are_skipped_and_counted(tmp_path: Path) -> None:
    rows = "customer_id,timestamp,amount\nC1,2024-01-01,5\n,2024-01-02,7\n  ,2024-01-03,-2\nC2,2024-01-04,1\n"
    dataset = load_dataset(_write(tmp_path, rows), now=NOW)
    assert dataset.transactions["customer_id"].tolist() == ["C1", "C2"]
    report = dataset.report.tables["transactions"]
    assert (report.rows_read, report.guest_rows, report.rows_kept) == (4, 2, 2)


def test_by_sign_every_negative_amount_is_a_return(tmp_path: Path) -> None:
    rows = (
        "customer_id,timestamp,amount,quantity\nC1,2024-01-01,5,1\nC1,2024-01-02,-5,-1\nC2,2024-01-04,1,1\n"
    )
    dataset = load_dataset(_write(tmp_path, rows), now=NOW)
    report = dataset.report.tables["transactions"]
    assert (report.return_lines, report.returns, report.refunded) == (1, 1, -5.0)
    assert dataset.has_returns and "transactions.returned" in dataset.provided


def test_a_flag_column_marks_returns_and_credits_them_whatever_their_sign(tmp_path: Path) -> None:
    rows = (
        "customer_id,timestamp,amount,IsReturn\nC1,2024-01-01,5,no\nC1,2024-01-02,5,yes\nC2,2024-01-04,1,no\n"
    )
    (tmp_path / "columns.yaml").write_text(
        "transactions:\n  columns: {returned: IsReturn}\n  returns: {flag_column: returned}\n"
    )
    dataset = load_dataset(_write(tmp_path, rows), now=NOW)
    assert dataset.transactions["amount"].tolist() == [5.0, -5.0, 1.0]


def test_a_negative_quantity_on_a_purchase_is_an_error(tmp_path: Path) -> None:
    rows = "customer_id,timestamp,amount,quantity\nC1,2024-01-01,5,-1\nC2,2024-01-04,1,1\n"
    with pytest.raises(DataValidationError) as caught:
        load_dataset(_write(tmp_path, rows), now=NOW)
    (problem,) = caught.value.problems
    assert problem.column == "quantity" and problem.n_rows == 1 and "return line" in problem.hint


def test_a_malformed_shop_export_still_fails_clearly_and_writes_nothing(tmp_path: Path) -> None:
    write_shop_export(tmp_path)
    path = tmp_path / "invoices.csv"
    text = path.read_text().splitlines()
    first = text[1].split(",")
    first[3], first[5] = "-2", "x"  # a negative quantity on a purchase invoice, and a price that is no number
    path.write_text("\n".join([text[0], ",".join(first), *text[2:]]) + "\n")
    before = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}

    with pytest.raises(DataValidationError) as caught:
        load_dataset(tmp_path, now=NOW)

    (problem,) = caught.value.problems
    assert problem.file.endswith("invoices.csv") and problem.column == "unit_price" and problem.n_rows == 1
    assert "not numbers" in problem.problem and "fix:" in str(caught.value)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


def test_negative_credits_outside_credit_notes_are_an_error_with_the_fix(tmp_path: Path) -> None:
    write_shop_export(tmp_path)
    path = tmp_path / "invoices.csv"
    text = path.read_text().splitlines()
    first = text[1].split(",")
    first[3] = "-2"
    path.write_text("\n".join([text[0], ",".join(first), *text[2:]]) + "\n")
    with pytest.raises(DataValidationError) as caught:
        load_dataset(tmp_path, now=NOW)
    found = {(p.column, p.n_rows) for p in caught.value.problems}
    assert ("amount", 1) in found and ("quantity", 1) in found
    assert "order ids starting with 'C'" in str(caught.value) and "returns: {sign: negative}" in str(
        caught.value
    )


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ("  returns: {prefix: C}\n", "returns"),
        ("  returns: {flag_column: channel}\n", "flag_column: returned"),
        ("  duplicates: maybe\n", "drop, keep, fail"),
        ("  amount: quantity + unit_price\n", "quantity * unit_price"),
        ("  columns: {amount_paid: Total}\n", "amount_paid"),
        ("  stock: StockCode\n", "unknown keys ['stock']"),
    ],
)
def test_a_wrong_mapping_entry_is_a_config_error_naming_it(tmp_path: Path, entry: str, named: str) -> None:
    _write(tmp_path, "customer_id,timestamp,amount\nC1,2024-01-01,5\n")
    (tmp_path / "columns.yaml").write_text("transactions:\n" + entry)
    with pytest.raises(ConfigError) as caught:
        load_dataset(tmp_path, now=NOW)
    assert "columns.yaml" in str(caught.value) and named in str(caught.value)


def test_returns_and_amount_are_transaction_keys_only(tmp_path: Path) -> None:
    _write(tmp_path, "customer_id,timestamp,amount\nC1,2024-01-01,5\n")
    (tmp_path / "columns.yaml").write_text("interactions:\n  returns: {sign: negative}\n")
    with pytest.raises(ConfigError, match="interactions"):
        load_dataset(tmp_path, now=NOW)


def test_unreadable_yaml_is_a_config_error(tmp_path: Path) -> None:
    _write(tmp_path, "customer_id,timestamp,amount\nC1,2024-01-01,5\n")
    (tmp_path / "columns.yaml").write_text("transactions: {file: [\n")
    with pytest.raises(ConfigError, match="cannot be read as YAML"):
        load_dataset(tmp_path, now=NOW)


# --------------------------------------------------------------------------------------------- features


def test_spend_is_net_of_returns_at_the_returns_own_time(shop: tuple[Dataset, dict[str, float]]) -> None:
    dataset, _ = shop
    before = compute_features(dataset, pd.Timestamp("2024-02-01")).set_index("customer_id").loc["99999"]
    after = compute_features(dataset, pd.Timestamp("2024-04-01")).set_index("customer_id").loc["99999"]

    assert before["spend_total"] == 110.0 and before["spend_30d"] == 100.0 and before["return_share"] == 0.0
    assert after["spend_total"] == 80.0 and after["spend_30d"] == 0.0 and after["spend_90d"] == 70.0
    assert after["return_share"] == 0.5 and after["service_failures_per_order_365d"] == 0.5
    assert after["orders_total"] == before["orders_total"] == 2  # a credit note is no order
    assert after["recency_days"] == pytest.approx(before["recency_days"] + 60)  # nor a purchase
    assert after["avg_order_value"] == 40.0


def test_a_return_makes_nobody_active_and_is_no_purchase_in_the_label(
    shop: tuple[Dataset, dict[str, float]],
) -> None:
    dataset, _ = shop
    features = compute_features(dataset, pd.Timestamp("2024-04-01"))
    assert "88888" not in set(features["customer_id"])  # only a return within the last year

    labels = compute_labels(dataset, pd.Timestamp("2024-02-01"), 60).set_index("customer_id").loc["99999"]
    assert labels["churned"] and labels["future_orders"] == 0
    assert labels["future_spend"] == 0.0  # net spend in the window is -30: a refund, floored at nothing


def test_future_spend_is_net_of_returns_in_the_window(shop: tuple[Dataset, dict[str, float]]) -> None:
    dataset, _ = shop
    labels = compute_labels(dataset, pd.Timestamp("2024-01-01"), 90).set_index("customer_id").loc["99999"]
    assert labels["future_spend"] == 70.0 and labels["future_orders"] == 1 and not labels["churned"]


def test_the_shop_export_offers_the_return_features(shop: tuple[Dataset, dict[str, float]]) -> None:
    from features.snapshots import model_features

    names = {f.name for f in model_features(shop[0])}
    assert {"return_share", "spend_total", "avg_order_value"} <= names


def _write(folder: Path, transactions: str) -> Path:
    (folder / "transactions.csv").write_text(transactions)
    return folder
