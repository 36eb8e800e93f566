"""Real exports as they come: guest rows, repeated lines, returns, order ids at several timestamps, and the
load report that accounts for every row read.

Each step is vectorised (pandas on Arrow strings, or the DuckDB hash search for repeated rows) and costs
nothing on clean data beyond one pass over a column: the 20M-row load stays in budget.

The choices, and why:

- **Guest rows** (transactions, interactions or cancellations without a customer id) cannot belong to any
  customer, so they are skipped and counted. A customers row without an id is still an error.
- **Repeated lines** are found on the *raw* rows of the file, every column compared, including columns the
  mapping does not use (a product code such as ``StockCode``, a line number). Two lines of one invoice that
  differ only there are different products and both stay; rows equal in every column of the file are one
  line exported twice, and the duplicate policy decides (drop by default, keep, or fail). An export with no
  column that tells identical lines of one order apart cannot be told from one that repeats lines: such
  lines are dropped by default, and ``duplicates: keep`` is the answer when the export never repeats.
- **Returns** (credit notes) are rows with a negative amount, or rows marked by an order-id prefix or a
  flag column (see :class:`~features.contract.ReturnsRule`). In the loaded data a return line is exactly a
  transaction with a negative amount: marked rows get their amount as a credit, whatever its sign, and a
  marked row with amount 0 credits nothing and is dropped (counted).
- **An order id at several timestamps** becomes one order per timestamp (its lines at each timestamp get
  the id ``<id>@<timestamp>``). Moving later lines to the earliest timestamp would let a feature see, at
  the first timestamp, money that was only recorded later; and a reused id (a contract or session number
  exported as ``order_id``) would fold months of purchases into one order. Splitting never moves an event
  in time; at worst one invoice keyed across a minute boundary counts as two orders, and the report says
  how many ids were split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.contract import DuplicatePolicy, ReturnsBy, ReturnsRule
from features.errors import DataProblem
from features.validation import duplicated_rows

_INTEGRAL = r"[0-9]+(?:\.0*)?"


@dataclass
class TableReport:
    """What loading did to one table's rows: read, skipped, dropped, netted, grouped.

    ``rows_kept == rows_read - sum(dropped.values())`` always holds.
    """

    table: str
    file: str
    rows_read: int = 0
    rows_kept: int = 0
    guest_rows: int = 0  # skipped: no customer id
    duplicate_rows: int = 0  # exact repeats of an earlier raw row, found whatever the policy
    duplicates: DuplicatePolicy = DuplicatePolicy.DROP
    empty_return_lines: int = 0  # return lines with amount 0, dropped: they credit nothing
    return_lines: int = 0  # kept, netted into spend at their own timestamps
    returns: int = 0  # credit notes those lines form (one per order id, or one per line without them)
    refunded: float = 0.0  # the total credited, a negative amount
    purchase_lines: int = 0
    orders: int = 0  # purchase orders the purchase lines form
    split_order_ids: int = 0  # (customer, order id) pairs seen at several timestamps
    orders_added_by_split: int = 0
    ids_normalised: int = 0  # ids written as integral floats ("13085.0") read as "13085"
    amount_derived: bool = False
    skipped: dict[str, int] = field(default_factory=dict)  # other rows left out, by reason (referrals)
    warnings: list[str] = field(default_factory=list)

    @property
    def duplicates_dropped(self) -> int:
        return self.duplicate_rows if self.duplicates is DuplicatePolicy.DROP else 0

    @property
    def dropped(self) -> dict[str, int]:
        """Rows read but not kept, by reason (reasons with no rows left out)."""
        reasons = {
            "guest rows (no customer id)": self.guest_rows,
            "exact duplicate rows": self.duplicates_dropped,
            "return lines with amount 0": self.empty_return_lines,
            **self.skipped,
        }
        return {reason: n for reason, n in reasons.items() if n}

    def lines(self) -> list[str]:
        out = [f"{self.table} ({self.file}): {self.rows_read:,} rows read, {self.rows_kept:,} kept"]
        out += [f"  dropped {n:,} {reason}" for reason, n in self.dropped.items()]
        if self.duplicate_rows and self.duplicates is DuplicatePolicy.KEEP:
            out.append(f"  kept {self.duplicate_rows:,} exact duplicate rows (duplicates: keep)")
        if self.amount_derived:
            out.append("  amount derived as quantity * unit_price")
        if self.ids_normalised:
            out.append(
                f"  {self.ids_normalised:,} ids written as whole-number floats ('13085.0') read as '13085'"
            )
        if self.return_lines:
            out.append(
                f"  netted {self.return_lines:,} return lines ({self.returns:,} returns, "
                f"{self.refunded:,.2f}) into spend at their own dates"
            )
        if self.purchase_lines != self.orders:
            out.append(
                f"  grouped {self.purchase_lines:,} purchase lines into {self.orders:,} orders by order id"
            )
        if self.split_order_ids:
            out.append(
                f"  {self.split_order_ids:,} order ids appear at several timestamps: one order per "
                f"timestamp (+{self.orders_added_by_split:,} orders)"
            )
        return out


@dataclass
class LoadReport:
    """The accounting of one load, table by table (tables not supplied are absent)."""

    tables: dict[str, TableReport] = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        return [w for report in self.tables.values() for w in report.warnings]

    def lines(self) -> list[str]:
        out = [line for report in self.tables.values() for line in report.lines()]
        return out + [f"warning: {w}" for w in self.warnings]


def integral_ids(values: pd.Series) -> tuple[pd.Series, int]:
    """Ids written as whole-number floats ("13085.0", a spreadsheet's doing) as the integers they are.

    Only when every id of the column looks like a whole number: in a text column "12.0" and "12" may be
    different customers. Applied to each table's column alike, so "13085.0" in the transactions meets
    "13085" in the customers. Returns the ids and how many changed.
    """
    head = values.iloc[:1000]
    if not len(values) or not head.str.fullmatch(_INTEGRAL).fillna(False).all():
        return values, 0  # the first thousand ids settle most columns without a full pass
    dotted = values.str.contains(".", regex=False).fillna(False)
    n = int(dotted.sum())
    if not n or not values.str.fullmatch(_INTEGRAL).fillna(False).all():
        return values, 0
    return values.str.replace(r"\.0*$", "", regex=True).astype(str), n


def drop_repeated_lines(
    parsed: pd.DataFrame,
    raw: pd.DataFrame,
    where: str,
    report: TableReport,
    problems: list[DataProblem],
) -> pd.DataFrame:
    """Apply the duplicate policy (``report.duplicates``) to rows equal in every column of the raw file.

    ``raw`` holds the file's rows (every column, mapped or not) aligned with ``parsed``.
    """
    try:
        repeated = duplicated_rows(raw)
    except TypeError:  # a Parquet column of lists or maps cannot be hashed: compare the contract columns
        repeated = duplicated_rows(parsed)
    report.duplicate_rows = n = int(repeated.sum())
    if not n:
        return parsed
    has_order_ids = "order_id" in parsed.columns
    examples = parsed.loc[repeated.to_numpy(), parsed.columns[:3]].head(3).to_dict("records")
    if report.duplicates is DuplicatePolicy.FAIL:
        problems.append(
            DataProblem(
                where,
                None,
                "has exact duplicate rows (every column of the file equal)",
                "remove the repeated rows, or load with duplicates: drop (the default keeps the first copy)"
                + (
                    "; identical lines of one order need a column that tells them apart, such as a product "
                    "code or line number"
                    if has_order_ids
                    else ""
                ),
                n,
                examples,
            )
        )
        return parsed
    if report.duplicates is DuplicatePolicy.KEEP:
        report.warnings.append(f"{report.file}: kept {n:,} exact duplicate rows (duplicates: keep)")
        return parsed
    report.warnings.append(
        f"{report.file}: dropped {n:,} exact duplicate rows (every column equal to an earlier row); if the export "
        "really holds identical lines, add a column that tells them apart or set duplicates: keep"
    )
    return parsed[~repeated.to_numpy()]


def mark_returns(
    frame: pd.DataFrame, rule: ReturnsRule, where: str, report: TableReport, problems: list[DataProblem]
) -> pd.DataFrame:
    """Make every return line a negative amount and every other amount non-negative, or report why not.

    Afterwards a transaction is a return exactly when its amount is below 0 (what the features rely on).
    """
    amount = frame["amount"].to_numpy(dtype="float64")
    negative = amount < 0
    if rule.by is ReturnsBy.SIGN:
        is_return = negative
    else:
        column = "order_id" if rule.by is ReturnsBy.ORDER_ID_PREFIX else rule.value
        if column not in frame.columns:
            problems.append(
                DataProblem(
                    where,
                    column,
                    f"is needed to find returns ({rule.describe()}) but is not in the file",
                    f"map '{column}' in columns.yaml, or use returns: {{sign: negative}}",
                )
            )
            return frame
        if rule.by is ReturnsBy.ORDER_ID_PREFIX:
            is_return = frame["order_id"].str.startswith(rule.value).fillna(False).to_numpy(dtype=bool)
        else:
            is_return = frame[column].fillna(False).to_numpy(dtype=bool)
        undeclared = negative & ~is_return
        if undeclared.any():
            problems.append(
                DataProblem(
                    where,
                    "amount",
                    f"has negative amounts on rows that are not returns (returns are {rule.describe()})",
                    "mark those rows as returns, correct the amounts, or count every negative amount as a "
                    "return with returns: {sign: negative} in columns.yaml",
                    int(undeclared.sum()),
                    frame.loc[undeclared, "amount"].head(5).tolist(),
                )
            )
        amount = np.where(is_return, -np.abs(amount), amount)
    if "quantity" in frame.columns:
        quantity = frame["quantity"].to_numpy(dtype="float64")
        bought_back = (quantity < 0) & ~is_return
        if bought_back.any():
            problems.append(
                DataProblem(
                    where,
                    "quantity",
                    "has negative quantities on purchase rows",
                    "a negative quantity belongs on a return line: give it a negative amount, or mark it "
                    "as a return in columns.yaml",
                    int(bought_back.sum()),
                    frame.loc[bought_back, "quantity"].head(5).tolist(),
                )
            )
    if not (~is_return).any():
        problems.append(
            DataProblem(
                where,
                "amount",
                f"has no purchases: every row is a return ({rule.describe()})",
                "churnguard learns from purchases: check the sign of amount, or the returns setting in "
                "columns.yaml",
                len(frame),
            )
        )
    if not is_return.any():
        return frame
    empty = is_return & (amount == 0)
    frame = frame.assign(amount=amount)
    if empty.any():
        report.empty_return_lines = int(empty.sum())
        frame = frame[~empty]
    return frame


def split_orders_by_timestamp(frame: pd.DataFrame, report: TableReport) -> pd.DataFrame:
    """One order per (customer, order id, timestamp): see the module's docstring for why."""
    keys = [frame["customer_id"], frame["order_id"]]
    stamps = frame.groupby(keys, sort=False, observed=True)["timestamp"]
    several = (stamps.transform("nunique") > 1).to_numpy()
    if not several.any():
        return frame
    counts = stamps.nunique()
    report.split_order_ids = int((counts > 1).sum())
    report.orders_added_by_split = int((counts[counts > 1] - 1).sum())
    rows = frame[several]
    split_ids = rows["order_id"] + "@" + rows["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%f")
    order_id = frame["order_id"].copy()
    order_id[several] = split_ids
    report.warnings.append(
        f"{report.file}: {report.split_order_ids:,} order ids appear at several timestamps; each "
        "timestamp counts as its own order"
    )
    return frame.assign(order_id=order_id)


def count_lines(frame: pd.DataFrame, report: TableReport, *, rows_are_orders: bool) -> None:
    """Fill in the report's purchase and return counts from a table in its final form (with
    ``rows_are_orders``, its order ids never repeat and need not be counted)."""
    is_return = (frame["amount"] < 0).to_numpy()
    report.rows_kept = len(frame)
    report.return_lines = int(is_return.sum())
    report.purchase_lines = len(frame) - report.return_lines
    report.refunded = float(frame["amount"].to_numpy()[is_return].sum())
    if not rows_are_orders and "order_id" in frame.columns:
        pairs = frame[["customer_id", "order_id"]]
        report.orders = int((~duplicated_rows(pairs[~is_return])).sum())
        report.returns = int((~duplicated_rows(pairs[is_return])).sum())
    else:
        report.orders, report.returns = report.purchase_lines, report.return_lines
