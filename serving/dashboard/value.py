"""What the dashboard says about customer value: one wording for every page, read from the stored figures.

The serving store keeps ``clv`` (the residual lifetime value), ``clv_detail`` (the API's whole ``clv`` object),
``value_1y``, ``p_alive``, ``value_basis`` and ``expected_revenue_90d`` (:mod:`serving.encoding`). Wherever
a value is shown the page says what it is: lifetime value, discounted to the end of the relationship, on a
contribution or a revenue basis, at the discount rate used. Stores written before lifetime value existed
hold none of it; their pages say "not available" instead of calling the old 90-day forecast a lifetime value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from serving.scoring import GRACEFUL_EXIT
from serving.store import CustomerQuery, ScoreStore

VALUE_NAME = "Lifetime value"
VALUE_MEANING = "discounted, to the end of the relationship"
NOT_AVAILABLE = "not available"
BASIS_WORDS = {
    "contribution": "contribution basis: margin less the cost to serve, from the economics config",
    "revenue": "revenue basis: no economics config",
}
_LOWEST = -1e300  # a "minimum value" below every stored value: selects the rows that have one


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


@dataclass(frozen=True)
class ValueTerms:
    """What a set of values measures: the basis and the yearly discount rate (None: not known)."""

    basis: str | None = None
    annual_discount_rate: float | None = None

    @classmethod
    def of(cls, detail: Mapping[str, Any] | None, basis: str | None = None) -> ValueTerms:
        """The terms of one stored score: its ``clv_detail`` object, else its ``value_basis`` column."""
        detail = detail if isinstance(detail, Mapping) else {}
        known = detail.get("basis") or basis
        return cls(str(known) if known else None, _number(detail.get("annual_discount_rate")))

    @property
    def available(self) -> bool:
        return self.basis is not None

    @property
    def basis_text(self) -> str:
        if self.basis is None:
            return f"basis {NOT_AVAILABLE}"
        return BASIS_WORDS.get(self.basis, f"{self.basis} basis")

    @property
    def rate_text(self) -> str:
        rate = self.annual_discount_rate
        return f"discount rate {NOT_AVAILABLE}" if rate is None else f"annual discount rate {rate * 100:g}%"

    @property
    def caption(self) -> str:
        """'discounted, to the end of the relationship · revenue basis: no economics config · ...'."""
        return f"{VALUE_MEANING} · {self.basis_text} · {self.rate_text}"


def store_value_terms(store: ScoreStore) -> ValueTerms:
    """The terms of the values in the store, read from one valued score (all scores of a run share them);
    empty terms when no score has a value (a store written before lifetime value existed)."""
    rows, _ = store.query(CustomerQuery(min_clv=_LOWEST, sort="clv", limit=1))
    if not rows:
        return ValueTerms()
    return ValueTerms.of(rows[0].get("clv_detail"), rows[0].get("value_basis"))


@dataclass(frozen=True)
class CustomerValue:
    """One customer's value figures as the customer page shows them (None: not available)."""

    terms: ValueTerms
    residual: float | None
    value_1y: float | None
    historic: float | None
    p_alive: float | None
    orders_90d: float | None
    orders_1y: float | None
    order_value: float | None
    p05: float | None
    p95: float | None
    expected_revenue: float | None
    graceful_exit: bool

    @property
    def available(self) -> bool:
        return self.residual is not None

    @property
    def beyond_1y(self) -> float | None:
        """The part of the lifetime value that lies beyond the next 365 days."""
        if self.residual is None or self.value_1y is None:
            return None
        return self.residual - self.value_1y

    @property
    def beyond_1y_share(self) -> float | None:
        """That part as a share of the lifetime value (only when the value is positive)."""
        beyond = self.beyond_1y
        if beyond is None or self.residual is None or self.residual <= 0:
            return None
        return beyond / self.residual

    @property
    def graceful_exit_reason(self) -> str:
        """Why a graceful-exit customer gets no paid action, in words."""
        worth = "nothing" if self.residual is None else f"{self.residual:,.2f}"
        what = "contribution" if self.terms.basis == "contribution" else "value"
        return (
            f"Graceful exit: over the rest of the relationship this customer is expected to bring {worth} "
            f"in {what} (discounted), which does not cover what serving them costs. No paid action is "
            "recommended: no discount, no call; keep serving them well and let the relationship run its course."
        )


def customer_value(record: Mapping[str, Any]) -> CustomerValue:
    """The value figures of one stored score (any of them may be missing in a store written earlier)."""
    detail = record.get("clv_detail")
    detail = detail if isinstance(detail, Mapping) else {}
    orders = detail.get("expected_orders")
    orders = orders if isinstance(orders, Mapping) else {}
    interval = detail.get("interval")
    interval = interval if isinstance(interval, Mapping) else {}
    residual = _number(detail.get("residual_value"))
    if residual is None:
        residual = _number(record.get("clv"))
    return CustomerValue(
        terms=ValueTerms.of(detail, record.get("value_basis")),
        residual=residual,
        value_1y=_number(detail.get("value_1y", record.get("value_1y"))),
        historic=_number(detail.get("historic_value")),
        p_alive=_number(detail.get("p_alive", record.get("p_alive"))),
        orders_90d=_number(orders.get("days_90")),
        orders_1y=_number(orders.get("days_365")),
        order_value=_number(detail.get("expected_order_value")),
        p05=_number(interval.get("p05")),
        p95=_number(interval.get("p95")),
        expected_revenue=_number(record.get("expected_revenue_90d")),
        graceful_exit=record.get("segment") == GRACEFUL_EXIT,
    )
