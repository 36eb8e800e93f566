"""Learning what each action changes, from randomised campaign logs, and the gate a new policy must pass.

Three learners on LightGBM, all from features before ``assigned_at``:

* **T-learner**: per action a, the retention outcome of the customers who received a, and of those who
  received nothing; the effect is their difference. Its outcome models also serve the gate's doubly robust
  policy value.
* **DR-learner**: regresses the doubly robust pseudo-outcome (T-learner difference plus
  inverse-propensity weighted residuals) on the features.
* **Pooled learner** (what the bundle carries): a **contact effect** shared by every action, fitted as
  an X-learner on both sides (each contacted customer's outcome less what the control model expected of
  them, and what the model of the contacted expected of each control customer less their outcome; no
  inverse-propensity weights), plus, per action, a difference fitted on the treated side. Why: with a thousand
  customers per arm, the DR pseudo-outcome's 1/propensity terms (about 12 at an 8% arm) drown any
  heterogeneity, while what matters most is shared by every action (customers who churn more when
  contacted at all, "sleeping dogs"). The control model starts from the deployed churn model's retention
  probability (``UpliftLog.baseline``) and learns only its correction from the control group, which
  measures each customer's gain with less noise than a model of the control group alone (the model of
  the contacted starts from it too).

  **Shrinkage by honest cross-fitting**: each effect model (the contact effect, then each action's
  difference) is first fitted on four fifths of its customers and predicts the fifth it never saw; the
  slope of the held-out outcomes on those predictions (within [0, 1]) is the share of the model's
  variation that is signal. The model is then refitted on all of them towards its mean by that share (an
  L2 tree fitted on ``mean + s x (y - mean)`` is the full fit shrunk by ``s``, exactly). A difference
  that does not hold up out of fold shrinks to the action's mean, one that does keeps its shape; a
  fixed heavy shrinkage cannot tell the two apart. On the generator's base world at 20,000 customers
  (the earlier sleeping-dog rule, three seeds, the same deployed model) cross-fitted shrinkage took the
  learned policy from 42% to 45% of the oracle's gain, the baseline start and the control side of the
  contact effect to 47%; the DR- and T-learners stayed between -12% and 20%. Two things make the rest of
  the gap: the features, since a model fitted to each customer's true effect instead of the outcome (no
  noise at all) reaches only 65-68%, and outcome noise below that (benchmarks/bench_uplift.py; with five
  campaigns to learn from instead of two one seed fell from 38% to 9%, so the gate decides what ships).

The policy picks, per customer, the action with the largest expected incremental retention x value - cost;
``no_action`` is always an option, and a customer whose estimated effect of every action is negative is
marked do-not-contact with the reason in words. Without enough randomised history the playbook's priors
stay (the output says which was used).

The gate compares a candidate policy with the incumbent on a later randomised log neither was fitted on:
each policy's doubly robust value per customer (retained value - the action's cost), their paired
difference, and a 95% interval. The candidate replaces the incumbent only if the interval's lower bound is
above zero and every action it chooses was received by enough customers in the log.

:func:`learn_uplift` is the training step: with a campaigns table holding complete outcomes at two dates
or more, it fits on the campaigns older than the newest ones, gates the learned policy against the
incumbent on the newest ones' log, and returns the effect models for the bundle when the gate passes, with
what it found either way (for MLflow, the model card and the bundle's metadata). The incumbent is the
champion's learned policy when the champion ships effects on the same features (refused, the new bundle
keeps the champion's effects), else the playbook's priors (refused, the priors stay).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.bundle import (
    PLAYBOOK_PRIORS,
    UPLIFT_EFFECTS,
    ActionEffects,
    ModelBundle,
    choose_by_effects,
    to_model_input,
)
from features.campaigns import (
    DO_NOTHING,
    Playbook,
    allowed_actions,
    campaign_features,
    campaign_outcomes,
    choose_by_priors,
    received_action,
)

if TYPE_CHECKING:
    from features.loading import Dataset

MIN_PER_ACTION: Final = 200  # customers who received an action before its effect is learned or judged
FOLDS: Final = 5  # cross-fitting folds that measure how much of each effect model holds up
Z95: Final = 1.959964


@dataclass(frozen=True)
class UpliftLog:
    """A randomised log: features from before assignment, the action received, its propensity, the outcome
    (1 = retained) and the customer's value (what retention is worth)."""

    features: pd.DataFrame
    received: np.ndarray
    propensity: np.ndarray
    retained: np.ndarray
    value: np.ndarray
    baseline: np.ndarray | None = None  # the deployed churn model's retention probability, when known


