"""Reasons: exact TreeSHAP contributions turned into sentences a retention agent understands.

Contributions are in the churn model's log-odds: base value + contributions = raw score exactly.
Each reason compares the customer's value with what is typical among customers who stayed.
"""

from __future__ import annotations

import math

import numpy as np

from serving.bundle import FeatureInfo, ModelBundle


def _num(value: float, unit: str) -> str:
    if unit == "share":
        return f"{value:.0%}"
    if unit == "money":
        return f"{value:,.2f}"
    if unit in ("count", "days") or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def sentence(info: FeatureInfo, value: object, row: dict[str, object]) -> str:
    """One plain sentence for one feature of one customer."""
    name, unit, typical = info.name, info.unit, info.typical
    if info.categories is not None:
        shown = "unknown" if _missing(value) else str(value)
        return f"{info.description[0].upper()}{info.description[1:]} is '{shown}'" + (
            f" (most customers who stay: '{typical}')." if typical is not None and typical != shown else "."
        )
    if _missing(value):
        return f"No record of {info.description}."
    number = float(value)  # type: ignore[arg-type]
    gap = row.get("mean_gap_days")
    if name == "recency_days":
        usual = f"; usually buys every {_num(float(gap), 'days')} days" if not _missing(gap) else ""  # type: ignore[arg-type]
        days = _num(number, "days")
        return f"Last purchase {days} {'day' if days == '1' else 'days'} ago{usual}."
    if name == "overdue_ratio":
        return (
            f"Next purchase is overdue: {number:.1f}x the usual gap between purchases has passed."
            if number > 1
            else f"Still within the usual gap between purchases ({number:.1f}x of it has passed)."
        )
    typical_text = ""
    if typical is not None and not _missing(typical):
        t = float(typical)  # type: ignore[arg-type]
        if unit == "count" and t == 0:
            typical_text = "; most customers who stay have none"
        else:
            typical_text = f"; typical for customers who stay: {_num(t, unit)}"
    if unit == "count" and number != 1:  # "2 unresolved complaints in the last 90 days"
        return f"{_num(number, unit)} {info.description}{typical_text}."
    return f"{info.description[0].upper()}{info.description[1:]}: {_num(number, unit)}{typical_text}."


def _decode(info: FeatureInfo, value: float) -> float | str | None:
    if math.isnan(value):
        return None
    if info.categories is not None:
        return info.categories[int(value)]
    return round(value, 4)


def top_reasons(
    bundle: ModelBundle, matrix: np.ndarray, contrib: np.ndarray, top_k: int = 5
) -> list[list[dict[str, object]]]:
    """The top_k features by absolute contribution for every row, as structured reasons with a sentence."""
    features = bundle.features
    values = contrib[:, :-1]
    k = min(top_k, len(features))
    top = np.argsort(-np.abs(values), axis=1, kind="stable")[:, :k]
    names = bundle.feature_names
    gap_index = names.index("mean_gap_days") if "mean_gap_days" in names else None
    out = []
    for i in range(len(matrix)):
        context: dict[str, object] = {}
        if gap_index is not None:
            context["mean_gap_days"] = float(matrix[i, gap_index])
        reasons = []
        for j in top[i]:
            c = float(values[i, j])
            if c == 0.0:
                continue
            info = features[j]
            value = _decode(info, float(matrix[i, j]))
            reasons.append(
                {
                    "feature": info.name,
                    "value": value,
                    "typical": info.typical,
                    "contribution": round(c, 4),
                    "direction": "raises risk" if c > 0 else "lowers risk",
                    "group": info.group,
                    "sentence": sentence(info, value, context),
                }
            )
        out.append(reasons)
    return out


NEW_CUSTOMER_DAYS = 180


def _addressable(reason: dict[str, object]) -> bool:
    """A reason an action can answer: it raises risk, and 'onboarding' only for customers still new."""
    if float(reason["contribution"]) <= 0:  # type: ignore[arg-type]
        return False
    if reason["group"] == "onboarding":
        value = reason["value"]
        return isinstance(value, float | int) and value < NEW_CUSTOMER_DAYS
    return True


def risk_groups(reasons: list[list[dict[str, object]]]) -> list[set[str]]:
    """The reason families that raise each customer's risk: what an action should address."""
    return [{str(r["group"]) for r in rs if _addressable(r)} for rs in reasons]
