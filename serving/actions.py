"""Choosing the retention action worth taking: by what the actions were learned to change, or by the
playbook's priors.

Loyal is not the same as profitable: an action is recommended only when its expected net value beats the
playbook's minimum. With a bundle that carries **uplift effects** (learned from randomised campaigns and
admitted by training's policy gate), the expected net value is the estimated change in retention x the
value if retained - cost, among the actions the effects cover, and a customer every action is estimated
to push away is marked **do not contact** (never a paid action). Without them the **playbook's priors**
decide: value at risk x success rate - cost, among the actions answering the customer's reasons. Value
at risk is the churn probability x the customer's lifetime value if retained (:mod:`features.value`); on a
revenue basis it is weighed by the playbook's ``margin``, on a contribution basis (an economics config)
the margin is already in it. Customers whose expected contribution over the relationship is <= 0 are a
graceful exit: never a paid action. Every decision says which of the two decided (``decided_by``).

The playbook itself (its schema and the shipped file) lives in :mod:`features.campaigns`, which training
reads too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import numpy as np

from features.bundle import PLAYBOOK_PRIORS, UPLIFT_EFFECTS, choose_by_effects
from features.campaigns import (
    DO_NOTHING,
    Action,
    Playbook,
    allowed_actions,
    choose_by_priors,
    load_playbook,
)
from serving.encoding import ActionText, encode_decisions, float_json

NO_ACTION = DO_NOTHING

__all__ = [
    "NO_ACTION",
    "Action",
    "Decisions",
    "Effects",
    "Playbook",
    "choose_actions",
    "decide_actions",
    "load_playbook",
]


@dataclass(frozen=True)
class Decisions:
    """One decision per customer, encoded once: the action as JSON text (what a file or the store keeps,
    see :func:`serving.encoding.encode_decisions`, plus ``decided_by``, ``do_not_contact`` and
    ``incremental_retention``), and apart the two fields customer lists sort and filter on: its name and
    expected net value."""

    text: list[str]
    name: list[str]
    expected_net_value: list[float]

    def as_dicts(self) -> list[dict[str, object]]:
        return [json.loads(text) for text in self.text]


@dataclass(frozen=True)
class Effects:
    """The bundle's learned effects for a block of customers: the estimated change in retention
    probability, rows x ``actions``, and each customer's value if retained (before the margin)."""

    actions: list[str]
    estimates: np.ndarray
    retained_value: np.ndarray


_DECLINED = ActionText(NO_ACTION, "No action", "", 0.0, 0.0)


def _graceful_exit(basis: str, life: float) -> str:
    return (
        f"Graceful exit: this customer's expected {basis} over the rest of the relationship is "
        f"{life:,.2f}, so what they bring does not cover what serving them costs; no paid "
        "action is worth making."
    )


def _with_source(
    texts: list[str], decided_by: str, do_not_contact: Sequence[bool], effect: Sequence[float | None]
) -> list[str]:
    """Each decision's JSON text with ``decided_by``, ``do_not_contact`` and ``incremental_retention``
    added (byte for byte what ``json.dumps`` writes for those keys after the others)."""
    source = json.dumps(decided_by)
    return [
        f'{t[:-1]}, "decided_by": {source}, "do_not_contact": {"true" if d else "false"}, '
        f'"incremental_retention": {"null" if e is None else float_json(e)}}}'
        for t, d, e in zip(texts, do_not_contact, effect, strict=True)
    ]


def decide_actions(
    playbook: Playbook,
    probability: np.ndarray,
    value_at_risk: np.ndarray,
    risk_groups: Sequence[AbstractSet[str]],
    *,
    basis: str = "revenue",
    lifetime: np.ndarray | None = None,
    effects: Effects | None = None,
) -> Decisions:
    """The best action per customer, or no action (see the module docstring).

    ``value_at_risk`` is p(churn) x the value if retained, per customer; ``effects`` the bundle's learned
    effects, when it has any: they decide whenever one of their actions is in the playbook. A customer
    whose ``lifetime`` value is <= 0 gets no paid action whatever the figures (graceful exit)."""
    if effects is not None:
        known = {a.name for a in playbook.actions}
        columns = [j for j, a in enumerate(effects.actions) if a in known]
        if columns:
            return _decide_by_effects(playbook, effects, columns, basis=basis, lifetime=lifetime)
    return _decide_by_priors(
        playbook, probability, value_at_risk, risk_groups, basis=basis, lifetime=lifetime
    )


