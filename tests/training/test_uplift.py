"""Uplift learners recover who responds, the policy flags sleeping dogs, and the gate refuses a worse policy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.uplift import DO_NOTHING, UpliftLog, UpliftModel, choose_actions, gate

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
    for learner in ("dr", "t"):
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