@dataclass
class UpliftModel:
    """Fitted state: the control and per-action outcome models (T-learner), the DR-learner's effect models,
    and the pooled learner's shared contact effect and per-action differences with the share of each that
    held up out of fold (``shrinkage_``, see the module docstring)."""

    actions_: list[str] = field(default_factory=list)
    control_: lgb.LGBMRegressor | None = None
    treated_: dict[str, lgb.LGBMRegressor] = field(default_factory=dict)
    effect_: dict[str, lgb.LGBMRegressor] = field(default_factory=dict)
    contact_: lgb.LGBMRegressor | None = None
    difference_: dict[str, lgb.LGBMRegressor] = field(default_factory=dict)
    skipped_: dict[str, str] = field(default_factory=dict)  # action -> why its prior stays
    shrinkage_: dict[str, float] = field(default_factory=dict)  # "contact" and each action -> kept share

    def fit(self, log: UpliftLog) -> UpliftModel:
        control = log.received == DO_NOTHING
        if control.sum() < MIN_PER_ACTION:
            raise ValueError(f"only {int(control.sum())} customers received nothing; need {MIN_PER_ACTION}")
        self.control_ = _outcome_regressor().fit(log.features[control], log.retained[control])
        mu0 = np.asarray(self.control_.predict(log.features), dtype=np.float64)
        for action in sorted(set(log.received) - {DO_NOTHING}):
            got = log.received == action
            if got.sum() < MIN_PER_ACTION:
                self.skipped_[action] = (
                    f"only {int(got.sum())} customers received it (need {MIN_PER_ACTION}): the playbook's prior stays"
                )
                continue
            treated = _outcome_regressor().fit(log.features[got], log.retained[got])
            mu1 = np.asarray(treated.predict(log.features), dtype=np.float64)
            pseudo = (
                mu1
                - mu0
                + got * (log.retained - mu1) / log.propensity
                - control * (log.retained - mu0) / log.propensity
            )
            keep = got | control
            self.treated_[action] = treated
            self.effect_[action] = _outcome_regressor().fit(log.features[keep], pseudo[keep])
            self.actions_.append(action)
        if self.actions_:
            self._fit_pooled(log, control, mu0)
        return self

    def _fit_pooled(self, log: UpliftLog, control: np.ndarray, mu0: np.ndarray) -> None:
        """The contact effect on every treated customer's outcome less the control model's expectation (the
        control model never saw them), then each action's difference on its own customers, each shrunk by
        what held up out of fold."""
        treated = np.isin(log.received, self.actions_)
        if log.baseline is None:
            mu1 = np.asarray(
                _outcome_regressor().fit(log.features[treated], log.retained[treated]).predict(log.features)
            )
        else:
            mu0 = _retention_model(log, control)
            mu1 = _retention_model(log, treated)
        gained = log.retained - mu0
        # X-learner: the treated measure the contact effect against the control model, the control group
        # against the model of the contacted; each model predicts customers it never saw.
        contact = np.where(treated, gained, mu1 - log.retained)
        self.contact_, self.shrinkage_["contact"] = _shrunk_fit(
            _contact_regressor, log.features, contact, np.flatnonzero(treated | control)
        )
        shared = np.asarray(self.contact_.predict(log.features), dtype=np.float64)
        for action in self.actions_:
            got = np.flatnonzero(log.received == action)
            self.difference_[action], self.shrinkage_[str(action)] = _shrunk_fit(
                _difference_regressor, log.features, gained - shared, got
            )

    def effects(self, features: pd.DataFrame, learner: str = "pooled") -> pd.DataFrame:
        """Estimated change in retention probability per customer (rows) and learned action (columns), by
        the ``pooled`` (default), ``dr`` or ``t`` learner."""
        if self.control_ is None:
            raise ValueError("fit the model first")
        out = {}
        shared = None
        if learner == "pooled" and self.contact_ is not None:
            shared = np.asarray(self.contact_.predict(features), dtype=np.float64)
        for action in self.actions_:
            if learner == "pooled" and shared is not None:
                out[action] = np.clip(shared + self.difference_[action].predict(features), -1.0, 1.0)
            elif learner == "dr":
                out[action] = np.clip(self.effect_[action].predict(features), -1.0, 1.0)
            else:
                treated = np.asarray(self.treated_[action].predict(features), dtype=np.float64)
                out[action] = treated - np.asarray(self.control_.predict(features), dtype=np.float64)
        return pd.DataFrame(out, index=features.index)

    def action_effects(self, playbook: Playbook, basis: str) -> ActionEffects:
        """The pooled learner's models of the playbook's actions, for the bundle, with the economics the
        gate judged them by."""
        costs = playbook.costs()
        kept = [a for a in self.actions_ if a in costs]
        return ActionEffects(
            models={a: self.difference_[a].booster_ for a in kept},
            costs={a: costs[a] for a in kept},
            weight=playbook.weight(basis),
            min_net_value=playbook.min_net_value,
            shared=None if self.contact_ is None else self.contact_.booster_,
        )


