"""Planning a retention campaign from the serving store's scores: whom to contact, whom to hold out.

Customers are ranked by the action's expected incremental net value, as scoring weighs actions: the
incremental retention the action buys x what keeping the customer is worth (the value if retained, x the
playbook's margin on a revenue basis only) - its cost. The incremental retention is the champion's learned
effect of the action (``features.bundle.ActionEffects``, from randomised campaigns, admitted by training's
policy gate) when the model that scored the store carries one, else the playbook's prior (churn probability
x success rate); the plan says which was used. Customers scoring flagged do-not-contact (every action's
learned effect is negative) are never in a campaign, not even to explore. Treatment and control are
assigned by a hash of (campaign, customer id): the same plan gives the same groups on any machine, and the
assignment probability of each row is logged, so the campaign can be measured (:mod:`serving.campaigns`)
and learned from. A small exploration share of eligible customers below the ranking's cut joins the
campaign too, so later uplift models see the customers the ranking would never pick. A global holdout (by
a hash of the id alone) is never contacted by any campaign.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.bundle import ModelBundle
from features.campaigns import CONTROL, TREATMENT
from features.errors import ConfigError
from features.io import write_frame_atomic
from serving.actions import Playbook
from serving.encoding import spreadsheet_safe
from serving.store import ScoreStore

LOG_COLUMNS = ("customer_id", "campaign", "action", "assigned_at", "group", "assignment_probability", "cost")


@dataclass(frozen=True)
class Eligibility:
    """Who may be in the campaign at all (every rule must hold)."""

    min_probability: float = 0.0
    min_clv: float = 0.0
    segment: str | None = None
    risk_tier: str | None = None
    recommended_only: bool = False  # only customers whose recommended action is this one

    def describe(self) -> str:
        rules = [f"churn probability >= {self.min_probability:.0%}", f"lifetime value >= {self.min_clv:,.2f}"]
        rules += [f"segment {self.segment}"] if self.segment else []
        rules += [f"risk tier {self.risk_tier}"] if self.risk_tier else []
        rules += ["recommended this action"] if self.recommended_only else []
        return ", ".join(rules)


@dataclass(frozen=True)
class PlanRequest:
    """A campaign to plan: one action for ``count`` treated customers, or as many as ``budget`` pays for."""

    campaign: str
    action: str
    count: int | None = None
    budget: float | None = None
    holdout: float = 0.1
    global_holdout: float = 0.0
    exploration: float = 0.05
    eligibility: Eligibility = field(default_factory=Eligibility)
    assigned_at: date | None = None  # default: the date of the stored scores


@dataclass(frozen=True)
class Plan:
    """The assignments (treatment and control, in the contract's ``campaigns`` form plus the figures behind
    each choice) and the plan's summary (what the store records)."""

    rows: pd.DataFrame
    summary: dict[str, Any]

    @property
    def contacts(self) -> pd.DataFrame:
        """The customers to contact: the treatment group, best first."""
        return self.rows[self.rows["group"] == TREATMENT].reset_index(drop=True)

    def log(self) -> pd.DataFrame:
        """The rows to add to the data folder's ``campaigns`` table, so the campaign can be measured."""
        return self.rows[list(LOG_COLUMNS)]


def unit_hash(*parts: str) -> float:
    """A uniform number in [0, 1) from text (the same as the generator's), stable across runs."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _check(request: PlanRequest, playbook: Playbook) -> float:
    """The action's cost, after refusing requests that cannot make a measurable campaign."""
    actions = {a.name: a for a in playbook.actions}
    if request.action not in actions:
        raise ConfigError(
            f"action {request.action!r} is not in the playbook; use one of {', '.join(actions)}"
        )
    if (request.count is None) == (request.budget is None):
        raise ConfigError("give either --count or --budget")
    for name, share, top in (
        ("holdout", request.holdout, 0.9),
        ("global holdout", request.global_holdout, 0.9),
        ("exploration", request.exploration, 0.5),
    ):
        if not 0.0 <= share <= top:
            raise ConfigError(f"the {name} share is {share}; use a share between 0 and {top}")
    if request.holdout == 0:
        raise ConfigError(
            "a holdout share of 0 leaves no control group: the campaign could never be measured"
        )
    cost = actions[request.action].cost
    if request.budget is not None and cost <= 0:
        raise ConfigError(f"{request.action} costs nothing, so a budget cannot size it: use --count")
    return cost


def _weight(pool: pd.DataFrame, margin: float) -> np.ndarray:
    """A unit of stored value in the business's terms: the playbook's margin on a revenue basis, 1 on a
    contribution basis (that value already nets the margin)."""
    basis = pool["value_basis"] if "value_basis" in pool else pd.Series(None, index=pool.index, dtype=object)
    return np.where(basis == "contribution", 1.0, margin)


def _value_at_stake(pool: pd.DataFrame, margin: float) -> pd.Series:
    """What keeping each customer is worth, as scoring weighs it (:mod:`serving.actions`): the stored value
    at risk (p x the value if retained), else p x clv for stores without it, x :func:`_weight`."""
    naive = pool["churn_probability"] * pool["clv"]
    at_risk = pool["value_at_risk"].astype(float).fillna(naive) if "value_at_risk" in pool else naive
    return at_risk * _weight(pool, margin)


