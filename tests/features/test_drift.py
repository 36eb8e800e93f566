"""Drift measures: PSI over the reference's bins and the two-sample tests, on frames whose shift is known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from features.drift import DriftReport, DriftThresholds, compare, history_snapshot, psi, reference_profile


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(3)


def _frame(
    rng: np.random.Generator, n: int, *, shift: float = 0.0, late: float = 0.1, web: float = 0.5
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(n)],
            "spend": rng.normal(100 + shift, 20, n),
            "late_deliveries": rng.poisson(rng.random(n) < late, n).astype(float) * (rng.random(n) < late),
            "channel": np.where(rng.random(n) < web, "web", "store"),
        }
    )


def test_a_sample_of_the_same_world_is_stable(rng: np.random.Generator) -> None:
    reference = reference_profile(_frame(rng, 5000))
    report = compare(reference, _frame(rng, 3000))
    assert report.status == "ok"
    assert all(c.psi < 0.02 for c in report.columns)
    assert {c.name for c in report.columns} == {"spend", "late_deliveries", "channel"}  # never the id


def test_a_shifted_mean_alerts_and_the_ks_test_sees_it(rng: np.random.Generator) -> None:
    report = compare(reference_profile(_frame(rng, 5000)), _frame(rng, 3000, shift=15))
    spend = next(c for c in report.columns if c.name == "spend")
    assert spend.status == "alert" and spend.psi > 0.2
    assert spend.test == "ks" and spend.significant and spend.p_value < 1e-6
    assert report.status == "alert" and report.flagged("alert")[0].name == "spend"


def test_a_zero_inflated_count_that_triples_is_seen(rng: np.random.Generator) -> None:
    # Every decile of a column that is 0 for 90% of customers is 0: without a bin of its own for 0, the
    # customers with late deliveries would share a bin with those without, and the rise would be invisible.
    report = compare(reference_profile(_frame(rng, 5000, late=0.3)), _frame(rng, 3000, late=0.6))
    late = next(c for c in report.columns if c.name == "late_deliveries")
    assert late.psi >= 0.1, late


def test_a_categorical_shift_is_tested_by_chi_square(rng: np.random.Generator) -> None:
    report = compare(reference_profile(_frame(rng, 5000)), _frame(rng, 3000, web=0.8))
    channel = next(c for c in report.columns if c.name == "channel")
    assert channel.test == "chi2" and channel.significant and channel.status == "alert"


def test_unseen_levels_and_missing_values_count_as_drift() -> None:
    reference = reference_profile(pd.DataFrame({"plan": ["a"] * 50 + ["b"] * 50, "x": np.arange(100.0)}))
    current = pd.DataFrame({"plan": ["c"] * 60 + ["a"] * 40, "x": [np.nan] * 60 + list(range(40))})
    report = compare(reference, current)
    assert {c.name: c.status for c in report.columns} == {"plan": "alert", "x": "alert"}


def test_the_profile_is_json_and_its_reports_round_trip(rng: np.random.Generator) -> None:
    frame = _frame(rng, 2000)
    profile = json.loads(json.dumps(reference_profile(frame)))
    report = compare(profile, _frame(rng, 1000, shift=5), DriftThresholds(0.05, 0.5))
    assert report.thresholds.psi_warn == 0.05
    again = DriftReport.from_dict(json.loads(json.dumps(report.as_dict())))
    assert again == report


def test_columns_the_frame_lacks_are_listed_not_compared(rng: np.random.Generator) -> None:
    report = compare(reference_profile(_frame(rng, 500)), _frame(rng, 500).drop(columns=["channel"]))
    assert report.missing == ["channel"] and "channel" not in {c.name for c in report.columns}


def test_psi_of_known_shares() -> None:
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0
    expected = (0.7 - 0.5) * np.log(0.7 / 0.5) + (0.3 - 0.5) * np.log(0.3 / 0.5)
    assert psi(np.array([0.5, 0.5]), np.array([0.7, 0.3])) == pytest.approx(expected)


def test_a_run_kept_from_scores_before_lifetime_value_keeps_their_revenue_and_no_value() -> None:
    """Scores written before issue #13 have no expected_revenue_<H>d: their clv was the revenue forecast,
    so that is what the run keeps as revenue, and its lifetime value is unknown, not that revenue."""
    old = pd.DataFrame(
        {
            "customer_id": ["a", "b"],
            "churn_probability": [0.2, 0.5],
            "clv": [100.0, 40.0],
            "value_at_risk": [20.0, 20.0],
            "segment": ["loyal", "at_risk_valuable"],
        }
    )
    kept = history_snapshot(old)
    assert kept["expected_revenue"].tolist() == [100.0, 40.0]
    assert kept["clv"].isna().all()
    new = old.rename(columns={"clv": "expected_revenue_90d"}).assign(clv=[900.0, 300.0])
    assert history_snapshot(new)["clv"].tolist() == [900.0, 300.0]
