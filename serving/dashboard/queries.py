"""The customer list's query string: parsed leniently (invalid values are dropped with a note, never a 500)
into a :class:`~serving.store.CustomerQuery`, and written back for links (sorting, paging, CSV export)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from urllib.parse import urlencode

from serving.store import SORTABLE, CustomerQuery

PAGE_SIZE = 50
MAX_PAGE = 1_000_000
MAX_SEARCH = 100
RISK_TIERS = ("high", "medium", "low")
DEFAULT_SORT = "value_at_risk"


@dataclass(frozen=True)
class Choices:
    """The values a filter may take (anything else is ignored)."""

    segments: tuple[str, ...]
    actions: tuple[str, ...]
    risk_tiers: tuple[str, ...] = RISK_TIERS


@dataclass(frozen=True)
class Filters:
    segment: str | None = None
    risk_tier: str | None = None
    action: str | None = None
    min_clv: float | None = None
    search: str | None = None
    sort: str = DEFAULT_SORT
    descending: bool = True
    page: int = 1

    @property
    def active(self) -> bool:
        return any(
            v is not None for v in (self.segment, self.risk_tier, self.action, self.min_clv, self.search)
        )

    def query(self, limit: int | None = PAGE_SIZE) -> CustomerQuery:
        """The store query for this page (``limit=None``: every matching row, for export)."""
        return CustomerQuery(
            segment=self.segment,
            risk_tier=self.risk_tier,
            action=self.action,
            min_clv=self.min_clv,
            search=self.search,
            sort=self.sort,
            descending=self.descending,
            limit=limit or 0,
            offset=(self.page - 1) * (limit or 0),
        )

    def params(self, *, with_page: bool = True, **changes: object) -> str:
        """The query string of these filters (with ``changes``), leaving out defaults."""
        f = replace(self, **changes)  # type: ignore[arg-type]
        pairs: list[tuple[str, str]] = []
        for name in ("segment", "risk_tier", "action", "search"):
            value = getattr(f, name)
            if value is not None:
                pairs.append((name, value))
        if f.min_clv is not None:
            pairs.append(("min_clv", f"{f.min_clv:g}"))
        if f.sort != DEFAULT_SORT or not f.descending:
            pairs += [("sort", f.sort), ("order", "desc" if f.descending else "asc")]
        if with_page and f.page > 1:
            pairs.append(("page", str(f.page)))
        return urlencode(pairs)

    def sort_link(self, column: str) -> str:
        """The query string that sorts by ``column``: descending first, the other way on a second click."""
        descending = not self.descending if column == self.sort else column != "customer_id"
        return self.params(sort=column, descending=descending, page=1)


def _choice(
    params: Mapping[str, str], name: str, allowed: Iterable[str], label: str, notes: list[str]
) -> str | None:
    value = (params.get(name) or "").strip()
    if not value:
        return None
    if value in allowed:
        return value
    notes.append(f"Ignored an unknown {label}.")
    return None


def parse_filters(params: Mapping[str, str], choices: Choices) -> tuple[Filters, list[str]]:
    """Filters from a query string, and a note for every value that was ignored because it was invalid."""
    notes: list[str] = []
    segment = _choice(params, "segment", choices.segments, "segment", notes)
    risk_tier = _choice(params, "risk_tier", choices.risk_tiers, "risk tier", notes)
    action = _choice(params, "action", choices.actions, "action", notes)
    min_clv = None
    raw_clv = (params.get("min_clv") or "").strip()
    if raw_clv:
        try:
            min_clv = float(raw_clv.replace(",", ""))
            if not math.isfinite(min_clv):
                raise ValueError(raw_clv)
        except ValueError:
            min_clv = None
            notes.append("Ignored the minimum lifetime value: it is not a number.")
    search = (params.get("search") or "").strip() or None
    if search is not None and len(search) > MAX_SEARCH:
        search = search[:MAX_SEARCH]
        notes.append(f"The search was cut to its first {MAX_SEARCH} characters.")
    sort = (params.get("sort") or DEFAULT_SORT).strip()
    if sort not in SORTABLE:
        notes.append("Ignored an unknown sort column.")
        sort = DEFAULT_SORT
    order = (params.get("order") or "").strip().lower()
    if order not in ("", "asc", "desc"):
        notes.append("Ignored an unknown sort order.")
        order = ""
    descending = order != "asc" if order else sort != "customer_id"
    page = 1
    raw_page = (params.get("page") or "").strip()
    if raw_page:
        if raw_page.isdigit() and 1 <= int(raw_page) <= MAX_PAGE:
            page = int(raw_page)
        else:
            notes.append("Ignored an invalid page number.")
    return Filters(segment, risk_tier, action, min_clv, search, sort, descending, page), notes
