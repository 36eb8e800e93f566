"""Buy-till-you-die models: parameter recovery on simulated data, agreement with lifetimes as an oracle,
unit invariance, monotonicity of value, and point-in-time summaries."""

from __future__ import annotations

import json
import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats
from scipy.optimize import check_grad
from scipy.special import betaln

from features.btyd import (
    BetaGeoModel,
    GammaGammaModel,
    _BGData,
    _bgnbd_objective,
    _gg_objective,
    _SpendData,
    expected_value,
    residual_value,
    rfm_summary,
)
from features.errors import ConfigError, DataValidationError

# Daily rates: about 7 purchases a year while alive, half the customers gone after ~2 repeat purchases.
BG_TRUE = {"r": 0.5, "alpha": 25.0, "a": 0.8, "b": 2.5}
GG_TRUE = {"p": 6.0, "q": 4.0, "v": 15.0}


def simulate_bgnbd(n: int, rng: np.random.Generator, t_low: float = 200, t_high: float = 730) -> pd.DataFrame:
    """(frequency, recency, T) drawn from BG/NBD itself, in days.

    A customer would make K ~ Geometric(p) repeat purchases before dropping out and N(T) ~ Poisson(lambda T)
    in (0, T] if alive throughout; x = min(N, K), and the x-th of N uniform arrival times is T * Beta(x,
    N - x + 1).
    """
    lam = rng.gamma(BG_TRUE["r"], 1 / BG_TRUE["alpha"], n)
    p = rng.beta(BG_TRUE["a"], BG_TRUE["b"], n)
    age = rng.uniform(t_low, t_high, n)
    arrivals = rng.poisson(lam * age)
    x = np.minimum(arrivals, rng.geometric(p))
    last = np.where(x > 0, age * rng.beta(np.maximum(x, 1), np.maximum(arrivals - x + 1, 1)), 0.0)
    return pd.DataFrame({"frequency": x.astype(float), "recency": last, "T": age})