def _retained_value(pool: pd.DataFrame, margin: float) -> np.ndarray:
    """The value if retained x :func:`_weight`: the value at stake over the churn probability (the stored
    clv where that probability is 0)."""
    p = pool["churn_probability"].to_numpy(dtype=float)
    at_stake = _value_at_stake(pool, margin).to_numpy(dtype=float)
    clv = pool["clv"].to_numpy(dtype=float) * _weight(pool, margin)
    return np.where(p > 0, at_stake / np.where(p > 0, p, 1.0), clv)


def _do_not_contact(scores: pd.DataFrame) -> pd.Series:
    """Customers scoring flagged do-not-contact (in their stored action, as the store keeps it: JSON
    text)."""
    if "action" not in scores:
        return pd.Series(False, index=scores.index)

    def flagged(action: object) -> bool:
        if isinstance(action, str) and "do_not_contact" in action:  # most actions never mention it
            action = json.loads(action)
        return bool(isinstance(action, dict) and action.get("do_not_contact"))

    return scores["action"].map(flagged)


_INPUT_CHUNK = 2_000  # customers whose stored inputs one read fetches
# What planning reads of every stored score (ScoreStore.columns: nothing else is fetched or decoded).
PLAN_COLUMNS = (
    "customer_id",
    "as_of",
    "churn_probability",
    "risk_tier",
    "clv",
    "value_at_risk",
    "segment",
    "value_basis",
    "action_name",
    "action",
)


def learned_effect(
    store: ScoreStore, bundle: ModelBundle | None, action: str, ids: list[str]
) -> np.ndarray | None:
    """The champion's learned change in retention from ``action`` for each of ``ids``, from the inputs the
    store kept for them (NaN for a customer without stored inputs); None when the model learned no effect of
    this action (no effects admitted, or not this action)."""
    effects = None if bundle is None else bundle.effects
    if effects is None or action not in effects.actions:
        return None
    stored: dict[str, Any] = {}
    for start in range(0, len(ids), _INPUT_CHUNK):
        rows = store.get_many(ids[start : start + _INPUT_CHUNK], with_inputs=True)
        stored |= {i: r.get("features") for i, r in rows.items()}
    names = [f.name for f in bundle.features]  # type: ignore[union-attr]
    inputs = [stored.get(i) if isinstance(stored.get(i), dict) else None for i in ids]
    frame = pd.DataFrame([row or {} for row in inputs]).reindex(columns=names)
    if not len(frame):
        return np.zeros(0)
    estimate = effects.estimate(bundle.matrix(frame))[:, effects.actions.index(action)]  # type: ignore[union-attr]
    return np.where([row is None for row in inputs], np.nan, estimate)