def _regressor(trees: int, rate: float, leaves: int, min_rows: int) -> lgb.LGBMRegressor:
    return lgb.LGBMRegressor(
        n_estimators=trees,
        learning_rate=rate,
        num_leaves=leaves,
        min_child_samples=min_rows,
        verbose=-1,
        n_jobs=1,
    )


def _outcome_regressor() -> lgb.LGBMRegressor:
    return _regressor(150, 0.05, 15, 40)


def _contact_regressor() -> lgb.LGBMRegressor:
    """Few, large leaves: the effect is a difference of a few points under an outcome noise of +-0.5."""
    return _regressor(100, 0.03, 4, 500)


def _difference_regressor() -> lgb.LGBMRegressor:
    """Each action has an eighth of the treated customers or fewer: small trees, then shrunk by what held
    up out of fold (:func:`_shrunk_fit`)."""
    return _regressor(100, 0.03, 3, 300)


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-4, 1 - 1e-4)
    return np.asarray(np.log(q / (1 - q)))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def _retention_model(log: UpliftLog, rows: np.ndarray) -> np.ndarray:
    """Every customer's retention probability as the ``rows`` customers' outcomes say: the deployed churn
    model's (``log.baseline``) corrected by a classifier that starts from it."""
    assert log.baseline is not None
    offset = _logit(log.baseline)
    model = lgb.LGBMClassifier(**_outcome_regressor().get_params()).fit(
        log.features[rows], log.retained[rows], init_score=offset[rows]
    )
    return _sigmoid(np.asarray(model.predict_proba(log.features, raw_score=True)) + offset)


def _shrunk_fit(
    make: Callable[[], lgb.LGBMRegressor], x: pd.DataFrame, target: np.ndarray, rows: np.ndarray
) -> tuple[lgb.LGBMRegressor, float]:
    """A model of ``target`` on ``rows``, shrunk towards its mean by the share of its variation that holds
    up out of fold: the slope of the held-out targets on cross-fitted predictions, within [0, 1]."""
    y = target[rows]
    held_out = np.zeros(len(rows))
    order = np.random.default_rng(0).permutation(len(rows))
    for part in np.array_split(order, FOLDS):
        rest = np.setdiff1d(order, part, assume_unique=True)
        held_out[part] = make().fit(x.iloc[rows[rest]], y[rest]).predict(x.iloc[rows[part]])
    spread = held_out - held_out.mean()
    variance = float(spread @ spread)
    kept = 0.0 if variance <= 0 else float(np.clip(spread @ (y - y.mean()) / variance, 0.0, 1.0))
    return make().fit(x.iloc[rows], y.mean() + kept * (y - y.mean())), kept


@dataclass(frozen=True)
class Policy:
    """One action per customer, and why."""

    action: np.ndarray
    do_not_contact: np.ndarray
    why: list[str]
    source: str  # "uplift effects" or "playbook priors"


def choose_actions(effects: pd.DataFrame, value: np.ndarray, costs: dict[str, float]) -> Policy:
    """Argmax over actions of estimated incremental retention x value - cost, with no_action worth 0
    (:func:`features.bundle.choose_by_effects`). A customer every action would push away (all effects
    negative) is do-not-contact."""
    actions = list(effects.columns)
    estimates = effects.to_numpy(dtype=np.float64)
    choice = choose_by_effects(estimates, value, np.array([costs.get(a, 0.0) for a in actions]))
    whys = []
    for i, (b, net, take, harmful) in enumerate(
        zip(choice.best, choice.net, choice.chosen, choice.do_not_contact, strict=True)
    ):
        if harmful:
            worst = actions[int(np.argmin(estimates[i]))]
            whys.append(
                f"do not contact: every action is estimated to lower retention (e.g. {worst} "
                f"{estimates[i, actions.index(worst)]:+.1%}); this customer churns more when contacted"
            )
        elif not take:
            whys.append("no action: no action's expected retained value covers its cost")
        else:
            a = actions[b]
            whys.append(
                f"{a}: {estimates[i, b]:+.1%} retention x {value[i]:,.2f} value - {costs.get(a, 0.0):,.2f} "
                f"cost = {net:,.2f}"
            )
    return Policy(choice.names(actions), choice.do_not_contact, whys, UPLIFT_EFFECTS)


def dr_values(
    log: UpliftLog,
    actions: np.ndarray,
    outcome: UpliftModel | None = None,
    costs: dict[str, float] | None = None,
) -> np.ndarray:
    """Each customer's doubly robust contribution to a policy's value on a randomised log: the outcome
    model's retained value for the policy's action plus the weighted residual where the log's action
    matches it (plain inverse-propensity weighting without an outcome model), less the action's cost."""
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
    spent = np.zeros(len(actions))
    if costs:
        spent = np.array([costs.get(str(a), 0.0) for a in actions], dtype=np.float64)
    return predicted + matched * (reward - predicted) / log.propensity - spent


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
    costs: dict[str, float] | None = None,
) -> GateResult:
    """The candidate policy replaces the incumbent only if the paired 95% interval of their DR value
    difference on ``log`` (a later randomised log neither saw) lies above zero and every action the
    candidate picks was received by at least ``min_per_action`` customers of the log."""
    diff = dr_values(log, candidate, outcome, costs) - dr_values(log, incumbent, outcome, costs)
    gain = float(diff.mean())
    se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else math.inf
    low, high = gain - Z95 * se, gain + Z95 * se
    samples = {str(a): int((log.received == a).sum()) for a in pd.unique(candidate)}
    thin = sorted(a for a, n in samples.items() if n < min_per_action)
    if thin:
        reason = f"refused: too few customers in the log received {', '.join(thin)} (need {min_per_action})"
    elif low <= 0:
        reason = f"refused: the gain per customer {gain:+,.2f} [{low:+,.2f}, {high:+,.2f}] is not surely above zero"
    else:
        reason = f"accepted: the gain per customer {gain:+,.2f} [{low:+,.2f}, {high:+,.2f}] is above zero"
    return GateResult(not thin and low > 0, gain, low, high, samples, reason)


# ------------------------------------------------------------------------------------- the training step


@dataclass(frozen=True, kw_only=True)
class UpliftInputs:
    """What learning the actions' effects needs: the data, its campaigns (None without the table), the
    deployed bundle (features, churn probability and value at each assignment) and the playbook (costs,
    and the incumbent policy)."""

    dataset: Dataset
    campaigns: pd.DataFrame | None
    bundle: ModelBundle
    playbook: Playbook
    horizon_days: int
    champion: ModelBundle | None = None  # the deployed champion: its learned effects are the incumbent


@dataclass(frozen=True)
class UpliftResult:
    """What training decided about the actions: which policy decides, why, the gate's figures and the
    per-action sample sizes; ``effects`` for the bundle when the gate passed."""

    decided_by: str
    reason: str
    effects: ActionEffects | None = None
    gate: GateResult | None = None
    samples: dict[str, dict[str, int]] = field(default_factory=dict)  # {"fit": {...}, "gate": {...}}
    campaigns: dict[str, list[str]] = field(default_factory=dict)  # {"fit": [...], "gate": [...]}
    skipped: dict[str, str] = field(default_factory=dict)
    model: UpliftModel | None = None  # the fitted learners, whatever the gate said (benchmarks read them)

    @property
    def used(self) -> bool:
        return self.effects is not None

    def summary(self) -> str:
        """One line for the training output."""
        return f"actions decided by {self.decided_by}: {self.reason}"

    def metadata(self) -> dict[str, Any]:
        """The bundle's (and the model card's) record."""
        gate_result = self.gate
        return {
            "used": self.used,
            "decided_by": self.decided_by,
            "reason": self.reason,
            "learner": "pooled (shared contact effect + per-action differences, shrunk by cross-fitting)"
            if self.used
            else None,
            "shrinkage": None if self.model is None else dict(self.model.shrinkage_),
            "actions": [] if self.effects is None else self.effects.actions,
            "campaigns": self.campaigns,
            "samples": self.samples,
            "skipped": self.skipped,
            "gate": None
            if gate_result is None
            else {
                "accepted": gate_result.accepted,
                "gain_per_customer": gate_result.gain,
                "low": gate_result.low,
                "high": gate_result.high,
                "reason": gate_result.reason,
            },
        }

    def mlflow_metrics(self) -> dict[str, float]:
        metrics = {"uplift.used": float(self.used)}
        if self.gate is not None:
            metrics |= {
                "uplift.gate_gain_per_customer": self.gate.gain,
                "uplift.gate_low": self.gate.low,
                "uplift.gate_high": self.gate.high,
            }
        for part, counts in self.samples.items():
            metrics |= {f"uplift.samples_{part}.{a}": float(n) for a, n in counts.items()}
        return {k: v for k, v in metrics.items() if math.isfinite(v)}

    def mlflow_params(self) -> dict[str, str]:
        return {
            "uplift.decided_by": self.decided_by,
            "uplift.reason": self.reason[:500],
            "uplift.actions": ",".join([] if self.effects is None else self.effects.actions) or "-",
            "uplift.fit_campaigns": ",".join(self.campaigns.get("fit", [])) or "-",
            "uplift.gate_campaigns": ",".join(self.campaigns.get("gate", [])) or "-",
        }


