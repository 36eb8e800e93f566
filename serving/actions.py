"""Choosing the retention action worth taking, from a playbook of actions, costs and success rates.

Loyal is not the same as profitable: an action is recommended only when its expected net value,
value at risk x success rate - cost, beats the playbook's minimum. Value at risk is the churn probability
x the customer's lifetime value if retained (:mod:`features.value`); on a revenue basis it is weighed by
the playbook's ``margin``, on a contribution basis (an economics config) the margin is already in it.
Customers whose expected contribution over the relationship is <= 0 are a graceful exit: never a paid
action. Otherwise the answer is "no action", with the figures that say why.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from features.errors import ConfigError
from serving.encoding import ActionText, encode_decisions

NO_ACTION = "no_action"


class Action(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str
    description: str = ""
    addresses: tuple[str, ...] = Field(min_length=1)
    cost: float = Field(ge=0)
    success_rate: float = Field(gt=0, le=1)


class Playbook(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    margin: float = Field(default=1.0, gt=0, le=1)
    min_net_value: float = 0.0
    actions: tuple[Action, ...] = Field(min_length=1)


@lru_cache(maxsize=8)
def load_playbook(path: Path | None = None) -> Playbook:
    """The shipped default playbook, or the YAML file at ``path``."""
    try:
        if path is None:
            text = (Path(__file__).parent / "playbook.yaml").read_text(encoding="utf-8")
            where = "the default playbook"
        else:
            text = Path(path).read_text(encoding="utf-8")
            where = str(path)
        return Playbook.model_validate(yaml.safe_load(text))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the playbook ({exc})") from exc
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{where}: " + "; ".join(lines)) from None


@dataclass(frozen=True)
class Decisions:
    """One decision per customer, encoded once: the action as JSON text (what a file or the store keeps,
    see :func:`serving.encoding.encode_decisions`), and apart the two fields customer lists sort and filter
    on: its name and expected net value."""

    text: list[str]
    name: list[str]
    expected_net_value: list[float]

    def as_dicts(self) -> list[dict[str, object]]:
        return [json.loads(text) for text in self.text]


_DECLINED = ActionText(NO_ACTION, "No action", "", 0.0, 0.0)


def _allowed(actions: Sequence[Action], risk_groups: Sequence[AbstractSet[str]]) -> np.ndarray:
    """(customers, actions): which actions address one of each customer's risk groups (the engagement
    actions when none does); worked out once per distinct set of groups."""
    known: dict[AbstractSet[str], int] = {}  # distinct sets of risk groups -> row of ``allowed``
    allowed: list[list[bool]] = []
    rows = []
    for groups in risk_groups:
        row = known.get(groups) if isinstance(groups, Hashable) else None
        if row is None:
            answer = [not groups.isdisjoint(a.addresses) for a in actions]
            if not any(answer):
                answer = ["engagement" in a.addresses for a in actions]
            if not any(answer):
                raise ConfigError(
                    "the playbook has no action for engagement reasons to fall back on: "
                    "add one whose 'addresses' include 'engagement'"
                )
            row = len(allowed)
            allowed.append(answer)
            if isinstance(groups, Hashable):
                known[groups] = row
        rows.append(row)
    return np.array(allowed, dtype=bool).reshape(-1, len(actions))[np.asarray(rows, dtype=np.intp)]


def decide_actions(
    playbook: Playbook,
    probability: np.ndarray,
    value_at_risk: np.ndarray,
    risk_groups: Sequence[AbstractSet[str]],
    *,
    basis: str = "revenue",
    lifetime: np.ndarray | None = None,
) -> Decisions:
    """The best action for the reasons that raise each customer's risk, or no action.

    ``value_at_risk`` is p(churn) x the value if retained, per customer. Candidates are the actions
    addressing one of the customer's risk groups (engagement actions when none does); the best is the
    first with the highest expected net value, recommended only above the playbook's minimum. A customer
    whose ``lifetime`` value is <= 0 gets no paid action whatever the figures (graceful exit)."""
    actions = playbook.actions
    weight = playbook.margin if basis == "revenue" else 1.0
    at_stake = value_at_risk * weight
    exits = np.zeros(len(at_stake), dtype=bool) if lifetime is None else lifetime <= 0
    net = at_stake[:, None] * np.array([a.success_rate for a in actions]) - np.array(
        [a.cost for a in actions]
    )
    best = np.argmax(np.where(_allowed(actions, risk_groups), net, -np.inf), axis=1)
    best_net = np.take_along_axis(net, best[:, None], axis=1)[:, 0]
    margin = f" x {weight:.0%} margin" if weight < 1 else ""
    success = [f" x {a.success_rate:.0%} success - {a.cost:,.2f} cost = " for a in actions]
    declined = len(actions)  # index of _DECLINED in the encoder's list
    chosen, whys, names, values = [], [], [], []
    lifetimes = [None] * len(at_stake) if lifetime is None else lifetime.tolist()
    for p, value, b, n, life, leave in zip(
        probability.tolist(),
        value_at_risk.tolist(),
        best.tolist(),
        best_net.tolist(),
        lifetimes,
        exits.tolist(),
        strict=True,
    ):
        figures = f"{p:.0%} churn risk, {value:,.2f} {basis} at risk{margin}{success[b]}{n:,.2f}"
        if leave:
            chosen.append(declined)
            whys.append(
                f"Graceful exit: this customer's expected {basis} over the rest of the relationship is "
                f"{life:,.2f}, so what they bring does not cover what serving them costs; no paid "
                "action is worth making."
            )
            names.append(NO_ACTION)
            values.append(0.0)
        elif n > playbook.min_net_value:
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
    return Decisions(encode_decisions(forms, chosen, values, whys), names, values)


def choose_actions(
    playbook: Playbook,
    probability: np.ndarray,
    value_at_risk: np.ndarray,
    risk_groups: Sequence[AbstractSet[str]],
) -> list[dict[str, object]]:
    """One decision per customer as a dict: name, label, description, expected_net_value, cost,
    success_rate and why (the figures behind the choice, in words)."""
    return decide_actions(playbook, probability, value_at_risk, risk_groups).as_dicts()
