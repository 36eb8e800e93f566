"""Request and response bodies of the HTTP API (the public contract CRM systems code against)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from features.bundle import ModelInfo


def _encodable(value: str) -> str:
    """Refuse text that is not valid Unicode (a lone surrogate such as ``"\\ud800"`` from JSON escapes) or
    holds a NUL character (no customer id has one, and a PostgreSQL text value cannot)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text (a lone surrogate escape such as \\ud800)") from None
    if "\x00" in value:
        raise ValueError("contains a NUL character (\\u0000), which no id or value may hold")
    return value


Text = Annotated[str, AfterValidator(_encodable)]
CustomerId = Annotated[Text, Field(max_length=200)]


class Reason(BaseModel):
    feature: str = Field(description="Model feature name.")
    value: float | str | None = Field(description="The customer's value (null when unknown).")
    typical: float | str | None = Field(description="Typical value among customers who stayed.")
    contribution: float = Field(description="Exact SHAP contribution to the churn log-odds.")
    direction: str = Field(description="'raises risk' or 'lowers risk'.")
    group: str = Field(description="Reason family: service, engagement, price, onboarding, value, profile.")
    sentence: str = Field(description="The reason in plain words.")


class ActionOut(BaseModel):
    name: str = Field(description="Action id from the playbook, or 'no_action'.")
    label: str
    description: str
    expected_net_value: float = Field(
        description="By the playbook's priors: value at risk (to the end of the relationship, discounted to "
        "as_of at clv.annual_discount_rate; x the playbook margin on a revenue basis) x success rate - cost "
        "(paid now, undiscounted). By learned effects (decided_by 'uplift effects'): incremental_retention "
        "x the value if retained - cost. 0 for no action. Customers in the 'graceful exit' segment and "
        "do-not-contact customers never get a paid action."
    )
    cost: float = Field(
        description="What the action costs for this customer, from the playbook: paid once, now "
        "(at as_of), so undiscounted."
    )
    success_rate: float
    why: str = Field(description="The figures behind the choice, in words.")
    decided_by: str = Field(
        default="playbook priors",
        description="'uplift effects' (learned from randomised campaigns and gated at training) or "
        "'playbook priors'.",
    )
    do_not_contact: bool = Field(
        default=False,
        description="True when every action is estimated to lower this customer's retention (a "
        "'sleeping dog'): no paid action, the reason is in why.",
    )
    incremental_retention: float | None = Field(
        default=None,
        description="The chosen action's estimated change in the probability of staying within the "
        "horizon (learned effects only; null by the playbook's priors).",
    )


# Which model produced a score: the bundle's own record (one definition, shared with batch scoring).
ModelRef = ModelInfo


class ExpectedOrders(BaseModel):
    days_90: float = Field(
        description="Expected repeat purchases in the 90 days from as_of (BG/NBD): a count, undiscounted."
    )
    days_365: float = Field(
        description="Expected repeat purchases in the 365 days from as_of (BG/NBD): a count, undiscounted."
    )


class ValueInterval(BaseModel):
    p05: float = Field(
        description="5th percentile of residual_value under parameter uncertainty: to the end of the "
        "relationship, discounted to as_of like residual_value."
    )
    p95: float = Field(
        description="95th percentile of residual_value under parameter uncertainty: to the end of the "
        "relationship, discounted to as_of like residual_value."
    )


class ClvOut(BaseModel):
    """Customer lifetime value: money the customer is expected to bring from ``as_of`` on."""

    residual_value: float = Field(
        description="Expected value from as_of to the end of the relationship, each expected purchase "
        "discounted to as_of by (1 + annual_discount_rate)^-years: LightGBM's spend within the churn "
        "horizon, BG/NBD + Gamma-Gamma beyond it. Contribution (margin less cost to serve) or revenue, as "
        "basis says; can be negative."
    )
    value_1y: float = Field(
        description="Expected value of the 365 days from as_of, discounted to as_of like residual_value."
    )
    historic_value: float = Field(
        description="Net spend from the first purchase up to as_of (times the margin on a contribution "
        "basis), at face value: undiscounted."
    )
    p_alive: float = Field(ge=0, le=1, description="BG/NBD probability the customer is still active.")
    expected_orders: ExpectedOrders
    expected_order_value: float = Field(
        description="Gamma-Gamma expected value of one future order (revenue), undiscounted."
    )
    basis: str = Field(description="'contribution' (an economics config is in force) or 'revenue' (none).")
    annual_discount_rate: float = Field(
        description="Yearly rate every discounted value field uses: money expected t years after as_of "
        "counts (1 + rate)^-t."
    )
    interval: ValueInterval | None = Field(description="Uncertainty band of residual_value, if known.")
    model: str = Field(description="What produced these figures.")


