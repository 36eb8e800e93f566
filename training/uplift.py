"""Learning what each action changes, from randomised campaign logs, and the gate a new policy must pass.

Per action a, a T-learner fits the retention outcome on the customers who received a and on those who
received nothing (LightGBM, features from before ``assigned_at``), and a DR-learner regresses the doubly
robust pseudo-outcome (T-learner difference plus inverse-propensity weighted residuals) on the features,
which corrects the T-learner where the two groups differ. The policy picks, per customer, the action with
the largest expected incremental retention x value - cost; ``no_action`` is always an option, and a
customer whose estimated effect of every action is negative is marked do-not-contact with the reason in
words. Without enough randomised history the playbook's priors stay (the output says which was used).

The gate compares a candidate policy with the incumbent on a later randomised log neither was fitted on:
each policy's doubly robust value per customer, their paired difference, and a 95% interval. The candidate
replaces the incumbent only if the interval's lower bound is above zero and every action it chooses was
received by enough customers in the log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import lightgbm as lgb
import numpy as np
import pandas as pd

DO_NOTHING: Final = "no_action"
MIN_PER_ACTION: Final = 200  # customers who received an action before its effect is learned or judged


@dataclass(frozen=True)
class UpliftLog:
    """A randomised log: features from before assignment, the action received, its propensity, the outcome
    (1 = retained) and the customer's value (what retention is worth)."""

    features: pd.DataFrame
    received: np.ndarray
    propensity: np.ndarray
    retained: np.ndarray
    value: np.ndarray


@dataclass
class UpliftModel:
    """Per action: the T-learner's two outcome models and the DR-learner's effect model (fitted state)."""

    actions_: list[str] = field(default_factory=list)
    control_: lgb.LGBMRegressor | None = None
    treated_: dict[str, lgb.LGBMRegressor] = field(default_factory=dict)
    effect_: dict[str, lgb.LGBMRegressor] = field(default_factory=dict)
    skipped_: dict[str, str] = field(default_factory=dict)  # action -> why its prior stays

    def fit(self, log: UpliftLog) -> UpliftModel:
        control = log.received == DO_NOTHING
        if control.sum() < MIN_PER_ACTION:
            raise ValueError(f"only {int(control.sum())} customers received nothing; need {MIN_PER_ACTION}")
        self.control_ = _regressor().fit(log.features[control], log.retained[control])
        mu0 = np.asarray(self.control_.predict(log.features), dtype=np.float64)
        for action in sorted(set(log.received) - {DO_NOTHING}):
            got = log.received == action
            if got.sum() < MIN_PER_ACTION:
                self.skipped_[action] = (
                    f"only {int(got.sum())} customers received it (need {MIN_PER_ACTION}): the playbook's prior stays"
                )
                continue
            treated = _regressor().fit(log.features[got], log.retained[got])
            mu1 = np.asarray(treated.predict(log.features), dtype=np.float64)
            pseudo = (
                mu1
                - mu0
                + got * (log.retained - mu1) / log.propensity
                - control * (log.retained - mu0) / log.propensity
            )
            keep = got | control
            self.treated_[action] = treated
            self.effect_[action] = _regressor().fit(log.features[keep], pseudo[keep])
            self.actions_.append(action)
        return self

    def effects(self, features: pd.DataFrame, learner: str = "dr") -> pd.DataFrame:
        """Estimated change in retention probability per customer (rows) and learned action (columns)."""
        if self.control_ is None:
            raise ValueError("fit the model first")
        out = {}
        for action in self.actions_:
            if learner == "dr":
                out[action] = self.effect_[action].predict(features)
            else:
                treated = np.asarray(self.treated_[action].predict(features), dtype=np.float64)
                out[action] = treated - np.asarray(self.control_.predict(features), dtype=np.float64)
        return pd.DataFrame(out, index=features.index)


def _regressor() -> lgb.LGBMRegressor:
    return lgb.LGBMRegressor(
        n_estimators=150, learning_rate=0.05, num_leaves=15, min_child_samples=40, verbose=-1, n_jobs=1
    )


