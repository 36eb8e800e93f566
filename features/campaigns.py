"""Retention campaigns: the ``campaigns`` table, its outcomes and its point-in-time features.

A row says that ``customer_id`` was put in ``group`` (treatment: given ``action``; control: held out of it)
of ``campaign`` at ``assigned_at``, with ``assignment_probability`` the chance of landing in that group.
``no_action`` is an ordinary action: a randomised log may give it to a customer on purpose. A customer is
in at most one arm of a campaign. The action a customer really received is :func:`received_action`.

Outcomes come from the feature tables after ``assigned_at`` (churned within the horizon, spend in it, as
the churn label counts them) and features from before it, so a model of a campaign's effect never sees what
happened after the assignment. Loading refuses a malformed file with one
:class:`~features.errors.DataValidationError` naming the file, the column, the rows and the fix.

The **playbook** is the catalogue of actions a campaign or a score may recommend: name, label, cost, the
reason families it addresses and a prior success rate somebody typed in. Training (which learns what the
actions really change, and gates that policy against the playbook's) and serving (which scores with it)
read the same file through :func:`load_playbook`; :func:`choose_by_priors` is the playbook's own policy,
value at risk x success rate - cost among the actions that answer the customer's reasons.
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from features.contract import CAMPAIGNS
from features.errors import ConfigError, DataProblem, DataValidationError

if (
    TYPE_CHECKING
):  # loading pulls in the validation stack; scoring (which reads the playbook) needs none of it
    from features.loading import Dataset

DO_NOTHING: Final = "no_action"  # the same name as serving.actions.NO_ACTION
TREATMENT: Final = "treatment"
CONTROL: Final = "control"
GROUPS: Final = (TREATMENT, CONTROL)
DEFAULT_HORIZON_DAYS: Final = 90
_ACTION_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
PLAYBOOK_ENV: Final = "CHURNGUARD_PLAYBOOK"
# The shipped playbook lives beside the serving code that documents it; read as a file, never imported.
SHIPPED_PLAYBOOK: Final = Path(__file__).resolve().parents[1] / "serving" / "playbook.yaml"

__all__ = [
    "CAMPAIGNS",
    "CONTROL",
    "DEFAULT_HORIZON_DAYS",
    "DO_NOTHING",
    "GROUPS",
    "TREATMENT",
    "Action",
    "Playbook",
    "PriorChoice",
    "allowed_actions",
    "campaign_features",
    "campaign_outcomes",
    "check_campaigns",
    "choose_by_priors",
    "load_campaigns",
    "load_playbook",
    "playbook_from_env",
    "received_action",
]


def load_campaigns(
    data_dir: Path,
    mapping_file: Path | None = None,
    *,
    customers: pd.Series | None = None,
    now: datetime | None = None,
) -> pd.DataFrame | None:
    """The data folder's ``campaigns`` table checked against the contract, or None when there is none.

    ``customers`` (the known customer ids, e.g. ``dataset.customers.customer_id`` when the folder has a
    customers table) makes an assignment of an unknown customer an error. Every problem is raised together.
    """
    from features.loading import load_extra_table

    loaded = load_extra_table(Path(data_dir), CAMPAIGNS, mapping_file, now=now)
    if loaded is None:
        return None
    frame, path = loaded
    frame = frame.assign(
        group=frame["group"].astype(str).str.strip().str.lower(),
        action=frame["action"].astype(str),
        campaign=frame["campaign"].astype(str),
    )
    problems = check_campaigns(frame, str(path), customers)
    if problems:
        raise DataValidationError(problems)
    return frame.reset_index(drop=True)


def check_campaigns(frame: pd.DataFrame, where: str, customers: pd.Series | None = None) -> list[DataProblem]:
    """What breaks the campaign rules beyond column types (which the loader checks): groups, action names,
    probabilities, one arm per customer and campaign, known customers."""
    problems: list[DataProblem] = []

    def flag(bad: pd.Series, column: str, problem: str, hint: str) -> None:
        if bad.any():
            examples = list(pd.unique(frame.loc[bad, column].astype(str)))[:5]
            problems.append(DataProblem(where, column, problem, hint, int(bad.sum()), examples))

    flag(
        ~frame["group"].isin(GROUPS),
        "group",
        "has values other than treatment and control",
        "write 'treatment' for customers given the action and 'control' for those held out",
    )
    flag(
        ~frame["action"].map(lambda a: bool(_ACTION_NAME.match(a))),
        "action",
        "has names that are not lower-case words joined by _",
        f"use the playbook's action names (e.g. service_recovery_call), or {DO_NOTHING} for doing nothing",
    )
    flag(
        ~(frame["assignment_probability"] > 0),
        "assignment_probability",
        "has probabilities of 0: nobody could have landed in that group",
        "log the probability the assignment used (e.g. 0.9 for treatment, 0.1 for control)",
    )
    twice = frame.duplicated(["campaign", "customer_id"], keep=False)
    flag(
        twice,
        "customer_id",
        "assigns the same customer more than once in one campaign",
        "keep one row per customer and campaign (one arm each); use a new campaign name for a new wave",
    )
    if customers is not None and len(customers):
        unknown = ~frame["customer_id"].isin(pd.Index(customers.astype(str)))
        flag(
            unknown,
            "customer_id",
            "has ids that are not in customers",
            "assign only customers of the customers table, or add them to it",
        )
    return problems


def received_action(campaigns: pd.DataFrame) -> pd.Series:
    """The action each row's customer really received: the arm's action in treatment, nothing in control."""
    treated = (campaigns["group"] == TREATMENT).to_numpy()
    return pd.Series(
        np.where(treated, campaigns["action"].astype(str), DO_NOTHING), index=campaigns.index, name="received"
    )


def campaign_outcomes(
    dataset: Dataset, campaigns: pd.DataFrame, horizon_days: int = DEFAULT_HORIZON_DAYS
) -> pd.DataFrame:
    """Each assignment with its outcome in ``[assigned_at, assigned_at + horizon)``, as the churn label counts it.

    Adds ``churned`` (no purchase in the window or a cancellation in it), ``future_spend`` (net spend in it),
    ``known`` (the customer was active at ``assigned_at``; an assigned customer who was not, e.g. lapsed
    for over a year, counts as churned with no spend) and ``complete`` (the data reach past the window's end;
    an incomplete window undercounts purchases and must not be reported as a result).
    """
    from features.engine import compute_labels  # DuckDB and Ibis only when outcomes are computed

    parts = []
    data_end = dataset.last_date
    for moment, rows in campaigns.groupby("assigned_at", sort=True):
        at = pd.Timestamp(moment)
        labels = compute_labels(dataset, at, horizon_days)[["customer_id", "churned", "future_spend"]]
        merged = rows.merge(labels.assign(known=True), on="customer_id", how="left")
        merged["known"] = merged["known"].fillna(False).astype(bool)
        merged["churned"] = merged["churned"].fillna(True).astype(bool)
        merged["future_spend"] = merged["future_spend"].fillna(0.0).astype(float)
        merged["complete"] = at + pd.Timedelta(days=horizon_days) <= data_end + pd.Timedelta(days=1)
        merged.index = rows.index
        parts.append(merged)
    if not parts:
        return campaigns.assign(churned=[], future_spend=[], known=[], complete=[])
    return pd.concat(parts).loc[campaigns.index]


def campaign_features(dataset: Dataset, campaigns: pd.DataFrame) -> pd.DataFrame:
    """Each assignment of a customer active at its ``assigned_at`` with the features computed from events
    strictly before ``assigned_at`` (point in time: nothing after the assignment can leak into a model of
    its effect). Assignments of customers not active then are left out."""
    from features.engine import compute_features

    parts = []
    for moment, rows in campaigns.groupby("assigned_at", sort=True):
        features = compute_features(dataset, pd.Timestamp(moment))
        features = features.drop(
            columns=[c for c in campaigns.columns if c != "customer_id"], errors="ignore"
        )
        merged = rows.reset_index().merge(features, on="customer_id", how="inner").set_index("index")
        parts.append(merged)
    if not parts:
        return campaigns.iloc[0:0]
    out = pd.concat(parts)
    out.index.name = None
    return out.sort_index()


# ------------------------------------------------------------------------------------------- the playbook


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

    def costs(self) -> dict[str, float]:
        return {a.name: a.cost for a in self.actions}

    def weight(self, basis: str) -> float:
        """What a unit of value is worth to the business: the margin on a revenue basis, 1 on contribution."""
        return self.margin if basis == "revenue" else 1.0


@lru_cache(maxsize=8)
def load_playbook(path: Path | None = None) -> Playbook:
    """The shipped default playbook, or the YAML file at ``path``."""
    try:
        if path is None:
            text = SHIPPED_PLAYBOOK.read_text(encoding="utf-8")
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


def playbook_from_env() -> Playbook:
    """The playbook serving uses: the file named by ``CHURNGUARD_PLAYBOOK``, else the shipped one."""
    chosen = os.environ.get(PLAYBOOK_ENV) or None
    return load_playbook(None if chosen is None else Path(chosen))


def allowed_actions(actions: Sequence[Action], risk_groups: Sequence[AbstractSet[str]]) -> np.ndarray:
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


@dataclass(frozen=True)
class PriorChoice:
    """The playbook's policy per customer: the best action among those answering the customer's reasons
    (``best``, an index into the playbook's actions), its expected net value, whether it is recommended
    (above the playbook's minimum and not a graceful exit) and who is a graceful exit."""

    best: np.ndarray
    net: np.ndarray
    chosen: np.ndarray
    exits: np.ndarray

    def names(self, playbook: Playbook) -> np.ndarray:
        """The recommended action's name per customer (``no_action`` where none is)."""
        names = np.array([a.name for a in playbook.actions], dtype=object)[self.best]
        return np.where(self.chosen, names, DO_NOTHING)


def choose_by_priors(
    playbook: Playbook,
    value_at_risk: np.ndarray,
    allowed: np.ndarray,
    *,
    basis: str = "revenue",
    lifetime: np.ndarray | None = None,
) -> PriorChoice:
    """Expected net value = value at risk (x the margin on a revenue basis) x success rate - cost; the first
    allowed action with the highest one, recommended only above ``min_net_value``. A customer whose
    ``lifetime`` value is <= 0 is a graceful exit: never a paid action."""
    actions = playbook.actions
    at_stake = value_at_risk * playbook.weight(basis)
    net = at_stake[:, None] * np.array([a.success_rate for a in actions]) - np.array(
        [a.cost for a in actions]
    )
    best = np.argmax(np.where(allowed, net, -np.inf), axis=1)
    best_net = np.take_along_axis(net, best[:, None], axis=1)[:, 0]
    exits = np.zeros(len(at_stake), dtype=bool) if lifetime is None else lifetime <= 0
    return PriorChoice(best, best_net, (best_net > playbook.min_net_value) & ~exits, exits)
