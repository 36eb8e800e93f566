"""The ranked customer list (``/customers``) and its CSV export (``/customers.csv``, same query string).

The list always reads one page from the store (``limit``/``offset``); the export streams the store's
``iter_query`` in chunks. Neither loads every customer into memory.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterator
from dataclasses import replace
from itertools import islice
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from serving.dashboard.context import SessionDep, StateDep
from serving.dashboard.overview_data import action_labels, cached_summary, filter_choices
from serving.dashboard.queries import PAGE_SIZE, parse_filters
from serving.dashboard.render import render
from serving.encoding import spreadsheet_cell as _text  # CSV injection: one rule for every CSV

router = APIRouter(include_in_schema=False)

CSV_COLUMNS = (
    "customer_id",
    "churn_probability",
    "risk_tier",
    "clv",
    "value_at_risk",
    "value_segment",
    "action",
    "expected_net_value",
    "top_reason",
    "value_basis",
    "expected_revenue_90d",
)
SORT_LABELS = {
    "customer_id": "Customer",
    "churn_probability": "Churn probability",
    "clv": "Lifetime value",
    "value_at_risk": "Value at risk",
    "expected_net_value": "Expected net value",
}
SHORT_LABELS = {**SORT_LABELS, "churn_probability": "Churn risk", "expected_net_value": "Net value"}
_CHUNK = 500


def top_reason(row: dict[str, Any]) -> str:
    """The sentence of the strongest reason that raises the customer's risk ('' when none does)."""
    for reason in row.get("reasons") or []:
        if float(reason.get("contribution") or 0) > 0:
            return str(reason.get("sentence") or "")
    return ""


def csv_row(row: dict[str, Any]) -> list[Any]:
    return [
        _text(row["customer_id"]),
        row["churn_probability"],
        _text(row["risk_tier"]),
        row["clv"],
        row["value_at_risk"],
        _text(row["segment"]),
        _text(row["action_name"]),
        row["expected_net_value"],
        _text(top_reason(row)),
        _text(row.get("value_basis") or ""),
        row.get("expected_revenue_90d"),
    ]


@router.get("/customers", response_class=HTMLResponse)
def customer_list(request: Request, session: SessionDep, state: StateDep) -> HTMLResponse:
    """Customers ranked by value at risk, with filters, sorting and pages of 50."""
    meta = state.store.meta()
    summary = cached_summary(request.app.state, state, meta)
    choices = filter_choices(state, summary)
    filters, notes = parse_filters(request.query_params, choices)
    rows, total = state.store.query(filters.query())
    pages = max(1, math.ceil(total / PAGE_SIZE))
    if filters.page > pages:
        filters = replace(filters, page=pages)
        rows, total = state.store.query(filters.query())
    first = (filters.page - 1) * PAGE_SIZE + 1 if rows else 0
    loaded = state.models.current
    return render(
        request,
        "customers.html",
        session=session,
        nav="customers",
        model=loaded.info if loaded else None,
        meta=meta,
        value_terms=summary["value_terms"],
        filters=filters,
        notes=notes,
        choices=choices,
        labels=action_labels(state),
        rows=[{**r, "top_reason": top_reason(r)} for r in rows],
        total=total,
        first=first,
        last=first + len(rows) - 1 if rows else 0,
        pages=pages,
        sort_labels=SORT_LABELS,
        short_labels=SHORT_LABELS,
        export_query=filters.params(with_page=False),
    )


@router.get("/customers.csv")
def customer_export(request: Request, session: SessionDep, state: StateDep) -> StreamingResponse:
    """Exactly the filtered rows, in the list's order, as a CSV campaign list (streamed)."""
    meta = state.store.meta()
    summary = cached_summary(request.app.state, state, meta)
    filters, _ = parse_filters(request.query_params, filter_choices(state, summary))
    query = filters.query(limit=None)

    def chunks() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        rows = state.store.iter_query(query)
        while True:
            batch = list(islice(rows, _CHUNK))
            writer.writerows(csv_row(r) for r in batch)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            if len(batch) < _CHUNK:
                return

    as_of = re.sub(r"[^0-9A-Za-z-]", "", str(meta.get("as_of") or "latest"))[:20]
    return StreamingResponse(
        chunks(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="churnguard-customers-{as_of}.csv"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )
