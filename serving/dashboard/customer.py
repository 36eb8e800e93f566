"""One customer's page (``/customers/{id}``): figures, lifetime value, action, reasons, history and the
what-if form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from features.bundle import FeatureInfo
from serving.dashboard.charts import Bar, signed_bars
from serving.dashboard.context import SessionDep, StateDep
from serving.dashboard.monitoring import customer_trend
from serving.dashboard.render import render
from serving.dashboard.value import customer_value
from serving.model_source import LoadedModel

router = APIRouter(include_in_schema=False)

MAIN_FEATURES = 8
MAX_ID_LENGTH = 200
_NON_NEGATIVE = {"count", "money", "days", "hours", "share", "score"}
_COLUMN_NAMES = {
    "timestamp": "When",
    "delivery_delay_days": "Delay (days)",
    "resolution_hours": "Resolution (h)",
    "nps": "NPS",
}


@dataclass(frozen=True)
class Field:
    """One input of the what-if form."""

    name: str
    label: str
    unit: str
    value: Any
    categories: list[str] | None
    typical: Any
    minimum: float | None


def signed(value: float) -> str:
    """'+0.50' or '−0.34' (a true minus sign)."""
    return f"{value:+.2f}".replace("-", "−")


def label_of(info: FeatureInfo | None, name: str) -> str:
    text = info.description if info is not None and info.description else name.replace("_", " ")
    return text[:1].upper() + text[1:]


def _main_features(loaded: LoadedModel, reasons: list[dict[str, Any]]) -> list[str]:
    """The customer's reason features first, then the model's most important ones, up to MAIN_FEATURES."""
    names = loaded.bundle.feature_names
    chosen = [str(r["feature"]) for r in reasons if r.get("feature") in names]
    gain = np.asarray(loaded.bundle.churn_model.feature_importance("gain"), dtype=float)
    for index in np.argsort(-gain, kind="stable"):
        if len(chosen) >= MAIN_FEATURES:
            break
        if names[index] not in chosen:
            chosen.append(names[index])
    return chosen[:MAIN_FEATURES] if len(chosen) > MAIN_FEATURES else chosen


def _value(value: Any) -> Any:
    """A stored value as the form shows it: floats to 4 decimals, whole numbers without a decimal point."""
    if isinstance(value, float):
        rounded = round(value, 4)
        return int(rounded) if rounded.is_integer() else rounded
    return value


def what_if_fields(loaded: LoadedModel, record: dict[str, Any]) -> tuple[list[Field], list[Field]]:
    """(main fields, other fields) pre-filled with the customer's stored feature values."""
    values = record.get("features") or {}
    main = _main_features(loaded, record.get("reasons") or [])

    def field(info: FeatureInfo) -> Field:
        minimum = 0.0 if info.categories is None and info.unit in _NON_NEGATIVE else None
        return Field(
            info.name,
            label_of(info, info.name),
            info.unit,
            _value(values.get(info.name)),
            info.categories,
            info.typical,
            minimum,
        )

    by_name = {f.name: f for f in loaded.bundle.features}
    first = [field(by_name[n]) for n in main]
    rest = [field(f) for f in loaded.bundle.features if f.name not in main]
    return first, rest


def customer_attributes(loaded: LoadedModel | None, record: dict[str, Any]) -> list[tuple[str, Any]]:
    """The customer's own attributes (columns of the data's customers table, e.g. ``country``) as stored
    with the score: an ``attributes`` mapping when the store keeps one, else the model inputs that are
    attributes (the feature group ``profile``)."""
    stored = record.get("attributes")
    if isinstance(stored, dict) and stored:
        return [(str(k), v) for k, v in stored.items()]
    values = record.get("features") or {}
    if loaded is None:
        return []
    return [
        (f.name, values[f.name]) for f in loaded.bundle.features if f.group == "profile" and f.name in values
    ]


def history_table(events: list[dict[str, Any]]) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """Column keys with readable headers, and the rows, for a list of history events."""
    keys: list[str] = []
    for event in events:
        keys += [k for k in event if k not in keys]
    columns = [(k, _COLUMN_NAMES.get(k, k.replace("_", " ").capitalize())) for k in keys]
    return columns, events


@router.get("/customers/{customer_id:path}", response_class=HTMLResponse)
def customer_page(customer_id: str, request: Request, session: SessionDep, state: StateDep) -> HTMLResponse:
    """The customer's latest score, explained; an unknown id is a friendly 404 page."""
    loaded = state.models.current
    record = state.store.get(customer_id) if len(customer_id) <= MAX_ID_LENGTH else None
    if record is None:
        return render(
            request,
            "message.html",
            404,
            session=session,
            model=loaded.info if loaded else None,
            title="Customer not found",
            message="There is no score for this customer: the id is unknown, or the customer was not active "
            "at the last batch scoring.",
            detail=customer_id[:MAX_ID_LENGTH],
            link=("/customers", "Back to the customer list"),
        )
    infos = {f.name: f for f in loaded.bundle.features} if loaded else {}
    reasons = record.get("reasons") or []
    chart = signed_bars(
        "reasons-chart",
        [
            Bar(
                label_of(infos.get(r["feature"]), str(r["feature"])),
                float(r["contribution"]),
                signed(float(r["contribution"])),
            )
            for r in reasons
        ],
        "Reasons: contributions to the churn score",
        "Exact SHAP contribution of each feature to the churn model's log-odds; bars to the right raise the "
        "risk, bars to the left lower it.",
    )
    main_fields, other_fields = (
        what_if_fields(loaded, record) if loaded and record.get("features") else ([], [])
    )
    history = record.get("history") or {}
    return render(
        request,
        "customer.html",
        session=session,
        nav="customers",
        model=loaded.info if loaded else None,
        c=record,
        value=customer_value(record),
        labels={name: label_of(info, name) for name, info in infos.items()},
        reasons=reasons,
        reasons_chart=chart,
        main_fields=main_fields,
        other_fields=other_fields,
        purchases=history_table(list(history.get("purchases") or [])),
        interactions=history_table(list(history.get("interactions") or [])),
        attributes=customer_attributes(loaded, record),
        horizon_days=loaded.info.horizon_days if loaded else (record.get("model") or {}).get("horizon_days"),
        trend=customer_trend(state.store.history(customer_id)),
    )
