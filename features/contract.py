"""The input data contract: which tables and columns churnguard reads, and how they are checked.

A data folder holds ``transactions`` (required), ``customers``, ``interactions`` and ``cancellations``
(optional) as ``<name>.csv`` or ``<name>.parquet``. A column-mapping file (``columns.yaml`` in the folder,
or one passed explicitly) lets data with other file names, column names, date formats and encodings be
used unchanged. Loading either returns a fully valid :class:`Dataset` or raises one
:class:`~features.errors.DataValidationError` listing every problem found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final


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
    "One row per purchase (order or order line).",
    (
        _c("customer_id", Kind.ID, True, "Who bought."),
        _c("timestamp", Kind.TIMESTAMP, True, "When the purchase was made."),
        _c("amount", Kind.FLOAT, True, "Amount paid, after discounts; 0 or more.", minimum=0.0),
        _c("order_id", Kind.ID, False, "Order identifier; rows sharing one count as one order."),
        _c("quantity", Kind.INT, False, "Items bought.", minimum=0, default=1),
        _c(
            "discount",
            Kind.FLOAT,
            False,
            "Discount given, in the currency of amount.",
            minimum=0.0,
            default=0.0,
        ),
        _c("channel", Kind.TEXT, False, "Sales channel (web, app, store, phone...).", default="unknown"),
        _c("returned", Kind.BOOL, False, "Whether the purchase was returned.", default=False),
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
INTERACTION_TYPES: Final = ("complaint", "support", "inquiry", "survey")
INTERACTION_CHANNELS: Final = ("phone", "email", "chat", "store", "web")


@dataclass(frozen=True)
class TableMapping:
    """How one table of the user's data maps onto the contract."""

    file: str | None = None
    columns: dict[str, str] = field(default_factory=dict)  # contract name -> name in the file
    date_format: str | None = None
    encoding: str = "utf-8"