def simulate_spend(frequency: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mean order value of x orders: order values Gamma(p, nu), nu ~ Gamma(q, v); 0 without repeats."""
    nu = rng.gamma(GG_TRUE["q"], 1 / GG_TRUE["v"], len(frequency))
    x = np.maximum(frequency, 1)
    return np.where(frequency > 0, rng.gamma(GG_TRUE["p"] * x, 1 / (nu * x)), 0.0)


@pytest.fixture(scope="module")
def simulated() -> pd.DataFrame:
    rng = np.random.default_rng(20260105)
    summary = simulate_bgnbd(5000, rng)
    summary["monetary_value"] = simulate_spend(summary["frequency"].to_numpy(), rng)
    return summary


@pytest.fixture(scope="module")
def fitted(simulated: pd.DataFrame) -> tuple[BetaGeoModel, GammaGammaModel]:
    bg = BetaGeoModel().fit(simulated["frequency"], simulated["recency"], simulated["T"])
    gg = GammaGammaModel().fit(simulated["frequency"], simulated["monetary_value"])
    return bg, gg


# ------------------------------------------------------------------------------------ parameter recovery


def assert_recovered(fitted: dict[str, float], errors: dict[str, float], truth: dict[str, float]) -> None:
    """Each estimate within 4 standard errors of the truth, and each standard error below 15% of it.

    The MLE is asymptotically normal with the inverse observed information as covariance; 4 standard
    errors bound a fixed seed's miss with room to spare (two-sided 6e-5 per parameter), and the cap on
    the errors keeps the check from passing merely because the estimate is vague.
    """
    for name, true in truth.items():
        assert errors[name] < 0.15 * true, f"{name}: standard error {errors[name]:.3g} is too wide"
        assert abs(fitted[name] - true) < 4 * errors[name], f"{name}: {fitted[name]:.4g} vs true {true}"


def test_bgnbd_recovers_the_parameters_it_was_simulated_with(fitted: tuple[BetaGeoModel, GammaGammaModel]):
    bg, _ = fitted
    assert_recovered(bg.params_, bg.standard_errors_, BG_TRUE)


def test_gamma_gamma_recovers_the_parameters_it_was_simulated_with(
    fitted: tuple[BetaGeoModel, GammaGammaModel],
):
    _, gg = fitted
    assert_recovered(gg.params_, gg.standard_errors_, GG_TRUE)


@pytest.mark.parametrize("penalizer", [0.0, 0.05])
def test_likelihood_gradients_match_finite_differences(simulated: pd.DataFrame, penalizer: float):
    s = simulated.iloc[:800]
    bg_data = _BGData.of(s["frequency"].to_numpy(), s["recency"].to_numpy() / 730, s["T"].to_numpy() / 730)
    repeat = s.loc[s["frequency"] > 0]
    gg_data = _SpendData.of(repeat["frequency"].to_numpy(), repeat["monetary_value"].to_numpy())
    for objective, data, at in [
        (_bgnbd_objective, bg_data, np.log([0.4, 0.05, 0.9, 2.0])),
        (_gg_objective, gg_data, np.log([5.0, 3.0, 12.0])),
    ]:

        def value(p, objective=objective, data=data):
            return objective(p, data, penalizer)[0]

        def gradient(p, objective=objective, data=data):
            return objective(p, data, penalizer)[1]

        error = check_grad(value, gradient, at, epsilon=1e-7)
        assert error < 1e-6 * max(1.0, float(np.linalg.norm(gradient(at))))


# ----------------------------------------------------------------------------------- lifetimes as oracle


def import_lifetimes():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip(
            "lifetimes",
            reason="lifetimes (the test oracle, dev extra) is not installed or fails to import on this stack",
        )


@pytest.mark.parametrize("penalizer", [0.0, 0.1])
def test_bgnbd_agrees_with_lifetimes(simulated: pd.DataFrame, penalizer: float):
    lifetimes = import_lifetimes()
    x, t_x, age = simulated["frequency"], simulated["recency"], simulated["T"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oracle = lifetimes.BetaGeoFitter(penalizer_coef=penalizer).fit(x, t_x, age)
    ours = BetaGeoModel(penalizer=penalizer).fit(x, t_x, age)
    for name, value in oracle.params_.items():
        assert ours.params_[name] == pytest.approx(value, rel=1e-3), name

    # Same parameters, same predictions: the formulas themselves agree.
    same = BetaGeoModel.from_dict(
        {"model": "bg/nbd", "params": dict(oracle.params_.astype(float)), "unit_days": 1.0}
    )
    for t in (1.0, 30.0, 365.0, 3650.0):
        with warnings.catch_warnings():  # lifetimes takes the log of a negative 2F1 when a + b < 1
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = oracle.conditional_expected_number_of_purchases_up_to_time(t, x, t_x, age).to_numpy()
        ours = same.expected_purchases(t, x, t_x, age)
        finite = np.isfinite(expected)  # lifetimes gives NaN where 2F1 < 0 (see the test below)
        assert finite.mean() > 0.7 and np.isfinite(ours).all()
        np.testing.assert_allclose(ours[finite], expected[finite], rtol=1e-6, atol=1e-9)
    alive = oracle.conditional_probability_alive(x, t_x, age)
    np.testing.assert_allclose(same.p_alive(x, t_x, age), alive, rtol=1e-6, atol=1e-9, equal_nan=False)


def test_gamma_gamma_agrees_with_lifetimes(simulated: pd.DataFrame):
    lifetimes = import_lifetimes()
    repeat = simulated.loc[simulated["frequency"] > 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oracle = lifetimes.GammaGammaFitter().fit(repeat["frequency"], repeat["monetary_value"])
    ours = GammaGammaModel().fit(simulated["frequency"], simulated["monetary_value"])
    for name, value in oracle.params_.items():
        assert ours.params_[name] == pytest.approx(value, rel=1e-3), name
    same = GammaGammaModel.from_dict({"model": "gamma-gamma", "params": dict(oracle.params_.astype(float))})
    expected = oracle.conditional_expected_average_profit(repeat["frequency"], repeat["monetary_value"])
    np.testing.assert_allclose(
        same.expected_order_value(repeat["frequency"], repeat["monetary_value"]), expected, rtol=1e-6
    )


# ------------------------------------------------------------------------------------------ the summary


def day(n: int, hour: int = 12) -> pd.Timestamp:
    return pd.Timestamp("2025-01-01") + pd.Timedelta(days=n, hours=hour)


@pytest.fixture()
def shop() -> pd.DataFrame:
    rows = [
        ("a", day(0), 100.0),
        ("a", day(4), 50.0),
        ("a", day(4, 15), -20.0),  # partial return the same day: nets to 30
        ("a", day(7), -10.0),  # return-only day: no occasion, still lowers repeat spend
        ("a", day(9), 25.0),
        ("a", day(9, 18), 15.0),  # second order the same day: one occasion of 40
        ("b", day(2), -30.0),  # only a credit: no customer yet
        ("c", day(3), 20.0),
        ("c", day(3, 13), -20.0),  # bought and returned the same day: nets to 0, no occasion
        ("d", day(5), 60.0),
    ]
    return pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount"])


def test_summary_nets_returns_per_day_and_counts_positive_days_as_purchases(shop: pd.DataFrame):
    summary = rfm_summary(shop, day(20, 0))
    assert list(summary.index) == ["a", "d"]
    a = summary.loc["a"]
    assert (a["frequency"], a["recency"], a["T"]) == (2, 9, 20)
    assert a["monetary_value"] == pytest.approx((30 - 10 + 40) / 2)
    assert (summary.loc["d", "frequency"], summary.loc["d", "monetary_value"]) == (0, 0.0)


def test_summary_ignores_events_on_or_after_the_cutoff(shop: pd.DataFrame):
    cutoff = day(9, 0)
    later = pd.DataFrame(
        {
            "customer_id": ["a", "a", "d", "e"],
            "timestamp": [cutoff, day(12), cutoff + pd.Timedelta(seconds=1), day(10)],
            "amount": [500.0, -100.0, 70.0, 10.0],
        }
    )
    before = rfm_summary(shop, cutoff)
    after = rfm_summary(pd.concat([shop, later], ignore_index=True), cutoff)
    pd.testing.assert_frame_equal(before, after)
    assert before.loc["a", "frequency"] == 1  # the day-9 purchases are not before midnight of day 9


def test_summary_matches_lifetimes_on_purchases_without_returns(simulated_transactions: pd.DataFrame):
    lifetimes = import_lifetimes()
    cutoff = pd.Timestamp("2026-01-01")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oracle = lifetimes.utils.summary_data_from_transaction_data(
            simulated_transactions,
            "customer_id",
            "timestamp",
            monetary_value_col="amount",
            observation_period_end=cutoff,
            freq="D",
        )
    ours = rfm_summary(simulated_transactions, cutoff)
    for column in ("frequency", "recency", "T", "monetary_value"):
        np.testing.assert_allclose(ours[column], oracle.loc[ours.index, column], rtol=1e-9)


@pytest.fixture(scope="module")
def simulated_transactions() -> pd.DataFrame:
    """About 1,500 customers' purchase logs drawn from BG/NBD (continuous times), ending before 2026."""
    rng = np.random.default_rng(11)
    n, end = 1500, pd.Timestamp("2026-01-01")
    starts = rng.uniform(0, 500, n)
    lam = rng.gamma(BG_TRUE["r"], 1 / BG_TRUE["alpha"], n)
    p = rng.beta(BG_TRUE["a"], BG_TRUE["b"], n)
    rows = []
    for customer, (start, rate, drop) in enumerate(zip(starts, lam, p, strict=True)):
        times, now = [start], start
        while True:
            now += rng.exponential(1 / rate)
            if now >= 700:
                break
            times.append(now)
            if rng.random() < drop:
                break
        amounts = rng.gamma(6.0, 5.0, len(times))
        rows.extend((f"c{customer}", t, amt) for t, amt in zip(times, amounts, strict=True))
    frame = pd.DataFrame(rows, columns=["customer_id", "days", "amount"])
    frame["timestamp"] = end - pd.Timedelta(days=700) + pd.to_timedelta(frame.pop("days"), unit="D")
    return frame


# --------------------------------------------------------------------------------------------- the value


def fit_both(summary: pd.DataFrame, unit_days: float) -> tuple[BetaGeoModel, GammaGammaModel]:
    bg = BetaGeoModel().fit(summary["frequency"], summary["recency"], summary["T"], unit_days=unit_days)
    return bg, GammaGammaModel().fit(summary["frequency"], summary["monetary_value"])


def test_days_and_weeks_give_the_same_money(simulated_transactions: pd.DataFrame):
    cutoff = pd.Timestamp("2026-01-01")
    values = []
    for unit in (1.0, 7.0):
        summary = rfm_summary(simulated_transactions, cutoff, unit_days=unit)
        bg, gg = fit_both(summary, unit)
        one_year = expected_value(bg, gg, summary, horizon_days=365, annual_discount_rate=0.15, margin=0.4)
        residual = residual_value(bg, gg, summary, annual_discount_rate=0.15, cost_per_year=3.0)
        values.append((one_year, residual, bg.params_["alpha"] * unit))
    (year_d, rest_d, alpha_d), (year_w, rest_w, alpha_w) = values
    assert alpha_w == pytest.approx(
        alpha_d, rel=1e-6
    )  # alpha is a time scale: in weeks, 1/7 of its value in days
    np.testing.assert_allclose(year_w, year_d, rtol=1e-6)
    np.testing.assert_allclose(rest_w, rest_d, rtol=1e-6)
    assert year_d.sum() > 0


def test_a_summary_in_another_unit_than_the_model_is_refused(simulated_transactions: pd.DataFrame):
    cutoff = pd.Timestamp("2026-01-01")
    bg, gg = fit_both(rfm_summary(simulated_transactions, cutoff), 1.0)
    weeks = rfm_summary(simulated_transactions, cutoff, unit_days=7.0)
    with pytest.raises(ConfigError, match=re.escape("unit_days=1.0")):
        expected_value(bg, gg, weeks, horizon_days=365, annual_discount_rate=0.1)


def test_undiscounted_single_step_value_is_purchases_times_order_value(
    fitted: tuple[BetaGeoModel, GammaGammaModel], simulated: pd.DataFrame
):
    bg, gg = fitted
    s = simulated.iloc[:50]
    value = expected_value(bg, gg, s, horizon_days=20, annual_discount_rate=0.0, margin=0.3)
    by_hand = (
        bg.expected_purchases(20, s["frequency"], s["recency"], s["T"])
        * gg.expected_order_value(s["frequency"], s["monetary_value"])
        * 0.3
    )
    np.testing.assert_allclose(value, by_hand, rtol=1e-12)


def test_residual_value_is_the_long_horizon_value_within_the_quadratures_accuracy(
    fitted: tuple[BetaGeoModel, GammaGammaModel], simulated: pd.DataFrame
):
    bg, gg = fitted
    s = simulated.iloc[:100]
    residual = residual_value(bg, gg, s, annual_discount_rate=0.15)
    long_run = expected_value(bg, gg, s, horizon_days=100 * 365.25, annual_discount_rate=0.15)  # 1.15**-100
    gap = (long_run - residual) / long_run
    assert gap.abs().max() <= 1e-4  # 100 years of monthly steps leave out 1.15**-100, under 1e-6
    one_year = expected_value(bg, gg, s, horizon_days=365.25, annual_discount_rate=0.15)
    assert (one_year < residual).all()


@pytest.mark.parametrize(("frequency", "recency", "age"), [(0, 0, 40), (3, 100, 300), (12, 350, 360)])
def test_survival_matches_direct_integration_over_the_dropout_probability(
    fitted: tuple[BetaGeoModel, GammaGammaModel], frequency: int, recency: float, age: float
):
    bg, _ = fitted
    r, alpha, a, b = (bg.params_[k] for k in ("r", "alpha", "a", "b"))
    alive_now = bg.p_alive(frequency, recency, age)[0]
    for s in (10.0, 365.0, 5000.0):
        beta = stats.beta(a, b + frequency)
        direct, _ = integrate.quad(
            lambda p, s=s, beta=beta: (1 + p * s / (alpha + age)) ** -(r + frequency) * beta.pdf(p), 0, 1
        )
        assert bg.survival(s, frequency, recency, age)[0] == pytest.approx(alive_now * direct, rel=1e-7)


@pytest.mark.parametrize(
    "params",
    [BG_TRUE, {"r": 0.45, "alpha": 21.0, "a": 0.27, "b": 0.5}],  # the second has a + b < 1: 2F1 goes negative
    ids=["a+b>1", "a+b<1"],
)
@pytest.mark.parametrize(
    ("frequency", "recency", "age"), [(0, 0, 40), (0, 0, 700), (3, 100, 300), (30, 350, 360)]
)
def test_expected_purchases_match_direct_integration(params, frequency: int, recency: float, age: float):
    """Alive now, purchases in t given (lambda, p) number (1 - exp(-lambda p t)) / p in expectation;
    averaged over lambda ~ Gamma(r + x, alpha + T) that is (1 - (1 + p t / (alpha + T)) ** -(r + x)) / p,
    integrated here over p ~ Beta(a, b + x) by quadrature, independently of FHL's eq. 10."""
    bg = BetaGeoModel.from_dict({"model": "bg/nbd", "params": params, "unit_days": 1.0})
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    k, beta = r + frequency, alpha + age
    for t in (7.0, 365.0, 3650.0):
        integral, _ = integrate.quad(
            lambda p, t=t: -math.expm1(-k * math.log1p(p * t / beta)) / p if p > 0 else k * t / beta,
            0,
            1,
            weight="alg",
            wvar=(a - 1, b + frequency - 1),
            epsabs=0,
            epsrel=1e-10,
        )
        direct = bg.p_alive(frequency, recency, age)[0] * integral / math.exp(betaln(a, b + frequency))
        assert bg.expected_purchases(t, frequency, recency, age)[0] == pytest.approx(direct, rel=1e-7)


small_summary = st.integers(0, 40).flatmap(
    lambda x: st.tuples(st.just(float(x)), st.floats(0, 1), st.floats(1, 900), st.floats(1, 300))
)


@settings(max_examples=40, deadline=None)
@given(
    customer=small_summary,
    horizons=st.tuples(st.floats(0, 2000), st.floats(0, 2000)),
    rates=st.tuples(st.floats(0, 0.5), st.floats(0, 0.5)),
    costs=st.tuples(st.floats(0, 100), st.floats(0, 100)),
)
def test_value_rises_with_horizon_falls_with_discount_and_cost(
    fitted: tuple[BetaGeoModel, GammaGammaModel], customer, horizons, rates, costs
):
    bg, gg = fitted
    x, share, age, spend = customer
    summary = pd.DataFrame(
        {
            "frequency": [x],
            "recency": [share * age if x else 0.0],
            "T": [age],
            "monetary_value": [spend if x else 0],
        }
    )

    def value(horizon=365.0, rate=0.1, margin=0.5, cost=0.0):
        return expected_value(
            bg,
            gg,
            summary,
            horizon_days=horizon,
            annual_discount_rate=rate,
            margin=margin,
            cost_per_year=cost,
        ).iloc[0]

    short, long = sorted(horizons)
    low, high = sorted(rates)
    cheap, dear = sorted(costs)
    slack = 1e-9
    assert value(horizon=short) <= value(horizon=long) + slack
    assert value(rate=low) >= value(rate=high) - slack
    assert value(cost=cheap) >= value(cost=dear) - slack
    assert value(margin=0.0, cost=cheap) <= 0.0
    residual = residual_value(bg, gg, summary, annual_discount_rate=max(high, 0.01), margin=0.5)
    assert residual.iloc[0] >= value(horizon=long, rate=max(high, 0.01)) * (1 - 1e-4)


@settings(max_examples=60, deadline=None)
@given(customer=small_summary, t=st.tuples(st.floats(0, 5000), st.floats(0, 5000)))
def test_p_alive_is_a_probability_and_expected_purchases_grow_from_zero(
    fitted: tuple[BetaGeoModel, GammaGammaModel], customer, t
):
    bg, _ = fitted
    x, share, age, _ = customer
    recency = share * age if x else 0.0
    alive = bg.p_alive(x, recency, age)[0]
    assert 0.0 <= alive <= 1.0
    early, late = sorted(t)
    before, after = (bg.expected_purchases(s, x, recency, age)[0] for s in (early, late))
    assert 0.0 <= before <= after + 1e-9
    assert (
        bg.survival(late, x, recency, age)[0]
        <= bg.survival(early, x, recency, age)[0] + 1e-12
        <= alive + 2e-12
    )


# ---------------------------------------------------------------------------------- stored form, errors


def test_fitted_models_round_trip_through_json(
    fitted: tuple[BetaGeoModel, GammaGammaModel], simulated: pd.DataFrame
):
    bg, gg = fitted
    bg2 = BetaGeoModel.from_dict(json.loads(json.dumps(bg.to_dict())))
    gg2 = GammaGammaModel.from_dict(json.loads(json.dumps(gg.to_dict())))
    s = simulated.iloc[:100]
    pd.testing.assert_series_equal(
        residual_value(bg, gg, s, annual_discount_rate=0.1),
        residual_value(bg2, gg2, s, annual_discount_rate=0.1),
    )


def test_impossible_histories_are_refused_naming_the_column(fitted: tuple[BetaGeoModel, GammaGammaModel]):
    bg, _ = fitted
    with pytest.raises(DataValidationError, match="'recency': is larger than T"):
        bg.p_alive([2, 1], [50.0, 10.0], [40.0, 20.0])
    with pytest.raises(DataValidationError, match="'frequency': is not a whole number"):
        bg.expected_purchases(30, [1.5], [10.0], [20.0])


def test_residual_value_needs_a_positive_discount_rate(
    fitted: tuple[BetaGeoModel, GammaGammaModel], simulated: pd.DataFrame
):
    bg, gg = fitted
    with pytest.raises(ConfigError, match="positive rate"):
        residual_value(bg, gg, simulated.iloc[:5], annual_discount_rate=0.0)
    assert math.isfinite(residual_value(bg, gg, simulated.iloc[:5], annual_discount_rate=0.01).sum())
