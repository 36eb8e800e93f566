"""The input data contract: which tables and columns churnguard reads, and how they are checked.

A data folder holds ``transactions`` (required), ``customers``, ``interactions`` and ``cancellations``
(optional) as ``<name>.csv`` or ``<name>.parquet``, and optionally ``referrals`` (who brought whom: it
feeds no feature, only ``referral_value``, see :mod:`features.referrals`). A column-mapping file
(``columns.yaml`` in the folder, or one passed explicitly) lets data with other file names, column names,
date formats and encodings be used unchanged, and tells the loader how a real export records returns, line
totals and repeated lines.
Loading either returns a fully valid :class:`Dataset` or raises one
:class:`~features.errors.DataValidationError` listing every problem found; a mapping file that cannot be
understood raises :class:`~features.errors.ConfigError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Final

import yaml

from features.errors import ConfigError


class Kind(StrEnum):
    ID = "id"
    TIMESTAMP = "timestamp"
    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    TEXT = "text"


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: Kind
    required: bool
    description: str
    minimum: float | None = None
    maximum: float | None = None
    default: object = None  # value filled in when an optional column is absent
    stored: bool = True  # False: read only to derive another column, never kept in the Dataset


@dataclass(frozen=True)
class TableSpec:
    name: str
    required: bool
    description: str
    columns: tuple[ColumnSpec, ...]
    extra_columns_are_attributes: bool = False  # customers: any other column is a customer attribute

    def column(self, name: str) -> ColumnSpec:
        return next(c for c in self.columns if c.name == name)

    @property
    def required_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.required]


def _c(name: str, kind: Kind, required: bool, description: str, **kw: object) -> ColumnSpec:
    return ColumnSpec(name, kind, required, description, **kw)  # type: ignore[arg-type]


TRANSACTIONS = TableSpec(
    "transactions",
    True,
    "One row per purchase or return (order, order line, or credit line).",
    (
        _c("customer_id", Kind.ID, True, "Who bought; rows without one (guest checkouts) are skipped."),
        _c("timestamp", Kind.TIMESTAMP, True, "When the purchase or return was made."),
        _c(
            "amount",
            Kind.FLOAT,
            True,
            "Amount paid, after discounts; negative on a return or credit line. May be derived in "
            "columns.yaml as quantity * unit_price.",
        ),
        _c("order_id", Kind.ID, False, "Order identifier; rows sharing one count as one order."),
        _c("quantity", Kind.INT, False, "Items bought; negative only on a return line.", default=1),
        _c(
            "unit_price",
            Kind.FLOAT,
            False,
            "Price of one item; only read to derive amount as quantity * unit_price.",
            minimum=0.0,
            stored=False,
        ),
        _c(
            "discount",
            Kind.FLOAT,
            False,
            "Discount given, in the currency of amount.",
            minimum=0.0,
            default=0.0,
        ),
        _c("channel", Kind.TEXT, False, "Sales channel (web, app, store, phone...).", default="unknown"),
        _c(
            "returned",
            Kind.BOOL,
            False,
            "Whether the purchase was returned (or, with returns: {flag_column: returned}, whether the "
            "row is a return line).",
            default=False,
        ),
        _c(
            "delivery_delay_days",
            Kind.FLOAT,
            False,
            "Days delivered late; 0 = on time.",
            minimum=0.0,
            default=0.0,
        ),
    ),
)
CUSTOMERS = TableSpec(
    "customers",
    False,
    "One row per customer; any further column is used as a customer attribute.",
    (
        _c("customer_id", Kind.ID, True, "Customer identifier."),
        _c("signup_date", Kind.TIMESTAMP, False, "When the customer joined."),
    ),
    extra_columns_are_attributes=True,
)
INTERACTIONS = TableSpec(
    "interactions",
    False,
    "Service interactions: complaints, support contacts, inquiries, surveys.",
    (
        _c("customer_id", Kind.ID, True, "Who was in contact."),
        _c("timestamp", Kind.TIMESTAMP, True, "When the contact started."),
        _c(
            "type",
            Kind.TEXT,
            True,
            "complaint, support, inquiry or survey; any other type counts as a contact only.",
        ),
        _c("channel", Kind.TEXT, False, "phone, email, chat, store or web.", default="unknown"),
        _c("resolved", Kind.BOOL, False, "Whether the issue was resolved."),
        _c("resolution_hours", Kind.FLOAT, False, "Hours to resolution.", minimum=0.0),
        _c("satisfaction", Kind.FLOAT, False, "Satisfaction score, 1 to 5.", minimum=1.0, maximum=5.0),
        _c("nps", Kind.FLOAT, False, "Net promoter answer, 0 to 10.", minimum=0.0, maximum=10.0),
    ),
)
CANCELLATIONS = TableSpec(
    "cancellations",
    False,
    "Explicit contract cancellations (for subscription or contract businesses).",
    (
        _c("customer_id", Kind.ID, True, "Who cancelled."),
        _c("timestamp", Kind.TIMESTAMP, True, "When the cancellation took effect."),
    ),
)

TABLES: Final[tuple[TableSpec, ...]] = (TRANSACTIONS, CUSTOMERS, INTERACTIONS, CANCELLATIONS)
REFERRALS = TableSpec(
    "referrals",
    False,
    "Who referred whom, one row per referral: adds referral_value to the scores (the discounted value of "
    "the customers a customer brought); without this table referral_value is null.",
    (
        _c("referrer_id", Kind.ID, True, "The customer who referred (an id of customers or transactions)."),
        _c("referred_id", Kind.ID, True, "The customer brought; only their earliest referral counts."),
        _c(
            "timestamp",
            Kind.TIMESTAMP,
            True,
            "When the referral was made; the referred customer's value counts from that day on.",
        ),
    ),
)
CAMPAIGNS = TableSpec(
    "campaigns",
    False,
    "Retention campaign assignments, one row per customer and campaign arm: who was assigned which action "
    "when, and whether to the treatment or the control group (read by `churnguard campaign report`).",
    (
        _c("customer_id", Kind.ID, True, "Who was assigned."),
        _c("campaign", Kind.ID, True, "Campaign name."),
        _c("action", Kind.ID, True, "The action of the arm (no_action is an ordinary action)."),
        _c(
            "assigned_at",
            Kind.TIMESTAMP,
            True,
            "When the assignment took effect; outcomes are counted after it.",
        ),
        _c("group", Kind.TEXT, True, "treatment (given the action) or control (held out of it)."),
        _c(
            "assignment_probability",
            Kind.FLOAT,
            True,
            "Probability of landing in this group (e.g. 0.9 treatment, 0.1 control).",
            minimum=0.0,
            maximum=1.0,
        ),
        _c("delivered", Kind.BOOL, False, "Whether the action reached the customer (treatment rows)."),
        _c("cost", Kind.FLOAT, False, "What the action cost for this customer.", minimum=0.0),
    ),
)
# Tables a column mapping may name: the feature tables, referrals (loaded with them, valued by
# features.referrals) and campaigns (loaded by features.campaigns).
MAPPABLE_TABLES: Final[tuple[TableSpec, ...]] = (*TABLES, REFERRALS, CAMPAIGNS)
INTERACTION_TYPES: Final = ("complaint", "support", "inquiry", "survey")
INTERACTION_CHANNELS: Final = ("phone", "email", "chat", "store", "web")


MAPPING_FILE: Final = "columns.yaml"
_BOOL_COLUMNS: Final = tuple(c.name for c in TRANSACTIONS.columns if c.kind is Kind.BOOL)
_DERIVED_AMOUNT = re.compile(r"^\s*(quantity\s*\*\s*unit_price|unit_price\s*\*\s*quantity)\s*$")


class DuplicatePolicy(StrEnum):
    """What to do with exact duplicate rows of a file (the raw rows, every column of the file compared)."""

    DROP = "drop"  # keep the first copy, count the rest in the load report (the default)
    KEEP = "keep"  # keep every copy: the export is known never to repeat a line
    FAIL = "fail"  # refuse the data, as before real exports were taken as they come

    @classmethod
    def parse(cls, value: object, where: str) -> DuplicatePolicy:
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            choices = ", ".join(p.value for p in cls)
            raise ConfigError(f"{where}: duplicates is {value!r}; use one of: {choices}") from None


class ReturnsBy(StrEnum):
    SIGN = "sign"  # a negative amount is a return (the default)
    ORDER_ID_PREFIX = "order_id_prefix"  # an order id starting with the prefix is a credit note
    FLAG_COLUMN = "flag_column"  # a true/false contract column says which rows are returns


@dataclass(frozen=True)
class ReturnsRule:
    """How the transactions tell a return or credit line from a purchase.

    By sign, every negative amount is a return. By an order-id prefix or a flag column, exactly the marked
    rows are returns (their amount is taken as a credit whatever its sign), and a negative amount on any
    other row is an error: it would otherwise be netted as a return nobody declared.
    """

    by: ReturnsBy = ReturnsBy.SIGN
    value: str = "negative"  # the prefix for ORDER_ID_PREFIX, the column for FLAG_COLUMN

    def describe(self) -> str:
        if self.by is ReturnsBy.ORDER_ID_PREFIX:
            return f"order ids starting with {self.value!r}"
        if self.by is ReturnsBy.FLAG_COLUMN:
            return f"rows whose {self.value!r} is true"
        return "negative amounts"


@dataclass(frozen=True)
class TableMapping:
    """How one table of the user's data maps onto the contract (one entry of ``columns.yaml``)."""

    file: str | None = None
    columns: dict[str, str] = field(default_factory=dict)  # contract name -> name in the file
    date_format: str | None = None
    encoding: str = "utf-8"
    derive_amount: bool = False  # transactions: amount = quantity * unit_price
    returns: ReturnsRule = field(default_factory=ReturnsRule)  # transactions only
    duplicates: DuplicatePolicy | None = None  # None: the loader's default (drop)


