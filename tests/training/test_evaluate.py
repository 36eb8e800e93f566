"""Evaluation tables read by the plots, the model card and the notebooks: one binning, stated contracts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.btyd import BetaGeoModel
from training import evaluate as ev
from training.run import Stopwatch


def test_reliability_table_uses_equal_count_bins_and_gives_the_ece() -> None:
    rng = np.random.default_rng(1)
    p = rng.beta(1, 4, 1000)  # crowded near 0: equal-width bins would leave the top ones nearly empty
    y = (rng.random(1000) < p).astype(int)
    table = ev.reliability_table(y, p, bins=10)
    assert list(table.columns) == ["bin", "mean_predicted", "observed", "count"]
    assert table["count"].tolist() == [100] * 10
    assert table["mean_predicted"].is_monotonic_increasing
    gap = (table["observed"] - table["mean_predicted"]).abs()
    assert ev.expected_calibration_error(y, p) == pytest.approx(float((gap * table["count"]).sum() / 1000))


def test_ece_sees_a_shifted_base_rate() -> None:
    rng = np.random.default_rng(2)
    p = rng.uniform(0.1, 0.6, 20_000)
    y = (rng.random(20_000) < p).astype(int)
    assert ev.expected_calibration_error(y, p) < 0.02
    assert ev.expected_calibration_error(y, np.clip(p + 0.1, 0, 1)) == pytest.approx(0.1, abs=0.02)


def test_gains_table_reaches_every_churner_and_ranks_the_perfect_score_first() -> None:
    y = np.array([1, 0, 0, 1, 0, 0, 0, 0, 0, 0])
    perfect = ev.gains_table(y, y.astype(float), points=10)
    assert list(perfect.columns) == ["contacted_share", "churners_reached"]
    assert perfect["churners_reached"].iloc[0] == 0.0 and perfect["churners_reached"].iloc[-1] == 1.0
    assert perfect.loc[2, "churners_reached"] == 1.0  # both churners in the top 20%
    reversed_ = ev.gains_table(y, -y.astype(float), points=10)
    assert reversed_.loc[2, "churners_reached"] == 0.0


def test_revenue_deciles_carry_the_level_ratio() -> None:
    actual = np.arange(1, 101, dtype=float)
    deciles = ev.revenue_by_decile(actual, 2 * actual)
    assert np.allclose(deciles["predicted_to_actual"], 2.0)


def test_stopwatch_times_each_step_even_when_it_fails() -> None:
    watch = Stopwatch()
    with watch("fit"):
        pass
    with pytest.raises(RuntimeError), watch("plot"):
        raise RuntimeError("disk full")
    assert set(watch.seconds) == {"fit", "plot"} and all(v >= 0 for v in watch.seconds.values())


# Daily BG/NBD rates (as tests/features/test_btyd.py simulates): about 7 purchases a year while alive.
BG_TRUE = {"r": 0.5, "alpha": 25.0, "a": 0.8, "b": 2.5}


def _bgnbd_world(n: int, horizon: float, seed: int) -> pd.DataFrame:
    """Customers drawn from BG/NBD itself, observed up to their age T and then for ``horizon`` more days:
    the history (x, t_x, T), BG/NBD's closed-form P(alive) and P(at least one purchase in the horizon)
    at the true parameters, and whether they really bought in it."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(BG_TRUE["r"], 1 / BG_TRUE["alpha"], n)
    drop = rng.beta(BG_TRUE["a"], BG_TRUE["b"], n)
    age = rng.uniform(200, 730, n)
    arrivals = rng.poisson(lam * age)
    last_purchase = rng.geometric(drop)  # the purchase after which the customer drops out
    x = np.minimum(arrivals, last_purchase)
    t_x = np.where(x > 0, age * rng.beta(np.maximum(x, 1), np.maximum(arrivals - x + 1, 1)), 0.0)
    alive_now = arrivals < last_purchase
    bought = alive_now & (rng.poisson(lam * horizon) > 0)  # alive until the next purchase, at least
    model = BetaGeoModel.from_dict({"model": "bg/nbd", "params": BG_TRUE, "unit_days": 1.0})
    p_alive = model.p_alive(x, t_x, age)
    r, alpha = BG_TRUE["r"], BG_TRUE["alpha"]
    keeps = p_alive * (1 - ((alpha + age) / (alpha + age + horizon)) ** (r + x))
    return pd.DataFrame(
        {"value_btyd_keeps": keeps, "value_p_alive": p_alive, "future_orders": bought.astype(int)}
    )


def test_bgnbd_purchase_probability_is_calibrated_where_p_alive_is_not() -> None:
    """At the true parameters BG/NBD's P(a purchase within 90 days) matches who bought; P(alive) is no
    purchase probability (alive customers need not buy within the horizon) and reads as badly calibrated."""
    world = _bgnbd_world(40_000, 90.0, seed=3)
    calibration = ev.purchase_calibration_of(world, horizon_days=90)
    assert calibration is not None and calibration.customers == 40_000
    assert calibration.ece < 0.02
    assert calibration.observed == pytest.approx(world["future_orders"].mean())
    assert calibration.mean_predicted == pytest.approx(calibration.observed, abs=0.01)
    table = calibration.table
    assert list(table.columns) == ["bin", "mean_predicted", "observed", "count", "mean_p_alive"]
    assert table["count"].sum() == 40_000 and table["mean_predicted"].is_monotonic_increasing
    assert (table["mean_p_alive"] >= table["mean_predicted"]).all()
    alive_as_purchase = ev.expected_calibration_error(world["future_orders"], world["value_p_alive"])
    assert alive_as_purchase > 0.1
    metrics = calibration.metrics()
    assert metrics["btyd_bgnbd.p_purchase_90d.ece"] == calibration.ece
    assert set(metrics) == {
        "btyd_bgnbd.p_purchase_90d.ece",
        "btyd_bgnbd.p_purchase_90d.mean_predicted",
        "btyd_bgnbd.p_purchase_90d.observed",
        "btyd_bgnbd.p_purchase_90d.customers",
        "btyd_bgnbd.p_alive.mean",
    }


def test_purchase_calibration_sees_an_overstated_purchase_rate() -> None:
    world = _bgnbd_world(20_000, 90.0, seed=4)
    calibration = ev.purchase_calibration_of(world, horizon_days=90)
    overstated = ev.purchase_calibration_of(
        world.assign(value_btyd_keeps=np.clip(world["value_btyd_keeps"] * 1.5, 0, 1)), horizon_days=90
    )
    assert calibration is not None and overstated is not None
    assert overstated.ece > calibration.ece + 0.05


def test_purchase_calibration_needs_the_value_parts_and_the_window_orders() -> None:
    world = _bgnbd_world(200, 90.0, seed=5)
    assert ev.purchase_calibration_of(world.drop(columns="future_orders"), horizon_days=90) is None
    assert ev.purchase_calibration_of(world.drop(columns="value_btyd_keeps"), horizon_days=90) is None
    unvalued = world.assign(value_btyd_keeps=np.nan, value_p_alive=np.nan)
    assert ev.purchase_calibration_of(unvalued, horizon_days=90) is None
    some = world.assign(value_btyd_keeps=world["value_btyd_keeps"].where(world.index >= 50))
    partial = ev.purchase_calibration_of(some, horizon_days=90)
    assert partial is not None and partial.customers == 150  # customers the model could not value left out
