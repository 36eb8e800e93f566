"""The promotion policy as a user meets it: a first model that beats the baselines is usable even when
poorly calibrated (with a loud warning); a working champion is never replaced by a worse-calibrated one."""

from __future__ import annotations

import numpy as np

from training.config import PromotionConfig
from training.evaluate import METRIC_FUNCTIONS
from training.promotion import Champion, UnreadableChampion, calibration_warning, decide, paired_noise

POLICY = PromotionConfig(metric="pr_auc", max_ece=0.03)
BASELINES = {"rfm_logistic": {"pr_auc": 0.60, "ece": 0.01}, "recency_rule": {"pr_auc": 0.55, "ece": 0.02}}


def test_first_model_above_the_guard_is_champion_with_a_calibration_warning() -> None:
    decision = decide({"pr_auc": 0.70, "ece": 0.077}, BASELINES, None, POLICY)
    assert decision.promoted
    assert "first champion" in decision.reason
    assert "WARNING" in decision.reason and "ECE 0.077" in decision.reason


def test_first_model_within_the_guard_carries_no_warning() -> None:
    decision = decide({"pr_auc": 0.70, "ece": 0.01}, BASELINES, None, POLICY)
    assert decision.promoted and "WARNING" not in decision.reason
    assert calibration_warning(0.01, POLICY) is None


def test_first_model_clearly_below_a_baseline_is_not_promoted_and_says_how_to_force_it() -> None:
    decision = decide({"pr_auc": 0.58, "ece": 0.01}, BASELINES, None, POLICY)
    assert not decision.promoted
    assert "rfm_logistic" in decision.reason and "churnguard promote" in decision.reason


def test_first_model_that_ties_a_baseline_within_noise_is_champion_with_a_warning() -> None:
    """A new user must not be left with nothing to score because one cutoff's PR AUC came out 0.002
    below a recency rule (seen on the seasonal world)."""
    decision = decide({"pr_auc": 0.595, "ece": 0.01}, BASELINES, None, POLICY)
    assert decision.promoted and "ties the baselines" in decision.reason
    assert "WARNING ranking" in decision.reason and "rfm_logistic 0.6000" in decision.reason


def test_guard_protects_an_existing_champion_even_from_a_better_ranker() -> None:
    champion = Champion("3", {"pr_auc": 0.65, "ece": 0.02})
    decision = decide({"pr_auc": 0.80, "ece": 0.05}, BASELINES, champion, POLICY)
    assert not decision.promoted and "guard" in decision.reason and "v3" in decision.reason


def test_better_calibrated_challenger_replaces_the_champion_only_when_at_least_as_good() -> None:
    champion = Champion("3", {"pr_auc": 0.65, "ece": 0.02})
    assert decide({"pr_auc": 0.66, "ece": 0.02}, BASELINES, champion, POLICY).promoted
    assert not decide({"pr_auc": 0.64, "ece": 0.02}, BASELINES, champion, POLICY).promoted
    lower_better = PromotionConfig(metric="brier", max_ece=0.03)
    assert decide({"brier": 0.15, "ece": 0.02}, {}, Champion("3", {"brier": 0.16}), lower_better).promoted


def test_unreadable_champion_is_named_and_judged_like_a_first_model() -> None:
    broken = UnreadableChampion("4", "ValueError: bundle format 9 is not supported")
    decision = decide({"pr_auc": 0.70, "ece": 0.01}, BASELINES, broken, POLICY)
    assert (
        decision.promoted and "v4 could not be evaluated" in decision.reason and "format 9" in decision.reason
    )
    assert not decide({"pr_auc": 0.50, "ece": 0.01}, BASELINES, broken, POLICY).promoted


def test_a_first_model_trailing_a_baseline_within_its_paired_noise_is_champion() -> None:
    """On a small validation cutoff the same gap is noise: 0.025 behind with a paired standard error of
    0.015 (1.96 x 0.015 = 0.029 allowed) is a tie, promoted with the ranking warning; with 0.005 it is not."""
    candidate = {"pr_auc": 0.575, "ece": 0.01}
    noisy = decide(candidate, BASELINES, None, POLICY, {"rfm_logistic": 0.015, "recency_rule": 0.015})
    assert noisy.promoted and "ties the baselines" in noisy.reason
    sure = decide(candidate, BASELINES, None, POLICY, {"rfm_logistic": 0.005, "recency_rule": 0.005})
    assert not sure.promoted and "rfm_logistic 0.6000, 0.0250 ahead where noise allows 0.0200" in sure.reason


def test_paired_noise_shrinks_with_the_validation_rows_and_cancels_what_the_models_share() -> None:
    """The bootstrap's standard error of the lead: a quarter of the customers give about twice the noise,
    and a baseline that ranks exactly as the candidate does (its square) leads by exactly 0 every time."""
    rng = np.random.default_rng(7)
    n = 4000
    risk = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-risk))).astype(int)
    candidate = 1 / (1 + np.exp(-(risk + rng.normal(scale=1.0, size=n))))
    baseline = 1 / (1 + np.exp(-(risk + rng.normal(scale=1.2, size=n))))
    auc = METRIC_FUNCTIONS["roc_auc"]
    full = paired_noise(auc, y, candidate, {"b": baseline, "same": candidate**2})
    small = paired_noise(auc, y[:1000], candidate[:1000], {"b": baseline[:1000]})
    assert full["same"] == 0.0
    assert 1.5 < small["b"] / full["b"] < 2.7
    assert 0.003 < full["b"] < 0.03


def test_a_first_model_behind_on_pr_auc_but_ahead_on_roc_auc_is_champion_with_both_named() -> None:
    """Not every view of the ranking says it is worse, so it is not "clearly worse": promoted, and the
    warning names both figures. Behind on both, it is refused as before."""
    baselines = {
        "rfm_logistic": {"pr_auc": 0.745, "roc_auc": 0.808, "ece": 0.01},
        "recency_rule": {"pr_auc": 0.655, "roc_auc": 0.748, "ece": 0.02},
    }
    noise = {"rfm_logistic": 0.005, "recency_rule": 0.005}
    mixed = decide({"pr_auc": 0.720, "roc_auc": 0.810, "ece": 0.01}, baselines, None, POLICY, noise)
    assert mixed.promoted and "first champion" in mixed.reason
    assert (
        "trails rfm_logistic's 0.7450" in mixed.reason
        and "ROC AUC 0.8100 is ahead of its 0.8080" in mixed.reason
    )
    worse = decide({"pr_auc": 0.720, "roc_auc": 0.800, "ece": 0.01}, baselines, None, POLICY, noise)
    assert not worse.promoted and "rfm_logistic 0.7450" in worse.reason