_KEYS: Final = ("file", "columns", "date_format", "encoding", "duplicates")
_TRANSACTION_KEYS: Final = ("amount", "returns")


def read_mapping(path: Path) -> dict[str, TableMapping]:
    """Parse a column-mapping YAML file; unknown tables, keys or values are errors, never ignored.

    Raises one :class:`ConfigError` naming the file and every wrong entry with the values allowed.
    """
    where = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"{where}: cannot be read as YAML ({exc.__class__.__name__}); write it as UTF-8 YAML, see "
            "'The data contract' in the README"
        ) from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: is not a mapping of table names; see 'The data contract' in the README")
    known = {t.name for t in MAPPABLE_TABLES}
    problems: list[str] = []
    mapping: dict[str, TableMapping] = {}
    for table, body in raw.items():
        if table not in known:
            problems.append(f"names unknown table {table!r}: use one of {', '.join(sorted(known))}")
            continue
        try:
            mapping[str(table)] = _table_mapping(str(table), body or {})
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("\n".join(f"{where}: {p}" for p in problems))
    return mapping


def _table_mapping(table: str, body: object) -> TableMapping:
    allowed = _KEYS + (_TRANSACTION_KEYS if table == TRANSACTIONS.name else ())
    if not isinstance(body, dict):
        raise ConfigError(f"table {table!r} must be a mapping of the keys {', '.join(allowed)}")
    extra = sorted(str(k) for k in set(body) - set(allowed))
    if extra:
        raise ConfigError(f"table {table!r} has unknown keys {extra}; allowed keys: {', '.join(allowed)}")
    columns = body.get("columns") or {}
    if not isinstance(columns, dict):
        raise ConfigError(f"table {table!r}: columns must map contract names to the file's column names")
    spec = next(t for t in MAPPABLE_TABLES if t.name == table)
    names = {c.name for c in spec.columns}
    unknown = sorted(str(k) for k in columns if str(k) not in names and not spec.extra_columns_are_attributes)
    if unknown:
        raise ConfigError(
            f"table {table!r}: columns names {unknown}, not contract columns; use: {', '.join(sorted(names))}"
        )
    derive = False
    if "amount" in body:
        if not _DERIVED_AMOUNT.match(str(body["amount"])):
            raise ConfigError(
                f"table {table!r}: amount is {body['amount']!r}; the only derivation is 'quantity * unit_price'"
            )
        derive = True
    duplicates = (
        DuplicatePolicy.parse(body["duplicates"], f"table {table!r}") if "duplicates" in body else None
    )
    return TableMapping(
        file=None if body.get("file") is None else str(body["file"]),
        columns={str(k): str(v) for k, v in columns.items()},
        date_format=None if body.get("date_format") is None else str(body["date_format"]),
        encoding=str(body.get("encoding", "utf-8")),
        derive_amount=derive,
        returns=_returns_rule(table, body.get("returns")),
        duplicates=duplicates,
    )