def _priors(reason: str, **found: Any) -> UpliftResult:
    return UpliftResult(PLAYBOOK_PRIORS, f"the playbook's priors stay: {reason}", **found)


@dataclass(frozen=True)
class _Logged:
    """A randomised log with what the policies need about its customers."""

    log: UpliftLog
    matrix: np.ndarray
    probability: np.ndarray
    value_at_risk: np.ndarray  # p x the value if retained, before the margin (the priors' input)
    lifetime: np.ndarray
    campaigns: list[str]


def campaign_log(inputs: UpliftInputs, rows: pd.DataFrame) -> _Logged:
    """The campaigns ``rows`` (with outcomes and point-in-time features) as a randomised log; the value of
    retaining a customer is the bundle's value if retained at the assignment, in the playbook's terms."""
    bundle, playbook = inputs.bundle, inputs.playbook
    basis = "revenue" if bundle.value_model is None else bundle.value_model.basis
    matrix = bundle.matrix(rows)
    probability = bundle.probability(bundle.churn_raw(matrix))
    revenue = bundle.revenue(matrix)
    value = bundle.customer_value(rows, probability, revenue)
    retained_value = bundle.retained_value(value, revenue)
    log = UpliftLog(
        features=to_model_input(rows, bundle.features),
        received=received_action(rows).to_numpy(dtype=object),
        propensity=rows["assignment_probability"].to_numpy(dtype=np.float64),
        retained=1.0 - rows["churned"].to_numpy(dtype=np.float64),
        value=retained_value * playbook.weight(basis),
        baseline=1.0 - probability,
    )
    lifetime = np.full(len(rows), np.nan) if value is None else value.residual_value
    return _Logged(
        log,
        matrix,
        probability,
        probability * retained_value,
        lifetime,
        sorted(rows["campaign"].astype(str).unique()),
    )


def playbook_policy(inputs: UpliftInputs, logged: _Logged) -> np.ndarray:
    """What the playbook's priors choose for the log's customers (as scoring without effects would)."""
    bundle, playbook = inputs.bundle, inputs.playbook
    groups = bundle.risk_groups(logged.matrix, bundle.contributions(logged.matrix))
    basis = "revenue" if bundle.value_model is None else bundle.value_model.basis
    choice = choose_by_priors(
        playbook,
        logged.value_at_risk,
        allowed_actions(playbook.actions, groups),
        basis=basis,
        lifetime=logged.lifetime,
    )
    return choice.names(playbook)


def champion_effects(inputs: UpliftInputs) -> ActionEffects | None:
    """The champion's learned effects, when it has them and reads the same features as the new bundle (its
    models then apply to the new bundle's inputs as they are); None: the playbook's priors are the
    incumbent."""
    champion = inputs.champion
    if champion is None or champion.effects is None:
        return None
    same = [(f.name, f.categories) for f in champion.features] == [
        (f.name, f.categories) for f in inputs.bundle.features
    ]
    return champion.effects if same else None


def _effects_choice(
    actions: list[str], estimates: np.ndarray, inputs: UpliftInputs, logged: _Logged
) -> np.ndarray:
    """What estimated effects (rows x ``actions``) choose for the log's customers, with the playbook's costs
    and only its actions (as scoring would)."""
    costs = inputs.playbook.costs()
    kept = [j for j, action in enumerate(actions) if action in costs]
    choice = choose_by_effects(
        np.asarray(estimates, dtype=np.float64)[:, kept],
        logged.log.value,
        np.array([costs[actions[j]] for j in kept]),
        min_net_value=inputs.playbook.min_net_value,
        lifetime=logged.lifetime,
    )
    return choice.names([actions[j] for j in kept])