@dataclass(frozen=True)
class Policy:
    """One action per customer, and why."""

    action: np.ndarray
    do_not_contact: np.ndarray
    why: list[str]
    source: str  # "uplift" or "playbook priors"


def choose_actions(effects: pd.DataFrame, value: np.ndarray, costs: dict[str, float]) -> Policy:
    """Argmax over actions of estimated incremental retention x value - cost, with no_action worth 0.
    A customer every action would push away (all effects negative) is do-not-contact."""
    actions = list(effects.columns)
    net = effects.to_numpy() * value[:, None] - np.array([costs.get(a, 0.0) for a in actions])
    best = net.argmax(axis=1)
    best_net = net[np.arange(len(net)), best]
    chosen = np.where(best_net > 0, np.array(actions, dtype=object)[best], DO_NOTHING)
    harmful = (effects.to_numpy() < 0).all(axis=1)
    whys = []
    for i in range(len(effects)):
        if harmful[i]:
            worst = effects.iloc[i].idxmin()
            whys.append(
                f"do not contact: every action is estimated to lower retention (e.g. {worst} "
                f"{effects.iloc[i][worst]:+.1%}); this customer churns more when contacted"
            )
        elif chosen[i] == DO_NOTHING:
            whys.append("no action: no action's expected retained value covers its cost")
        else:
            a = actions[best[i]]
            whys.append(
                f"{a}: {effects.iloc[i][a]:+.1%} retention x {value[i]:,.2f} value - {costs.get(a, 0.0):,.2f} "
                f"cost = {best_net[i]:,.2f}"
            )
    return Policy(chosen, harmful, whys, "uplift")


def dr_values(log: UpliftLog, actions: np.ndarray, outcome: UpliftModel | None = None) -> np.ndarray:
    """Each customer's doubly robust contribution to a policy's value (retained value) on a randomised log:
    the outcome model's prediction for the policy's action plus the weighted residual where the log's
    action matches it (plain inverse-propensity weighting without an outcome model)."""
    matched = log.received == actions
    reward = log.retained * log.value
    predicted = np.zeros(len(actions))
    if outcome is not None and outcome.control_ is not None:
        predicted = np.asarray(outcome.control_.predict(log.features), dtype=np.float64) * log.value
        for action, model in outcome.treated_.items():
            rows = actions == action
            if rows.any():
                predicted[rows] = (
                    np.asarray(model.predict(log.features[rows]), dtype=np.float64) * log.value[rows]
                )
    return predicted + matched * (reward - predicted) / log.propensity


@dataclass(frozen=True)
class GateResult:
    """Whether the candidate replaces the incumbent, with the figures and the reason in words."""

    accepted: bool
    gain: float  # mean DR value per customer, candidate - incumbent
    low: float
    high: float
    samples: dict[str, int]
    reason: str


def gate(
    log: UpliftLog,
    candidate: np.ndarray,
    incumbent: np.ndarray,
    *,
    outcome: UpliftModel | None = None,
    min_per_action: int = MIN_PER_ACTION,
) -> GateResult:
    """The candidate policy replaces the incumbent only if the paired 95% interval of their DR value
    difference on ``log`` (a later randomised log neither saw) lies above zero and every action the
    candidate picks was received by at least ``min_per_action`` customers of the log."""
    diff = dr_values(log, candidate, outcome) - dr_values(log, incumbent, outcome)
    gain = float(diff.mean())
    se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else math.inf
    low, high = gain - 1.959964 * se, gain + 1.959964 * se
    samples = {str(a): int((log.received == a).sum()) for a in pd.unique(candidate)}
    thin = sorted(a for a, n in samples.items() if n < min_per_action)
    if thin:
        reason = f"refused: too few customers in the log received {', '.join(thin)} (need {min_per_action})"
    elif low <= 0:
        reason = f"refused: the gain per customer {gain:+,.2f} [{low:+,.2f}, {high:+,.2f}] is not surely above zero"
    else:
        reason = f"accepted: the gain per customer {gain:+,.2f} [{low:+,.2f}, {high:+,.2f}] is above zero"
    return GateResult(not thin and low > 0, gain, low, high, samples, reason)