def plan_campaign(
    store: ScoreStore, playbook: Playbook, request: PlanRequest, bundle: ModelBundle | None = None
) -> Plan:
    """Rank, select, explore and assign (see the module docstring); nothing is written here. ``bundle`` is
    the model that scored the store: its learned effects, if any, replace the playbook's prior."""
    cost = _check(request, playbook)
    action = next(a for a in playbook.actions if a.name == request.action)
    scores = store.columns(PLAN_COLUMNS)
    if scores.empty:
        raise ConfigError("the serving store holds no scores: run `churnguard score --data DIR` first")
    rules = request.eligibility
    eligible = (scores["churn_probability"] >= rules.min_probability) & (scores["clv"] >= rules.min_clv)
    if rules.segment:
        eligible &= scores["segment"] == rules.segment
    if rules.risk_tier:
        eligible &= scores["risk_tier"] == rules.risk_tier
    if rules.recommended_only:
        eligible &= scores["action_name"] == request.action
    ids = scores["customer_id"].astype(str)
    global_holdout = ids.map(lambda i: unit_hash("global-holdout", i)) < request.global_holdout
    do_not_contact = _do_not_contact(scores)
    pool = scores[eligible & ~global_holdout & ~do_not_contact].copy()
    prior = pool["churn_probability"].to_numpy(dtype=float) * action.success_rate
    effect = learned_effect(store, bundle, request.action, pool["customer_id"].astype(str).tolist())
    learned = np.zeros(len(pool), dtype=bool) if effect is None else ~np.isnan(effect)
    pool["incremental_retention"] = (
        prior if effect is None else np.where(learned, np.nan_to_num(effect), prior)
    )
    pool["retained_value"] = _retained_value(pool, playbook.margin)
    pool["learned"] = learned
    pool["expected_net_value"] = pool["incremental_retention"] * pool["retained_value"] - cost
    pool = pool.sort_values(["expected_net_value", "customer_id"], ascending=[False, True])

    wanted = request.count if request.count is not None else int((request.budget or 0.0) // cost)
    size = math.ceil(wanted / (1.0 - request.holdout))
    n_explore = math.ceil(size * request.exploration) if request.exploration > 0 else 0
    worth = pool[pool["expected_net_value"] > 0]
    ranked = worth.head(max(size - n_explore, 0)).assign(reason="ranked")
    rest = pool.drop(ranked.index)
    explore_order = rest["customer_id"].astype(str).map(lambda i: unit_hash(request.campaign, "explore", i))
    explored = rest.loc[explore_order.sort_values().index[:n_explore]].assign(reason="exploration")
    chosen = pd.concat([ranked, explored])
    draw = chosen["customer_id"].astype(str).map(lambda i: unit_hash(request.campaign, i))
    in_control = (draw < request.holdout).to_numpy()
    assigned_at = pd.Timestamp(request.assigned_at or str(scores["as_of"].iloc[0])[:10])
    whys = [_why(row, action.success_rate, cost) for row in chosen.itertuples()]
    rows = pd.DataFrame(
        {
            "customer_id": chosen["customer_id"].astype(str).to_numpy(),
            "campaign": request.campaign,
            "action": request.action,
            "assigned_at": assigned_at,
            "group": [CONTROL if c else TREATMENT for c in in_control],
            "assignment_probability": [request.holdout if c else 1.0 - request.holdout for c in in_control],
            "cost": [0.0 if c else cost for c in in_control],
            "churn_probability": chosen["churn_probability"].to_numpy(),
            "clv": chosen["clv"].to_numpy(),
            "incremental_retention": chosen["incremental_retention"].round(4).to_numpy(),
            "expected_net_value": chosen["expected_net_value"].round(2).to_numpy(),
            "selected_by": chosen["reason"].to_numpy(),
            "why": whys,
        }
    )
    treated = int((~in_control).sum())
    summary = {
        "campaign": request.campaign,
        "action": request.action,
        "assigned_at": str(assigned_at.date()),
        "eligibility": rules.describe(),
        "eligible": len(pool),
        "global_holdout": int(global_holdout.sum()),
        "do_not_contact": int((eligible & ~global_holdout & do_not_contact).sum()),
        "worth_contacting": len(worth),
        "ranked": len(ranked),
        "explored": len(explored),
        "treatment": treated,
        "control": int(in_control.sum()),
        "holdout_share": request.holdout,
        "exploration_share": request.exploration,
        "expected_cost": round(treated * cost, 2),
        "expected_net_value": round(float(rows.loc[~in_control, "expected_net_value"].sum()), 2),
        "estimates": _estimates(effect, learned),
    }
    if len(ranked) < size - n_explore:
        summary["shortfall"] = (
            f"only {len(worth):,} eligible customers have a positive expected net value: the campaign is "
            "smaller than asked"
        )
    return Plan(rows, summary)


def _why(row: Any, success_rate: float, cost: float) -> str:
    """One contact's reason to be in the campaign, in the terms its net value was computed in."""
    if row.learned:
        return (
            f"{row.reason}: {row.incremental_retention:+.1%} retention (learned from randomised campaigns) x "
            f"{row.retained_value:,.2f} value if retained - {cost:,.2f} cost = {row.expected_net_value:,.2f}"
        )
    return (
        f"{row.reason}: {row.churn_probability:.0%} churn risk x {row.clv:,.2f} value x "
        f"{success_rate:.0%} success (playbook prior) - {cost:,.2f} cost = {row.expected_net_value:,.2f}"
    )


def _estimates(effect: np.ndarray | None, learned: np.ndarray) -> str:
    """Which estimates of the action's effect ranked the customers, in words."""
    if effect is None:
        return "playbook prior success rate (no uplift estimates in use)"
    words = "learned uplift effects of the model that scored the store (randomised campaigns)"
    if not learned.all():
        words += f"; {int((~learned).sum()):,} customers without stored inputs: playbook prior success rate"
    return words


def write_contacts(plan: Plan, path: Path) -> None:
    """The CRM's contact list (treatment group only) as CSV; cells that start like a formula get a leading '."""
    columns = ["customer_id", "campaign", "action", "assigned_at", "expected_net_value", "why"]
    contacts = plan.contacts[columns].astype({"assigned_at": str})
    write_frame_atomic(spreadsheet_safe(contacts), Path(path))


def check_log(plan: Plan, path: Path) -> pd.DataFrame | None:
    """The ``campaigns.csv`` at ``path`` (None when absent); refuses one that already holds the plan's
    campaign name, so a plan can be checked against its log before anything is recorded."""
    path = Path(path)
    if not path.exists():
        return None
    existing = pd.read_csv(path, dtype=str)
    if "campaign" in existing.columns and (existing["campaign"] == plan.summary["campaign"]).any():
        raise ConfigError(f"{path} already holds campaign {plan.summary['campaign']!r}: choose another name")
    return existing


def append_log(plan: Plan, path: Path) -> int:
    """Add the plan's assignments to a ``campaigns.csv`` (created if absent); refuses a campaign name the file
    already holds. Returns the rows written."""
    log = plan.log().astype({"assigned_at": str})
    existing = check_log(plan, path)
    if existing is not None:
        log = pd.concat([existing, log.astype(str)], ignore_index=True)
    write_frame_atomic(log, Path(path))
    return len(plan.rows)
