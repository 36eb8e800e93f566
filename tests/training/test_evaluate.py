"""Evaluation tables read by the plots, the model card and the notebooks: one binning, stated contracts."""

from __future__ import annotations

import numpy as np
import pytest

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


def test_clv_deciles_carry_the_level_ratio() -> None:
    actual = np.arange(1, 101, dtype=float)
    deciles = ev.clv_by_decile(actual, 2 * actual)
    assert np.allclose(deciles["predicted_to_actual"], 2.0)


def test_stopwatch_times_each_step_even_when_it_fails() -> None:
    watch = Stopwatch()
    with watch("fit"):
        pass
    with pytest.raises(RuntimeError), watch("plot"):
        raise RuntimeError("disk full")
    assert set(watch.seconds) == {"fit", "plot"} and all(v >= 0 for v in watch.seconds.values())
