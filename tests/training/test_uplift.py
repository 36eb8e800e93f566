"""Uplift learners recover who responds, the policy flags sleeping dogs, the gate refuses a worse policy, and
the training step learns from older campaigns and gates on the newest."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from training.uplift import (
    DO_NOTHING,
    MIN_PER_ACTION,
    UpliftInputs,
    UpliftLog,
    UpliftModel,
    choose_actions,
    gate,
    learn_uplift,
)

ACTIONS = (DO_NOTHING, "service", "discount")


def _log(n: int, seed: int) -> tuple[UpliftLog, dict[str, np.ndarray]]:
    """Randomised: service helps customers with failures, discount helps deal seekers, contact hurts dogs."""
    rng = np.random.default_rng(seed)
    failures = rng.poisson(0.6, n).astype(float)
    deal = rng.random(n)
    dog = rng.random(n) < 0.15
    x = pd.DataFrame(
        {"failures": failures, "deal": deal, "contract": dog.astype(float), "noise": rng.random(n)}
    )
    effect = {
        DO_NOTHING: np.zeros(n),
        "service": np.where(dog, -0.2, 0.12 * np.minimum(failures, 2)),
        "discount": np.where(dog, -0.2, 0.2 * (deal > 0.6)),
    }
    received = rng.choice(ACTIONS, size=n, p=[0.4, 0.3, 0.3])
    propensity = np.select([received == DO_NOTHING, received == "service"], [0.4, 0.3], 0.3)
    base = 0.55 - 0.1 * failures.clip(0, 2)
    p = np.clip(base + np.array([effect[a][i] for i, a in enumerate(received)]), 0.01, 0.99)
    retained = (rng.random(n) < p).astype(float)
    return UpliftLog(x, received, propensity, retained, np.full(n, 100.0)), effect


@pytest.fixture(scope="module")
def fitted() -> tuple[UpliftModel, UpliftLog, dict[str, np.ndarray]]:
    train, _ = _log(6000, 1)
    later, effect = _log(6000, 2)
    return UpliftModel().fit(train), later, effect


def test_dr_and_t_learners_find_who_responds_to_what(fitted: tuple[UpliftModel, UpliftLog, dict]) -> None:
    model, later, effect = fitted
    for learner in ("pooled", "dr", "t"):
        est = model.effects(later.features, learner)
        for action in ("service", "discount"):
            assert np.corrcoef(est[action], effect[action])[0, 1] > 0.5, (learner, action)


def test_policy_flags_sleeping_dogs_and_beats_the_playbook_at_the_gate(
    fitted: tuple[UpliftModel, UpliftLog, dict],
) -> None:
    model, later, _ = fitted
    policy = choose_actions(model.effects(later.features), later.value, {"service": 5.0, "discount": 5.0})
    dogs = later.features["contract"].to_numpy() == 1
    flagged = policy.do_not_contact
    precision, recall = dogs[flagged].mean(), flagged[dogs].mean()
    assert precision > 2 * dogs.mean() and recall > 0.4, (precision, recall)  # 15% are dogs
    assert all("do not contact" in w for w, f in zip(policy.why, flagged, strict=True) if f)
    playbook = np.full(len(dogs), "discount", dtype=object)  # the incumbent: one action for everyone
    better = gate(later, policy.action, playbook, outcome=model)
    assert better.accepted and better.low > 0, better.reason
    worse = gate(later, playbook, policy.action, outcome=model)  # a deliberately worse candidate
    assert not worse.accepted and "refused" in worse.reason
    thin = gate(later, policy.action, playbook, min_per_action=10_000)
    assert not thin.accepted and "too few" in thin.reason


def test_the_gate_counts_what_actions_cost(fitted: tuple[UpliftModel, UpliftLog, dict]) -> None:
    """Contacting everyone with an action whose best effect (+24 points x 100) is below its cost (50) is a
    worse policy than doing nothing, however much retention it buys."""
    model, later, _ = fitted
    everyone = np.full(len(later.received), "service", dtype=object)
    nothing = np.full(len(later.received), DO_NOTHING, dtype=object)
    costly = gate(later, everyone, nothing, outcome=model, costs={"service": 50.0})
    assert not costly.accepted and costly.gain < 0, costly.reason
    free = gate(later, everyone, nothing, outcome=model, costs={"service": 0.0})
    assert free.gain > costly.gain + 49  # the same retention, the cost of 50 per customer apart


def test_a_difference_that_does_not_hold_up_out_of_fold_is_shrunk_away() -> None:
    """Two actions that work alike (more for customers with more failures) share the contact effect and
    have no difference of their own to learn: cross-fitting finds their difference trees' variation is
    noise and keeps little of it, while the shared effect's dependence on failures holds up and is kept."""
    rng = np.random.default_rng(0)
    n = 5000
    failures = rng.poisson(0.6, n).astype(float)
    x = pd.DataFrame({"failures": failures, "noise": rng.random(n), "other": rng.random(n)})
    effect = 0.15 * np.minimum(failures, 2)
    received = rng.choice([DO_NOTHING, "call", "visit"], size=n, p=[0.5, 0.25, 0.25])
    gain = np.where(received == DO_NOTHING, 0.0, effect)
    retained = (rng.random(n) < 0.6 - 0.1 * failures.clip(0, 2) + gain).astype(float)
    log = UpliftLog(x, received, np.where(received == DO_NOTHING, 0.5, 0.25), retained, np.full(n, 100.0))
    model = UpliftModel().fit(log)
    kept = model.shrinkage_
    assert kept["contact"] > 0.6 and max(kept["call"], kept["visit"]) < 0.3, kept
    estimate = model.effects(x)
    for action in ("call", "visit"):
        assert np.corrcoef(estimate[action], effect)[0, 1] > 0.7, action