def _decide_by_priors(
    playbook: Playbook,
    probability: np.ndarray,
    value_at_risk: np.ndarray,
    risk_groups: Sequence[AbstractSet[str]],
    *,
    basis: str,
    lifetime: np.ndarray | None,
) -> Decisions:
    actions = playbook.actions
    weight = playbook.weight(basis)
    prior = choose_by_priors(
        playbook, value_at_risk, allowed_actions(actions, risk_groups), basis=basis, lifetime=lifetime
    )
    margin = f" x {weight:.0%} margin" if weight < 1 else ""
    success = [f" x {a.success_rate:.0%} success - {a.cost:,.2f} cost = " for a in actions]
    declined = len(actions)  # index of _DECLINED in the encoder's list
    chosen, whys, names, values = [], [], [], []
    lifetimes = [None] * len(value_at_risk) if lifetime is None else lifetime.tolist()
    for p, value, b, n, life, leave, take in zip(
        probability.tolist(),
        value_at_risk.tolist(),
        prior.best.tolist(),
        prior.net.tolist(),
        lifetimes,
        prior.exits.tolist(),
        prior.chosen.tolist(),
        strict=True,
    ):
        figures = f"{p:.0%} churn risk, {value:,.2f} {basis} at risk{margin}{success[b]}{n:,.2f}"
        if leave:
            chosen.append(declined)
            whys.append(_graceful_exit(basis, life))
            names.append(NO_ACTION)
            values.append(0.0)
        elif take:
            chosen.append(b)
            whys.append(f"Worth it: {figures}.")
            names.append(actions[b].name)
            values.append(round(n, 2))
        else:
            chosen.append(declined)
            whys.append(
                f"Not worth an offer: the best option, {actions[b].label.lower()}, would return {figures}."
            )
            names.append(NO_ACTION)
            values.append(0.0)
    forms = [
        *(ActionText(a.name, a.label, a.description, a.cost, a.success_rate) for a in actions),
        _DECLINED,
    ]
    text = encode_decisions(forms, chosen, values, whys)
    n_rows = len(text)
    return Decisions(_with_source(text, PLAYBOOK_PRIORS, [False] * n_rows, [None] * n_rows), names, values)


def _decide_by_effects(
    playbook: Playbook, effects: Effects, columns: list[int], *, basis: str, lifetime: np.ndarray | None
) -> Decisions:
    """The learned policy (:func:`features.bundle.choose_by_effects`) with the playbook's costs and labels,
    among the playbook's actions the effects cover."""
    by_name = {a.name: (i, a) for i, a in enumerate(playbook.actions)}
    names_in = [effects.actions[j] for j in columns]
    weight = playbook.weight(basis)
    choice = choose_by_effects(
        effects.estimates[:, columns],
        effects.retained_value * weight,
        np.array([by_name[a][1].cost for a in names_in]),
        min_net_value=playbook.min_net_value,
        lifetime=lifetime,
    )
    margin = f" x {weight:.0%} margin" if weight < 1 else ""
    declined = len(playbook.actions)
    chosen, whys, names, values, effect_out = [], [], [], [], []
    lifetimes = [None] * len(choice.best) if lifetime is None else lifetime.tolist()
    for b, n, e, value, life, take, harmful, leave in zip(
        choice.best.tolist(),
        choice.net.tolist(),
        choice.effect.tolist(),
        effects.retained_value.tolist(),
        lifetimes,
        choice.chosen.tolist(),
        choice.do_not_contact.tolist(),
        choice.exits.tolist(),
        strict=True,
    ):
        index, action = by_name[names_in[b]]
        figures = (
            f"{e:+.1%} retention x {max(value, 0.0):,.2f} {basis} if retained{margin} - "
            f"{action.cost:,.2f} cost = {n:,.2f}"
        )
        if harmful:
            chosen.append(declined)
            whys.append(
                "Do not contact: every action is estimated to lower this customer's retention (even the "
                f"best of them, {action.label.lower()}, {e:+.1%}); customers like this churn more when contacted, "
                "so no action is taken (estimated from randomised campaigns)."
            )
            names.append(NO_ACTION)
            values.append(0.0)
            effect_out.append(0.0)
        elif leave:
            chosen.append(declined)
            whys.append(_graceful_exit(basis, life))
            names.append(NO_ACTION)
            values.append(0.0)
            effect_out.append(0.0)
        elif take:
            chosen.append(index)
            whys.append(f"Worth it, by the effect measured in randomised campaigns: {figures}.")
            names.append(action.name)
            values.append(round(n, 2))
            effect_out.append(round(e, 4))
        else:
            chosen.append(declined)
            whys.append(
                f"Not worth an offer, by the effects measured in randomised campaigns: the best option, "
                f"{action.label.lower()}, would return {figures}."
            )
            names.append(NO_ACTION)
            values.append(0.0)
            effect_out.append(0.0)
    forms = [
        *(ActionText(a.name, a.label, a.description, a.cost, a.success_rate) for a in playbook.actions),
        _DECLINED,
    ]
    text = encode_decisions(forms, chosen, values, whys)
    dnc = choice.do_not_contact.tolist()
    return Decisions(_with_source(text, UPLIFT_EFFECTS, dnc, effect_out), names, values)


def choose_actions(
    playbook: Playbook,
    probability: np.ndarray,
    value_at_risk: np.ndarray,
    risk_groups: Sequence[AbstractSet[str]],
) -> list[dict[str, object]]:
    """One decision per customer as a dict: name, label, description, expected_net_value, cost,
    success_rate, why (the figures behind the choice, in words), decided_by, do_not_contact and
    incremental_retention."""
    return decide_actions(playbook, probability, value_at_risk, risk_groups).as_dicts()