def effects_policy(effects: ActionEffects, inputs: UpliftInputs, logged: _Logged) -> np.ndarray:
    """What shipped effects (the champion's) choose for the log's customers."""
    return _effects_choice(effects.actions, effects.estimate(logged.matrix), inputs, logged)


def learned_policy(model: UpliftModel, inputs: UpliftInputs, logged: _Logged) -> np.ndarray:
    """What the learned effects choose for the log's customers."""
    effects = model.effects(logged.log.features)
    return _effects_choice(list(effects.columns), effects.to_numpy(dtype=np.float64), inputs, logged)


def _counts(received: np.ndarray) -> dict[str, int]:
    names, counts = np.unique(received.astype(str), return_counts=True)
    return {str(a): int(n) for a, n in zip(names, counts, strict=True)}


def learn_uplift(inputs: UpliftInputs) -> UpliftResult:
    """Fit on the older campaigns, gate on the newest (see the module docstring)."""
    campaigns = inputs.campaigns
    if campaigns is None or campaigns.empty:
        return _priors("the data folder has no campaigns table")
    window_end = pd.to_datetime(campaigns["assigned_at"]) + pd.Timedelta(days=inputs.horizon_days)
    ended = campaigns[(window_end <= inputs.dataset.last_date + pd.Timedelta(days=1)).to_numpy()]
    if ended.empty:
        return _priors(f"no campaign's {inputs.horizon_days}-day outcome window has ended yet")
    dates = sorted(pd.to_datetime(ended["assigned_at"]).unique())
    if len(dates) < 2:
        return _priors(
            "the campaigns whose outcomes have ended were assigned on one date only; learning needs older "
            "campaigns to learn from and a newer one to judge the learned policy on"
        )
    outcomes = campaign_outcomes(inputs.dataset, ended, inputs.horizon_days)
    rows = campaign_features(inputs.dataset, ended)
    rows = rows.assign(churned=outcomes.loc[rows.index, "churned"].to_numpy(dtype=bool))
    newest = pd.to_datetime(rows["assigned_at"]) == dates[-1]
    fit = campaign_log(inputs, rows[~newest.to_numpy()])
    judge = campaign_log(inputs, rows[newest.to_numpy()])
    samples = {"fit": _counts(fit.log.received), "gate": _counts(judge.log.received)}
    found: dict[str, Any] = {"samples": samples, "campaigns": {"fit": fit.campaigns, "gate": judge.campaigns}}
    if samples["fit"].get(DO_NOTHING, 0) < MIN_PER_ACTION:
        return _priors(
            f"only {samples['fit'].get(DO_NOTHING, 0)} customers of the older campaigns received nothing "
            f"(a control group); learning needs {MIN_PER_ACTION}",
            **found,
        )
    model = UpliftModel().fit(fit.log)
    found |= {"skipped": dict(model.skipped_), "model": model}
    if not any(a in inputs.playbook.costs() for a in model.actions_):
        return _priors(
            f"no playbook action was received by {MIN_PER_ACTION} customers of the older campaigns", **found
        )
    incumbent = champion_effects(inputs)
    verdict = gate(
        judge.log,
        learned_policy(model, inputs, judge),
        playbook_policy(inputs, judge) if incumbent is None else effects_policy(incumbent, inputs, judge),
        outcome=model,
        costs=inputs.playbook.costs(),
    )
    found["gate"] = verdict
    if not verdict.accepted and incumbent is not None:
        reason = f"the champion's learned policy stays: the new one did not beat it ({verdict.reason})"
        return UpliftResult(UPLIFT_EFFECTS, reason, incumbent, **found)
    if not verdict.accepted:
        return _priors(f"the learned policy did not pass the gate ({verdict.reason})", **found)
    basis = "revenue" if inputs.bundle.value_model is None else inputs.bundle.value_model.basis
    effects = model.action_effects(inputs.playbook, basis)
    against = "the playbook's priors" if incumbent is None else "the champion's learned policy"
    reason = f"the learned policy passed the gate against {against} ({verdict.reason})"
    return UpliftResult(UPLIFT_EFFECTS, reason, effects, **found)