# ------------------------------------------------------------------- the training step on a generated world


@pytest.fixture(scope="module")
def campaign_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small world running the same randomised campaign twice: in autumn (to learn from) and in spring
    (the newest, to gate on)."""
    from features.synthetic import Period, Scenario, generate_dataset
    from features.synthetic.campaigns import CampaignDesign, CampaignSetup

    arms = (("service_recovery_call", 0.3), ("loyalty_discount", 0.3))
    designs = (
        CampaignDesign("autumn", date(2024, 11, 1), arms),
        CampaignDesign("spring", date(2025, 3, 1), arms),
    )
    scenario = Scenario("base", Period(date(2023, 1, 1), date(2025, 7, 1)), CampaignSetup(designs=designs))
    out = tmp_path_factory.mktemp("campaign-world") / "data"
    generate_dataset(out, 2000, seed=11, scenario=scenario)
    return out


def _inputs(trained: Any, world: Path, campaigns: pd.DataFrame | None) -> UpliftInputs:
    from features.campaigns import load_playbook
    from features.loading import load_dataset
    from features.model_store import load_model
    from features.settings import get_settings
    from training.registry import configure_mlflow

    configure_mlflow(get_settings())
    bundle = load_model("models:/churnguard@champion").bundle
    return UpliftInputs(
        dataset=load_dataset(world),
        campaigns=campaigns,
        bundle=bundle,
        playbook=load_playbook(),
        horizon_days=90,
    )


@pytest.mark.slow
def test_training_learns_from_the_older_campaigns_and_gates_on_the_newest(
    trained: Any, campaign_world: Path
) -> None:
    from features.campaigns import load_campaigns
    from training.card import _actions_section

    campaigns = load_campaigns(campaign_world)
    assert campaigns is not None
    result = learn_uplift(_inputs(trained, campaign_world, campaigns))
    assert result.campaigns == {"fit": ["autumn"], "gate": ["spring"]}
    for part in ("fit", "gate"):
        assert set(result.samples[part]) == {DO_NOTHING, "service_recovery_call", "loyalty_discount"}
        assert min(result.samples[part].values()) >= MIN_PER_ACTION
    verdict = result.gate
    assert verdict is not None and result.model is not None
    assert result.used == verdict.accepted
    assert result.decided_by == ("uplift effects" if verdict.accepted else "playbook priors")
    if result.used:
        assert result.effects is not None and set(result.effects.actions) <= {
            "service_recovery_call",
            "loyalty_discount",
        }
    else:
        assert result.effects is None and "did not pass the gate" in result.reason
    metadata = json.loads(json.dumps(result.metadata()))  # what the bundle and the card keep
    assert metadata["gate"]["low"] <= metadata["gate"]["gain_per_customer"] <= metadata["gate"]["high"]
    metrics = result.mlflow_metrics()
    assert metrics["uplift.gate_low"] == pytest.approx(verdict.low)
    assert (
        metrics["uplift.samples_gate.service_recovery_call"]
        == result.samples["gate"]["service_recovery_call"]
    )
    assert result.mlflow_params()["uplift.gate_campaigns"] == "spring"
    card = _actions_section({"uplift": metadata})
    assert f"{verdict.gain:+,.2f}" in card and "spring" in card and "customers (gate)" in card


@pytest.mark.slow
def test_a_champion_with_learned_effects_is_the_incumbent_and_stays_unless_beaten(
    trained: Any, campaign_world: Path
) -> None:
    """Once a learned policy is in force, the next training judges against it, not the playbook: a
    candidate no better than the champion's policy (here: the very same effects) is refused, and the new
    bundle keeps the champion's effects rather than falling back to the priors."""
    from dataclasses import replace

    from features.campaigns import load_campaigns

    campaigns = load_campaigns(campaign_world)
    inputs = _inputs(trained, campaign_world, campaigns)
    first = learn_uplift(inputs)
    assert first.model is not None
    shipped = first.model.action_effects(inputs.playbook, "revenue")
    champion = replace(inputs.bundle, effects=shipped)

    again = learn_uplift(replace(inputs, champion=champion))
    verdict = again.gate
    assert verdict is not None and not verdict.accepted
    assert verdict.gain == pytest.approx(0.0, abs=1e-9)  # the same policy: nothing to gain
    assert again.effects is shipped and again.decided_by == "uplift effects"
    assert "champion's learned policy stays" in again.reason

    other_features = replace(champion, features=champion.features[:-1])  # effects that cannot apply
    fallback = learn_uplift(replace(inputs, champion=other_features))
    assert fallback.gate is not None and fallback.gate.gain == pytest.approx(first.gate.gain)  # type: ignore[union-attr]


@pytest.mark.slow
def test_without_two_campaign_dates_with_ended_outcomes_the_priors_stay(
    trained: Any, campaign_world: Path
) -> None:
    from features.campaigns import load_campaigns

    campaigns = load_campaigns(campaign_world)
    assert campaigns is not None
    one = learn_uplift(_inputs(trained, campaign_world, campaigns[campaigns["campaign"] == "spring"]))
    assert not one.used and one.decided_by == "playbook priors" and "one date only" in one.reason
    none = learn_uplift(_inputs(trained, campaign_world, None))
    assert not none.used and "no campaigns table" in none.reason and none.gate is None
