"""The truth's residual value, as a benchmark that scores lifetime value against it relies on it.

It must be each customer's expected discounted revenue over the rest of the relationship under the
generator's own process: positive for those still there and nothing for those gone, higher for customers
who buy more and lower for those who leave sooner, equal to the closed form where the process has one,
and matched on average by what the generator's own future then brings.
"""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from features.errors import ConfigError
from features.synthetic import (
    GenerationSummary,
    Period,
    Scenario,
    generate_dataset,
    load_truth,
    true_residual_value,
)
from features.synthetic.params import (
    DAYS_PER_MONTH,
    SEASON,
    SEGMENT_QUANTITY,
    Calendar,
    Experience,
    Params,
    perceived_gap,
)
from features.synthetic.residual import Horizon, MonteCarlo, Start, ValueTraits, expected_residual_value

N_CUSTOMERS = 1200
SEED = 3
END = pd.Timestamp("2026-06-30")
CUTOFF = pd.Timestamp("2025-06-15")
RATE = 0.10


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> GenerationSummary:
    return generate_dataset(tmp_path_factory.mktemp("value") / "data", N_CUSTOMERS, SEED)


@pytest.fixture(scope="module")
def truth(world: GenerationSummary) -> pd.DataFrame:
    return load_truth(world.truth_dir)


def test_customers_still_there_are_worth_a_few_years_of_spend_and_those_gone_nothing(
    truth: pd.DataFrame,
) -> None:
    value = true_residual_value(truth, END)
    assert list(value.index) == list(truth.index)
    gone = truth["death_time"].notna()
    assert gone.any() and (~gone).any()
    assert (value[gone] == 0.0).all()
    assert (value[~gone] > 0.0).all()
    yearly_spend = 12.0 * truth["purchase_rate"] * truth["spend_level"]
    years = (value[~gone] / yearly_spend[~gone]).median()
    assert 1.0 < years < 10.0, f"worth {years:.2f} years of typical spend"


def test_the_stored_state_is_what_the_recorded_gap_was_made_of(truth: pd.DataFrame) -> None:
    params = Params.from_meta(truth.attrs["synthetic"]["params"])
    for month in ("2024_03", "2025_11", "2026_06"):
        state = [
            truth[f"{name}_{month}"].to_numpy(dtype=float) for name in ("failures", "orders_seen", "pull")
        ]
        active = ~np.isnan(truth[f"gap_{month}"].to_numpy())
        assert active.sum() > 100
        failures, orders, pull = (column[active] for column in state)
        gap = perceived_gap(params, failures, orders, truth["expectation"].to_numpy()[active], pull)
        np.testing.assert_allclose(gap, truth[f"gap_{month}"].to_numpy()[active], rtol=1e-5, atol=1e-5)


def test_customers_who_buy_more_are_worth_more_and_those_who_leave_sooner_less(truth: pd.DataFrame) -> None:
    value = true_residual_value(truth, CUTOFF, draws=32)
    there = value > 0
    assert there.sum() > 300
    more_orders = truth.assign(purchase_rate=truth["purchase_rate"] * 2.0)
    sooner_gone = truth.assign(base_hazard=truth["base_hazard"] * 2.0)
    buys_more = true_residual_value(more_orders, CUTOFF, draws=32)[there] / value[there]
    leaves_sooner = true_residual_value(sooner_gone, CUTOFF, draws=32)[there] / value[there]
    assert (buys_more > 1.0).mean() > 0.98 and 1.5 < buys_more.median() < 2.1
    assert (leaves_sooner < 1.0).mean() > 0.98 and leaves_sooner.median() < 0.85

    alive = truth.loc[value.index[there]]
    assert spearmanr(value[there], alive["purchase_rate"] * alive["spend_level"]).statistic > 0.5
    assert spearmanr(value[there], alive["base_hazard"]).statistic < -0.1


def test_the_same_truth_gives_the_same_figures_and_the_monte_carlo_error_is_small(
    truth: pd.DataFrame,
) -> None:
    first = true_residual_value(truth, CUTOFF, seed=1)
    pd.testing.assert_series_equal(true_residual_value(truth, CUTOFF, seed=1), first)
    second = true_residual_value(truth, CUTOFF, seed=2)
    there = first > 0
    assert abs(first.sum() / second.sum() - 1.0) < 0.02
    difference = (first[there] - second[there]).abs() / (first[there] + second[there]) * 2.0
    assert difference.median() < 0.1
    assert spearmanr(first[there], second[there]).statistic > 0.97


