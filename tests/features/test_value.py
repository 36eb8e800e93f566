"""Lifetime value: the combination of LightGBM and BTYD, value at risk, contribution and graceful exit."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.btyd import residual_value, rfm_summary
from features.economics import EconomicsConfig, cost_per_year, load_economics
from features.errors import ConfigError
from features.value import (
    PART_COLUMNS,
    ServeCosts,
    ValueModel,
    combine,
    fit_value_model,
    geometric_lifetime,
    inputs_from_features,
    parts_for_frame,
    records_columns,
    value_inputs,
    value_parts,
)
from serving.actions import NO_ACTION, Action, Playbook, decide_actions


@pytest.fixture(scope="module")
def transactions(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    from features.loading import load_dataset
    from features.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("value") / "crm"
    generate_dataset(root, n_customers=1000, seed=11)
    return load_dataset(root).transactions


@pytest.fixture(scope="module")
def cutoff(transactions: pd.DataFrame) -> pd.Timestamp:
    return transactions["timestamp"].max().normalize() - pd.Timedelta(days=100)


@pytest.fixture(scope="module")
def model(transactions: pd.DataFrame, cutoff: pd.Timestamp) -> ValueModel:
    return fit_value_model(transactions, cutoff, economics=None)


def _parts(**overrides: float) -> pd.DataFrame:
    base = dict.fromkeys(PART_COLUMNS, 0.0) | {"value_margin": 1.0, "value_p_alive": 0.8}
    return pd.DataFrame([base | overrides])


def test_value_at_risk_on_a_hand_checked_customer(model: ValueModel) -> None:
    parts = _parts(
        value_btyd_keeps=0.5, value_lifetime=1000.0, value_btyd_horizon=100.0, value_btyd_year=350.0
    )
    value = combine(
        model, parts, churn_probability=np.array([0.4]), expected_revenue=np.array([120.0]), horizon_days=90
    )
    factor = -math.expm1(-math.log1p(0.10) / 365.25 * 90) / (math.log1p(0.10) / 365.25 * 90)
    keeps = (1 - 0.4) / 0.5  # ML thinks the customer likelier to stay than BG/NBD does
    assert value.residual_value[0] == pytest.approx(120 * factor + keeps * 900)
    assert value.value_1y[0] == pytest.approx(120 * factor + keeps * 250)
    # value if retained = BG/NBD lifetime value of a customer known to be alive: 1000 / 0.8
    assert value.value_at_risk(np.array([0.4]))[0] == pytest.approx(0.4 * 1250)


def test_actions_weigh_value_at_risk_and_never_pay_for_a_graceful_exit() -> None:
    playbook = Playbook(
        actions=(Action(name="call", label="Call", addresses=("engagement",), cost=5, success_rate=0.5),)
    )
    decisions = decide_actions(
        playbook,
        np.array([0.5, 0.5]),
        np.array([500.0, 500.0]),
        [{"engagement"}, {"engagement"}],
        basis="contribution",
        lifetime=np.array([800.0, -40.0]),
    ).as_dicts()
    assert decisions[0]["name"] == "call"
    assert decisions[0]["expected_net_value"] == pytest.approx(500 * 0.5 - 5)
    assert decisions[1]["name"] == NO_ACTION
    assert "Graceful exit" in str(decisions[1]["why"]) and "-40.00" in str(decisions[1]["why"])


def test_without_economics_value_is_revenue(model: ValueModel) -> None:
    assert model.basis == "revenue"
    assert model.annual_discount_rate == pytest.approx(0.10)


def test_cost_to_serve_lowers_the_value_of_heavy_support_users(model: ValueModel) -> None:
    economics = EconomicsConfig(gross_margin=0.4, cost_per_support_contact=15.0)
    priced = ValueModel(model.purchases, model.spend, economics, model.interval_low, model.interval_high)
    customer = {"orders_total": 8, "tenure_days": 400, "recency_days": 20, "spend_total": 600.0}
    frame = pd.DataFrame([customer | {"support_365d": 0}, customer | {"support_365d": 12}])
    values = []
    for m in (model, priced):
        parts = parts_for_frame(m, frame, rows=len(frame), horizon_days=90)
        values.append(
            combine(
                m,
                parts,
                churn_probability=np.full(2, 0.2),
                expected_revenue=np.full(2, 80.0),
                horizon_days=90,
            ).residual_value
        )
    revenue, contribution = values
    assert revenue[0] == pytest.approx(revenue[1])  # revenue ignores cost to serve
    assert contribution[0] < revenue[0]  # margin
    assert contribution[1] < contribution[0]  # twelve contacts a year cost value
    assert priced.basis == "contribution"


def test_value_is_null_not_zero_when_features_lack_the_summary(model: ValueModel) -> None:
    frame = pd.DataFrame({"recency_days": [10.0], "orders_total": [3.0]})  # no tenure or spend
    inputs = inputs_from_features(frame, len(frame))
    assert all(np.isnan(values).all() for values in inputs.values())
    parts = parts_for_frame(model, frame, rows=len(frame), horizon_days=90)
    value = combine(
        model, parts, churn_probability=np.array([0.3]), expected_revenue=np.array([10.0]), horizon_days=90
    )
    assert np.isnan(value.residual_value[0]) and not value.available[0]


def test_a_few_records_are_valued_exactly_as_the_same_rows_in_a_frame(model: ValueModel) -> None:
    """The API values records without building a DataFrame; batch files read frames. Same figures."""
    priced = ValueModel(model.purchases, model.spend, EconomicsConfig(gross_margin=0.3, cost_per_return=4.0))
    records: list[dict[str, object]] = [
        {"orders_total": 7, "tenure_days": 420, "recency_days": 12, "spend_total": 510.0, "support_365d": 3},
        {"orders_total": 1, "tenure_days": 30, "recency_days": 30, "spend_total": 40.0, "return_share": 0.5},
        {"orders_total": None, "tenure_days": 200, "recency_days": 5, "spend_total": 80.0},
        {"orders_total": "4", "tenure_days": 90, "recency_days": None, "spend_total": 120.0},
    ]
    frame = pd.DataFrame(records)
    for m in (model, priced):
        a = parts_for_frame(m, records_columns(records), rows=4, horizon_days=90)
        b = parts_for_frame(m, frame, rows=4, horizon_days=90)
        for name in PART_COLUMNS:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-12, equal_nan=True, err_msg=name)
        assert np.isnan(a["value_lifetime"][2:]).all() and (a["value_lifetime"][:2] != 0).all()


def test_the_value_model_survives_its_stored_form(model: ValueModel) -> None:
    frame = pd.DataFrame(
        {"orders_total": [5], "tenure_days": [300], "recency_days": [15], "spend_total": [250.0]}
    )
    again = ValueModel.from_dict(model.to_dict())
    a, b = (parts_for_frame(m, frame, rows=1, horizon_days=90) for m in (model, again))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_lifetime_value_exceeds_one_year_and_rises_with_margin(model: ValueModel) -> None:
    frame = pd.DataFrame(
        {"orders_total": [6], "tenure_days": [500], "recency_days": [10], "spend_total": [400.0]}
    )
    parts = parts_for_frame(model, frame, rows=1, horizon_days=90)
    value = combine(
        model, parts, churn_probability=np.array([0.1]), expected_revenue=np.array([60.0]), horizon_days=90
    )
    assert value.residual_value[0] > value.value_1y[0] > 0
    assert value.p05[0] <= value.residual_value[0] <= value.p95[0]


def test_years_after_the_second_shrink_as_the_second_did_after_the_first() -> None:
    first, second = np.array([100.0, 100.0, 100.0, 0.0]), np.array([80.0, 0.0, 200.0, 0.0])
    lifetime = geometric_lifetime(first, second)
    assert lifetime[0] == pytest.approx(100 + 80 / (1 - 0.8))  # 100 + 80 + 64 + ...
    assert lifetime[1] == pytest.approx(100.0)  # nothing in the second year: the relationship ends
    assert lifetime[2] == pytest.approx(100 + 200 / (1 - 0.95))  # a growing customer: capped, finite
    assert lifetime[3] == 0.0


def test_lifetime_lies_between_two_years_and_bgnbds_own_tail(
    model: ValueModel, transactions: pd.DataFrame, cutoff: pd.Timestamp
) -> None:
    """BG/NBD's own tail (DERT) keeps slow buyers alive for decades and overstated every generator world's
    value beyond two years; the value model continues the first two years instead, so it never exceeds
    DERT and never falls below the two years it is built from."""
    summary = rfm_summary(transactions, cutoff)
    repeat = summary[summary["frequency"] > 0].head(300)
    ids = pd.Series(repeat.index)
    rows = len(ids)
    parts = value_parts(
        model,
        value_inputs(transactions, cutoff, ids),
        ServeCosts(np.zeros(rows), np.zeros(rows)),
        horizon_days=730,  # value_btyd_horizon: the first two years
    )
    dert = residual_value(model.purchases, model.spend, repeat, annual_discount_rate=0.10).to_numpy()
    assert (parts["value_lifetime"] <= dert * (1 + 1e-9)).all()
    assert (parts["value_lifetime"] >= parts["value_btyd_horizon"] * (1 - 1e-9)).all()
    assert parts["value_lifetime"].sum() < 0.95 * dert.sum()


def test_lifetime_falls_with_the_discount_rate_and_is_at_most_zero_without_margin(model: ValueModel) -> None:
    frame = pd.DataFrame(
        {
            "orders_total": [6, 2],
            "tenure_days": [500, 200],
            "recency_days": [10, 90],
            "spend_total": [400.0, 90.0],
        }
        | {"support_365d": [4, 4]}
    )

    def lifetime(economics: EconomicsConfig) -> np.ndarray:
        priced = ValueModel(model.purchases, model.spend, economics, method=model.method)
        return parts_for_frame(priced, frame, rows=2, horizon_days=90)["value_lifetime"]

    low, high = (lifetime(EconomicsConfig(gross_margin=1.0, annual_discount_rate=r)) for r in (0.05, 0.25))
    assert (high < low).all()
    tiny = lifetime(EconomicsConfig(gross_margin=1e-9, cost_per_support_contact=10.0))
    assert (tiny <= 0).all()


def test_economics_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "economics.yaml"
    path.write_text("gross_margin: 1.5\ncost_per_return: -2\n")
    with pytest.raises(ConfigError, match="gross_margin") as caught:
        load_economics(path)
    assert "cost_per_return" in str(caught.value)
    path.write_text("gross_margin: 0.3\nmargin_by_channel: {web: 2}\n")
    with pytest.raises(ConfigError, match=r"margin_by_channel\.web"):
        load_economics(path)
    path.write_text("gross_margin: 0.3\ncost_per_support_contact: 5\ncost_per_late_delivery: 2\n")
    economics = load_economics(path)
    costs = cost_per_year(pd.DataFrame({"support_365d": [2], "late_deliveries_365d": [3]}), 1, economics)
    assert costs[0] == pytest.approx(2 * 5 + 3 * 2)