class CustomerScore(BaseModel):
    customer_id: str
    as_of: str = Field(description="Scores use events strictly before this date.")
    churn_probability: float = Field(
        ge=0, le=1, description="Calibrated probability of churning in the horizon."
    )
    risk_tier: str = Field(description="low, medium or high.")
    expected_revenue_90d: float | None = Field(
        default=None,
        description="LightGBM forecast of spend (revenue) over the model's churn horizon (90 days by "
        "default; see GET /v1/model), undiscounted. Not lifetime value.",
    )
    clv: ClvOut | None = Field(
        default=None,
        description="Lifetime value (see its fields); null when it cannot be computed (a model without a "
        "value model, or features lacking orders_total, tenure_days, recency_days or spend_total).",
    )
    value_at_risk: float | None = Field(
        default=None,
        description="churn_probability (within the churn horizon) x the residual value the customer "
        "would bring if retained (to the end of the relationship, discounted to as_of at "
        "clv.annual_discount_rate; 0 when that value is <= 0); null when lifetime value is unavailable.",
    )
    referral_value: float | None = Field(
        default=None,
        description="Value brought by the customers this customer referred (each customer counts for "
        "their earliest referral only): what they spent from the referral day up to as_of (times the "
        "margin on a contribution basis), at face value (undiscounted), plus their residual value to the "
        "end of their relationships, discounted to as_of at clv.annual_discount_rate (0 for one no longer "
        "active). Shown beside, never added into, this customer's clv or value_at_risk; can be negative. "
        "Null when the data has no referrals table (or no value model): unknown, not 0; 0 when nobody "
        "was referred. Batch scores only: null in POST /v1/score.",
    )
    value_basis: str | None = Field(
        default=None, description="'contribution' or 'revenue': what every value field measures."
    )
    segment: str = Field(
        description="Value segment: the customer's class in value x risk (e.g. 'valuable, at risk'); "
        "not a segment attribute of the customer data."
    )
    reasons: list[Reason]
    action: ActionOut
    model: ModelRef

    @model_validator(mode="before")
    @classmethod
    def _stored_value(cls, data: Any) -> Any:
        """A stored score keeps lifetime value flat (``clv`` = residual value) and whole in ``clv_detail``."""
        if isinstance(data, dict) and "clv_detail" in data:
            data = {**data, "clv": data.get("clv_detail")}
        return data


class BatchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"customer_ids": ["C0000001"]}]}
    )
    customer_ids: list[CustomerId] = Field(
        min_length=1, description="Customer ids (at most the batch limit)."
    )


class BatchResponse(BaseModel):
    scores: list[CustomerScore]
    not_found: list[str] = Field(description="Requested ids with no score in the serving store.")


class ScoreRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    customer_id: CustomerId = "what-if"
    features: dict[Text, float | Text | None] = Field(
        description="Feature values by name (see GET /v1/model); missing ones are treated as unknown. "
        "Numbers for numeric features (not true/false), category text for the others. An `as_of` "
        "column, as `churnguard features` writes it, is accepted and ignored."
    )

    @field_validator("features", mode="before")
    @classmethod
    def _no_booleans(cls, value: Any) -> Any:
        """JSON true/false would be read as 1/0: say so instead of scoring a guess."""
        if isinstance(value, dict):
            flags = [str(k) for k, v in value.items() if isinstance(v, bool)]
            if flags:
                raise ValueError(
                    f"true/false is not a feature value ({', '.join(flags[:5])}): send a number, "
                    "or the category's text"
                )
        return value


class ScoreRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {
                    "records": [
                        {
                            "customer_id": "C0000001",
                            "features": {
                                "recency_days": 94,
                                "orders_365d": 3,
                                "unresolved_complaints_90d": 2,
                            },
                        }
                    ]
                }
            ]
        },
    )
    records: list[ScoreRecord] = Field(min_length=1)


class ScoredRecord(CustomerScore):
    missing_features: list[str] = Field(description="Model features the request did not supply.")
    unknown_categories: dict[str, str] = Field(
        default_factory=dict,
        description="Category values the model never saw in training, by feature: scored as unknown.",
    )
    ignored_fields: list[str] = Field(
        default_factory=list, description="Supplied fields that are not model inputs (such as as_of)."
    )


class ScoreResponse(BaseModel):
    scores: list[ScoredRecord]


class FeatureOut(BaseModel):
    name: str
    description: str
    unit: str
    group: str
    categories: list[str] | None
    typical: float | str | None


class ModelCard(BaseModel):
    model: ModelRef
    metrics: dict[str, Any]
    thresholds: dict[str, float]
    calibration: str | None
    features: list[FeatureOut]


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str = Field(description="ready, degraded or not_ready.")
    model_version: str | None
    registry_reachable: bool
    scores_as_of: str | None
    detail: str | None
    warnings: list[str] = Field(
        default_factory=list,
        description="Warnings recorded with the model being served (e.g. a calibration guard it failed).",
    )


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