def test_a_rate_that_discounts_more_gives_less(truth: pd.DataFrame) -> None:
    usual = true_residual_value(truth, CUTOFF)
    steep = true_residual_value(truth, CUTOFF, annual_discount_rate=0.3)
    there = usual > 0
    assert (steep[there] < usual[there]).all()
    with pytest.raises(ConfigError, match="positive"):
        true_residual_value(truth, CUTOFF, annual_discount_rate=0.0)
    with pytest.raises(ConfigError, match="outside the simulated period"):
        true_residual_value(truth, pd.Timestamp("2026-07-01"))


def test_a_truth_written_before_residual_value_is_refused_with_what_to_do(truth: pd.DataFrame) -> None:
    old = truth.drop(columns=["end_pull", "complain_propensity"])
    with pytest.raises(ConfigError, match="regenerate"):
        true_residual_value(old, CUTOFF)


def test_a_world_without_noise_has_the_closed_form_value() -> None:
    """No pull, no activity drift, no expectations (so no gap): constant hazard, seasonal purchase rate.
    Then value = ∫ exp(-(h + δ) t) λ season(t) E[order value] dt, summed here day by day over 200 years."""
    params = Params(pull_prob=0.0, activity_sd=0.0)
    calendar = Calendar.between(date(2023, 1, 1), date(2024, 1, 1))
    n = 4
    ones = np.ones(n)
    traits = ValueTraits(
        signup_day=np.full(n, -3650.0),  # ten years' tenure: no new-customer boost
        signup_month=np.full(n, -120),
        segment=np.zeros(n, dtype=np.int8),
        plan=np.zeros(n, dtype=np.int8),
        loyal=np.zeros(n, dtype=bool),
        purchase_rate=np.array([0.5, 1.0, 2.0, 4.0]),
        spend_level=np.array([40.0, 10.0, 25.0, 80.0]),
        discount_propensity=np.zeros(n),
        late_prob=0.05 * ones,
        defect_prob=0.05 * ones,
        return_prob=0.02 * ones,
        complain_propensity=ones,
        expectation=np.zeros(n),
        base_hazard=np.array([0.005, 0.02, 0.05, 0.2]),
        primary_channel=np.zeros(n, dtype=np.int8),
    )
    day = 100.0
    start = Start(day, calendar.month_of_day(day), Experience(*(np.zeros(n) for _ in range(4))), ones * 90.0)
    horizon = Horizon(params, calendar, np.ones(calendar.n_months), np.ones(calendar.n_months))
    value = expected_residual_value(traits, start, horizon, MonteCarlo(annual_discount_rate=RATE, draws=2))

    days = np.arange(200 * 366) + 0.5
    months = (calendar.start + pd.to_timedelta(day + days, unit="D")).month.to_numpy() - 1
    delta = math.log1p(RATE) / 365.25
    quantity = sum(
        math.exp(-SEGMENT_QUANTITY[0]) * SEGMENT_QUANTITY[0] ** k / math.factorial(k) * (1 + k) ** 0.6
        for k in range(60)
    )
    order_value = traits.spend_level * math.exp(0.45**2 / 2) * quantity
    hazard = traits.base_hazard / DAYS_PER_MONTH
    rate = traits.purchase_rate[:, None] * SEASON[months][None, :] / DAYS_PER_MONTH
    expected = (np.exp(-(hazard[:, None] + delta) * days[None, :]) * rate).sum(axis=1) * order_value
    np.testing.assert_allclose(value, expected, rtol=2e-3)


@pytest.mark.slow
def test_the_generators_own_future_brings_the_value_on_average(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """One cohort followed for twelve years after the cutoff: what they then spend, discounted, plus the
    value left at the end, discounted too, is on average what the truth said at the cutoff."""
    period = Period(date(2023, 1, 1), date(2036, 1, 1))
    summary = generate_dataset(
        tmp_path_factory.mktemp("future") / "data", 4000, 5, scenario=Scenario("single_cohort", period)
    )
    truth = load_truth(summary.truth_dir)
    cutoff = pd.Timestamp("2024-01-01")
    value = true_residual_value(truth, cutoff)

    orders = pd.read_parquet(summary.out_dir / "transactions.parquet")
    future = orders[orders["timestamp"] >= cutoff]
    years = (future["timestamp"] - cutoff) / pd.Timedelta(days=365.25)
    spent = (future["amount"] * (1.0 + RATE) ** -years).groupby(future["customer_id"]).sum()
    left_at_end = true_residual_value(truth, pd.Timestamp(period.end)) * (1.0 + RATE) ** -(
        (pd.Timestamp(period.end) - cutoff).days / 365.25
    )
    realised = spent.reindex(value.index, fill_value=0.0) + left_at_end.reindex(value.index)

    assert 0.9 < realised.sum() / value.sum() < 1.1
    assert spearmanr(value, realised).statistic > 0.6
    by_fifth = realised.groupby(pd.qcut(value.rank(method="first"), 5, labels=False)).mean()
    assert by_fifth.is_monotonic_increasing
