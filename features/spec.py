"""The feature specification: every model input with its meaning, unit and the data it needs.

Descriptions are written for a retention agent, not a data scientist: the serving layer turns them into
sentences that explain a prediction. ``requires`` names the tables or ``table.column`` entries a feature
is computed from; a feature whose source data the user did not supply is left out of the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

WINDOWS: Final = (30, 90, 180, 365)


class Unit(StrEnum):
    DAYS = "days"
    COUNT = "count"
    MONEY = "money"
    SHARE = "share"  # 0..1
    RATIO = "ratio"
    HOURS = "hours"
    SCORE = "score"
    CATEGORY = "category"
    NUMBER = "number"


@dataclass(frozen=True)
class FeatureDef:
    name: str
    description: str
    unit: Unit
    requires: tuple[str, ...] = ("transactions",)
    group: str = "engagement"  # the reason family used to choose retention actions
    monotone: int = 0  # +1: more never lowers churn risk; -1: more never raises it (a domain rule)


def _rfm() -> list[FeatureDef]:
    defs = [
        FeatureDef("recency_days", "days since the last purchase", Unit.DAYS),
        FeatureDef("tenure_days", "days since the customer joined", Unit.DAYS, group="onboarding"),
        FeatureDef("orders_total", "orders ever placed", Unit.COUNT),
        FeatureDef("spend_total", "total spend so far, net of returns", Unit.MONEY, group="value"),
        FeatureDef("avg_order_value", "average order value", Unit.MONEY, group="value"),
    ]
    for w in WINDOWS:
        defs.append(FeatureDef(f"orders_{w}d", f"orders in the last {w} days", Unit.COUNT))
        defs.append(
            FeatureDef(
                f"spend_{w}d", f"spend in the last {w} days, net of returns", Unit.MONEY, group="value"
            )
        )
    defs += [
        FeatureDef(
            "order_trend_90d", "orders in the last 90 days relative to the 90 days before", Unit.RATIO
        ),
        FeatureDef(
            "spend_trend_180d", "spend in the last 180 days relative to the 180 days before", Unit.RATIO
        ),
        FeatureDef("mean_gap_days", "usual number of days between purchases", Unit.DAYS),
        FeatureDef(
            "gap_variability", "how irregular the gaps between purchases are (0 = like clockwork)", Unit.RATIO
        ),
        FeatureDef(
            "overdue_ratio",
            "days since the last purchase relative to the usual gap between purchases",
            Unit.RATIO,
        ),
        FeatureDef("active_months_365d", "months with at least one purchase in the last 12", Unit.COUNT),
        FeatureDef(
            "discount_rate",
            "share of list value given as discount",
            Unit.SHARE,
            ("transactions.discount",),
            group="price",
        ),
        FeatureDef(
            "discounted_order_share",
            "share of orders bought with a discount",
            Unit.SHARE,
            ("transactions.discount",),
            group="price",
        ),
        FeatureDef(
            "return_share",
            "share of orders returned (a credit note counts as a returned order)",
            Unit.SHARE,
            ("transactions.returned",),
            group="service",
        ),
        FeatureDef("channels_used", "number of sales channels used", Unit.COUNT, ("transactions.channel",)),
        FeatureDef(
            "main_channel_share",
            "share of orders through the customer's main channel",
            Unit.SHARE,
            ("transactions.channel",),
        ),
        FeatureDef(
            "late_deliveries_90d",
            "late deliveries in the last 90 days",
            Unit.COUNT,
            ("transactions.delivery_delay_days",),
            group="service",
            monotone=1,
        ),
        FeatureDef(
            "late_deliveries_365d",
            "late deliveries in the last 365 days",
            Unit.COUNT,
            ("transactions.delivery_delay_days",),
            group="service",
            monotone=1,
        ),
        FeatureDef(
            "mean_delay_days_365d",
            "average delivery delay in days over the last 365 days",
            Unit.DAYS,
            ("transactions.delivery_delay_days",),
            group="service",
        ),
    ]
    return defs


def _service() -> list[FeatureDef]:
    it = "interactions"
    defs = []
    for kind, plural in (("complaint", "complaints"), ("support", "support contacts")):
        for w in (90, 365):
            defs.append(
                FeatureDef(
                    f"{kind}s_{w}d" if kind == "complaint" else f"support_{w}d",
                    f"{plural} in the last {w} days",
                    Unit.COUNT,
                    (it,),
                    group="service",
                )
            )
    defs += [
        FeatureDef("inquiries_365d", "inquiries in the last 365 days", Unit.COUNT, (it,), group="engagement"),
        FeatureDef(
            "contacts_90d",
            "service contacts of any kind in the last 90 days",
            Unit.COUNT,
            (it,),
            group="service",
        ),
        FeatureDef(
            "unresolved_complaints_90d",
            "unresolved complaints in the last 90 days",
            Unit.COUNT,
            ("interactions.resolved",),
            group="service",
            monotone=1,
        ),
        FeatureDef(
            "unresolved_complaints_365d",
            "unresolved complaints in the last 365 days",
            Unit.COUNT,
            ("interactions.resolved",),
            group="service",
            monotone=1,
        ),
        FeatureDef(
            "mean_resolution_hours_365d",
            "average hours to resolve a contact over the last 365 days",
            Unit.HOURS,
            ("interactions.resolution_hours",),
            group="service",
        ),
        FeatureDef(
            "days_since_last_complaint", "days since the last complaint", Unit.DAYS, (it,), group="service"
        ),
        FeatureDef(
            "last_satisfaction",
            "latest satisfaction score (1-5)",
            Unit.SCORE,
            ("interactions.satisfaction",),
            group="service",
            monotone=-1,
        ),
        FeatureDef(
            "mean_satisfaction_365d",
            "average satisfaction score over the last 365 days (1-5)",
            Unit.SCORE,
            ("interactions.satisfaction",),
            group="service",
            monotone=-1,
        ),
        FeatureDef(
            "last_nps",
            "latest likelihood-to-recommend answer (0-10)",
            Unit.SCORE,
            ("interactions.nps",),
            group="service",
            monotone=-1,
        ),
        FeatureDef(
            "service_failures_per_order_365d",
            "complaints, late deliveries and returns per order over the last 365 days",
            Unit.RATIO,
            (it,),
            group="service",
        ),
    ]
    for channel in ("phone", "email", "chat", "store", "web"):
        defs.append(
            FeatureDef(
                f"contacts_{channel}_365d",
                f"service contacts by {channel} in the last 365 days",
                Unit.COUNT,
                ("interactions.channel",),
                group="service",
            )
        )
    return defs


BASE_FEATURES: Final[tuple[FeatureDef, ...]] = tuple(_rfm() + _service())
BASE_BY_NAME: Final = {f.name: f for f in BASE_FEATURES}


def attribute_feature(name: str, categorical: bool) -> FeatureDef:
    """A customer attribute from the customers table, used as it is."""
    unit = Unit.CATEGORY if categorical else Unit.NUMBER
    return FeatureDef(name, f"customer attribute '{name}'", unit, (f"customers.{name}",), group="profile")


def available_features(provided: frozenset[str], attributes: dict[str, bool]) -> list[FeatureDef]:
    """The features the supplied data supports: base features whose sources exist, plus attributes."""
    chosen = [f for f in BASE_FEATURES if all(r in provided for r in f.requires)]
    chosen += [attribute_feature(name, is_cat) for name, is_cat in attributes.items()]
    return chosen