def _returns_rule(table: str, value: object) -> ReturnsRule:
    if value is None:
        return ReturnsRule()
    wrong = ConfigError(
        f"table {table!r}: returns is {value!r}; use one of {{order_id_prefix: <text>}}, "
        f"{{flag_column: {' | '.join(_BOOL_COLUMNS)}}} or {{sign: negative}}"
    )
    if not isinstance(value, dict) or len(value) != 1:
        raise wrong
    ((key, setting),) = value.items()
    if key == ReturnsBy.SIGN and str(setting).strip().lower() == "negative":
        return ReturnsRule()
    if key == ReturnsBy.ORDER_ID_PREFIX and isinstance(setting, str | int) and str(setting).strip():
        return ReturnsRule(ReturnsBy.ORDER_ID_PREFIX, str(setting).strip())
    if key == ReturnsBy.FLAG_COLUMN and setting in _BOOL_COLUMNS:
        return ReturnsRule(ReturnsBy.FLAG_COLUMN, str(setting))
    raise wrong


def describe_contract() -> Iterable[str]:
    """Lines describing the contract (used by `churnguard contract` and kept in step with the README)."""
    for spec in MAPPABLE_TABLES:
        state = "required" if spec.required else "optional"
        yield f"{spec.name} ({state}): {spec.description}"
        for column in spec.columns:
            yield (
                f"  {column.name:<20} {column.kind.value:<9} {'required' if column.required else 'optional':<8} "
                f"{column.description}"
            )
