"""Retention campaigns inside the synthetic world, with each customer's true effect of every action.

Design choice: campaigns run *inside* the monthly simulation. From the month an assignment takes effect,
a treated customer's hazard of leaving is multiplied by the action's true effect on that customer for
``horizon_months`` months. Assignment is by a hash of (campaign, customer id), never by the random
generator, so everything before the campaign's month is byte-identical to the world without it. That is
what makes *plan -> simulate -> report* possible: plan on the data of seed S at a month start, then
generate seed S again with the plan's log (:class:`CampaignSetup` ``logs``); the history the plan saw is
unchanged and the future carries the treatment.

A counterfactual twin (the same future with and without the treatment, differing only through it) is not
possible with this simulation: each month draws random numbers only for the customers still active, and
as many order details as there are orders, so one customer leaving earlier shifts every later draw of
everyone. The true effect is therefore not a twin's difference but the oracle's: for each customer and
action, :func:`~features.synthetic.oracle.true_churn_probability` with and without the action's hazard
multiplier at the assignment date (same rates the simulation used), written to the truth folder.

Effects (hazard multipliers, heterogeneous by design):

* service recovery (call, apology voucher) removes most (call) or some (voucher) of the service gap's
  effect: customers with recent service failures respond, others barely do;
* a loyalty discount works on deal seekers (high discount propensity) and little on others;
* win-back offer, reminder, onboarding check-in and account review have small or targeted effects;
* sleeping dogs, a share of contract customers, cancel more when contacted at all (x2.5 hazard).

Who is a sleeping dog (:class:`CampaignSetup` ``sleeping_dogs``). In real retention data they are not
random: a contact reminds a customer who barely uses what they pay for that they could leave (Ascarza,
2018, "Retention futility: targeting high-risk customers might be ineffective"). The default rule,
``"usage"``, draws them among contract customers with a probability that falls with the customer's
long-run purchase rate (log-odds ``SLEEPING_DOG_INTERCEPT - SLEEPING_DOG_USAGE_SLOPE x log(rate / mean
rate)``: about 60% of contract customers on average, from 20% to 98% between the heaviest and lightest
twentieth of users), then by a hash of the id against that probability: behaviour reveals the odds, never
the draw (even the truth's probability separates dogs from the rest with an AUC of about 0.8, and a model
sees the rate only through noisy order counts). The earlier rule, ``"id_hash"``, a flat 60% of contract customers by the
hash alone, stays for comparison: no feature reveals it. The truth records each customer's probability
and ``true_effect_blind``, the effect expected over the draw (what the best policy built on the data can
know), so a benchmark's ceiling for a learned policy stays meaningful under either rule.

A customer kept is also re-engaged: while the effect lasts the purchase rate is multiplied by the hazard
multiplier to the power -0.6 (so a sleeping dog contacted buys less, too). The oracle applies both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Final, Literal

import numpy as np
import pandas as pd

from features.errors import ConfigError
from features.synthetic.params import (
    DAYS_PER_MONTH,
    NONE,
    SEGMENTS,
    Calendar,
    Customers,
    FileFormat,
    Params,
)

DO_NOTHING: Final = "no_action"
ACTION_COSTS: Final[dict[str, float]] = {  # as in serving/playbook.yaml
    "service_recovery_call": 25.0,
    "apology_voucher": 8.0,
    "win_back_offer": 10.0,
    "reminder_email": 0.5,
    "loyalty_discount": 12.0,
    "onboarding_check_in": 6.0,
    "account_review": 40.0,
    DO_NOTHING: 0.0,
}
SleepingDogRule = Literal["usage", "id_hash"]
SLEEPING_DOG_SHARE: Final = 0.6  # of contract customers under the "id_hash" rule
SLEEPING_DOG_INTERCEPT: Final = -0.14  # "usage" rule: log-odds at the mean purchase rate (60% on average)
SLEEPING_DOG_USAGE_SLOPE: Final = 1.0  # "usage" rule: log-odds gained per unit fall of log purchase rate
SLEEPING_DOG_FACTOR: Final = 2.5
RATE_ELASTICITY: Final = 0.6  # purchase rate x hazard multiplier ** -0.6 while the effect lasts


@dataclass(frozen=True)
class CampaignDesign:
    """A randomised campaign the world runs on every customer active at ``assigned_at`` (a month start).

    ``arms`` maps actions to the share of customers given them; the rest (at least ``min_control``) is the
    control group, logged as ``no_action`` / control.
    """

    name: str
    assigned_at: date
    arms: tuple[tuple[str, float], ...]
    horizon_months: int = 3


@dataclass(frozen=True)
class CampaignSetup:
    """Campaigns to run in a generated world: randomised designs, and logs in the contract's ``campaigns``
    form (e.g. written by ``churnguard campaign plan``) to replay."""

    designs: tuple[CampaignDesign, ...] = ()
    logs: tuple[pd.DataFrame, ...] = field(default_factory=tuple)
    horizon_months: int = 3
    sleeping_dogs: SleepingDogRule = "usage"  # see the module docstring


def unit_hash(*parts: str) -> np.ndarray | float:
    """A uniform number in [0, 1) from text, stable across runs and machines."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _uniforms(prefix: str, ids: Sequence[str]) -> np.ndarray:
    return np.array([unit_hash(prefix, i) for i in ids], dtype=np.float64)


def hazard_multipliers(action: str, traits: pd.DataFrame, params: Params) -> np.ndarray:
    """The true hazard multiplier of ``action`` per customer, from the traits at the assignment month:
    ``gap``, ``discount_propensity``, ``tenure_months``, ``is_contract``, ``segment`` and ``sleeping_dog``."""
    gap = traits["gap"].to_numpy(dtype=np.float64)
    n = len(traits)
    slope = params.gap_hazard_slope
    if action == DO_NOTHING:
        return np.ones(n)
    if action == "service_recovery_call":
        effect = np.exp(-0.75 * slope * gap) * 0.97
    elif action == "apology_voucher":
        effect = np.exp(-0.3 * slope * gap)
    elif action == "loyalty_discount":
        deal = np.clip((traits["discount_propensity"].to_numpy() - 0.15) / 0.35, 0.0, 1.0)
        effect = 1.0 - 0.6 * deal
    elif action == "win_back_offer":
        effect = np.full(n, 0.88)
    elif action == "reminder_email":
        effect = np.full(n, 0.95)
    elif action == "onboarding_check_in":
        effect = 1.0 - 0.45 * np.exp(-traits["tenure_months"].to_numpy() / 3.0)
    elif action == "account_review":
        business = (traits["segment"].to_numpy() != "consumer") | traits["is_contract"].to_numpy(dtype=bool)
        effect = np.where(business, 0.7, 1.0)
    else:
        raise ConfigError(
            f"the generator knows no effect for action {action!r}; use one of {sorted(ACTION_COSTS)}"
        )
    return np.where(traits["sleeping_dog"].to_numpy(dtype=bool), effect * SLEEPING_DOG_FACTOR, effect)


def rate_multipliers(hazard_multiplier: np.ndarray) -> np.ndarray:
    """The purchase-rate multiplier that goes with a hazard multiplier: a customer kept is also re-engaged
    (buys more), one pushed away buys less."""
    return np.asarray(hazard_multiplier, dtype=np.float64) ** -RATE_ELASTICITY


def sleeping_dog_probability(
    is_contract: np.ndarray, purchase_rate: np.ndarray, params: Params, rule: SleepingDogRule = "usage"
) -> np.ndarray:
    """Each customer's chance of being a sleeping dog under ``rule`` (see the module docstring): none
    without a contract; with one, a flat share (``"id_hash"``) or one that falls with the long-run
    purchase rate (``"usage"``)."""
    contract = np.asarray(is_contract, dtype=bool)
    if rule == "id_hash":
        return np.where(contract, SLEEPING_DOG_SHARE, 0.0)
    if rule != "usage":
        raise ConfigError(f"unknown sleeping-dog rule {rule!r}; use 'usage' or 'id_hash'")
    usage = np.log(np.maximum(np.asarray(purchase_rate, dtype=np.float64), 1e-9) / params.mean_purchase_rate)
    odds = SLEEPING_DOG_INTERCEPT - SLEEPING_DOG_USAGE_SLOPE * usage
    return np.where(contract, 1.0 / (1.0 + np.exp(-odds)), 0.0)


def sleeping_dogs(ids: Sequence[str], probability: np.ndarray) -> np.ndarray:
    """Which customers are sleeping dogs: a hash of the id drawn against each one's probability."""
    return _uniforms("sleeping-dog", ids) < np.asarray(probability, dtype=np.float64)


class CampaignEffects:
    """The simulation's hazard hook: assigns the designs when their month comes, replays the logs, and
    multiplies treated customers' hazard by their true effect for the campaign's horizon.

    The simulation calls :meth:`hazard` and :meth:`rate` every month; after the run, :meth:`assignments` holds the
    rows of the ``campaigns`` table and :meth:`traits` what the truth needs.
    """

    def __init__(
        self,
        setup: CampaignSetup,
        customers: Customers,
        calendar: Calendar,
        ids: Sequence[str],
        params: Params,
    ) -> None:
        self.setup, self.customers, self.calendar, self.params = setup, customers, calendar, params
        self.ids = np.asarray(ids, dtype=object)
        self._position = {str(i): k for k, i in enumerate(self.ids)}
        self._sleeping = sleeping_dogs(
            list(self.ids),
            sleeping_dog_probability(
                customers.plan != NONE, customers.purchase_rate, params, setup.sleeping_dogs
            ),
        )
        self._multiplier = np.ones(len(customers))
        self._until = np.zeros(len(customers), dtype=np.int64)
        self._rows: list[pd.DataFrame] = []
        self._by_month: dict[int, list[tuple[str, object]]] = {}
        for design in setup.designs:
            self._by_month.setdefault(self._month(design.assigned_at, design.name), []).append(
                ("design", design)
            )
        for log in setup.logs:
            for (name, moment), rows in log.groupby(["campaign", "assigned_at"], sort=True):
                month = self._month(pd.Timestamp(moment).date(), str(name))
                self._by_month.setdefault(month, []).append(("log", rows))

    def _month(self, at: date, name: str) -> int:
        day = (pd.Timestamp(at) - self.calendar.start) / pd.Timedelta(days=1)
        month = int(np.searchsorted(self.calendar.edges, day, side="left"))
        if day < 0 or month >= self.calendar.n_months:
            raise ConfigError(
                f"campaign {name!r} is assigned at {at}, outside the simulated period "
                f"[{self.calendar.start.date()}, {self.calendar.end.date()}); pick a date inside it"
            )
        return month

    def hazard(self, month: int, active: np.ndarray, gap: np.ndarray, hazard: np.ndarray) -> np.ndarray:
        """The month's hazard of the active customers with the campaigns in force (assigns those due now)."""
        for kind, item in self._by_month.get(month, []):
            if kind == "design":
                assert isinstance(item, CampaignDesign)
                self._assign_design(month, item, active, gap)
            else:
                assert isinstance(item, pd.DataFrame)
                self._replay(month, item, active, gap)
        running = self._until[active] > month
        if not running.any():
            return hazard
        factor = np.where(running, self._multiplier[active], 1.0)
        return np.minimum(hazard * factor, self.params.max_monthly_hazard)

    def rate(self, month: int, active: np.ndarray, rate: np.ndarray) -> np.ndarray:
        """The month's purchase rate of the active customers with the campaigns in force."""
        running = self._until[active] > month
        if not running.any():
            return rate
        return rate * np.where(running, rate_multipliers(self._multiplier[active]), 1.0)

    def traits(self, who: np.ndarray, month: int, gap: np.ndarray) -> pd.DataFrame:
        """What the true effects depend on, for the customers ``who`` at ``month`` (``gap`` aligned)."""
        c = self.customers
        return pd.DataFrame(
            {
                "gap": gap,
                "discount_propensity": c.discount_propensity[who],
                "tenure_months": np.maximum(self.calendar.edges[month] - c.signup_day[who], 0.0)
                / DAYS_PER_MONTH,
                "is_contract": c.plan[who] != NONE,
                "segment": np.asarray(SEGMENTS, dtype=object)[c.segment[who]],
                "sleeping_dog": self._sleeping[who],
            }
        )

    def _treat(self, who: np.ndarray, actions: np.ndarray, month: int, gap: np.ndarray) -> None:
        traits = self.traits(who, month, gap)
        multiplier = np.ones(len(who))
        for action in pd.unique(actions):
            rows = actions == action
            multiplier[rows] = hazard_multipliers(str(action), traits[rows], self.params)
        self._multiplier[who] = np.where(self._until[who] > month, self._multiplier[who], 1.0) * multiplier
        self._until[who] = month + self.setup.horizon_months

    def _assign_design(self, month: int, design: CampaignDesign, active: np.ndarray, gap: np.ndarray) -> None:
        settled = self.customers.signup_day[active] < self.calendar.edges[month]
        who, who_gap = active[settled], gap[settled]
        draw = _uniforms(design.name, list(self.ids[who]))
        edges = np.cumsum([share for _, share in design.arms])
        if edges[-1] >= 1.0:
            raise ConfigError(f"campaign {design.name!r}: the arms' shares must leave a control group (< 1)")
        arm = np.searchsorted(edges, draw, side="right")
        names = np.array([a for a, _ in design.arms] + [DO_NOTHING], dtype=object)
        shares = np.array([s for _, s in design.arms] + [1.0 - edges[-1]])
        actions = names[arm]
        treated = arm < len(design.arms)
        self._treat(who[treated], actions[treated], month, who_gap[treated])
        self._rows.append(
            pd.DataFrame(
                {
                    "customer_id": self.ids[who].astype(str),
                    "campaign": design.name,
                    "action": actions.astype(str),
                    "assigned_at": self.calendar.start + pd.Timedelta(days=float(self.calendar.edges[month])),
                    "group": np.where(treated, "treatment", "control"),
                    "assignment_probability": shares[arm],
                    "cost": [ACTION_COSTS.get(str(a), 0.0) for a in actions],
                }
            ).assign(cost=lambda f: np.where(f["group"] == "treatment", f["cost"], 0.0))
        )

    def _replay(self, month: int, log: pd.DataFrame, active: np.ndarray, gap: np.ndarray) -> None:
        unknown = [i for i in log["customer_id"].astype(str) if i not in self._position]
        if unknown:
            raise ConfigError(f"the campaign log names customers the world does not have, e.g. {unknown[:3]}")
        where = np.array([self._position[str(i)] for i in log["customer_id"]], dtype=np.int64)
        gap_of = dict(zip(active.tolist(), gap.tolist(), strict=True))
        treated = (log["group"].to_numpy() == "treatment") & np.isin(where, active)
        who = where[treated]
        self._treat(who, log["action"].to_numpy()[treated], month, np.array([gap_of[k] for k in who]))
        self._rows.append(log.copy())

    def assignments(self) -> pd.DataFrame:
        """Every assignment made or replayed, in the contract's ``campaigns`` form."""
        columns = [
            "customer_id",
            "campaign",
            "action",
            "assigned_at",
            "group",
            "assignment_probability",
            "cost",
        ]
        if not self._rows:
            return pd.DataFrame(columns=columns)
        frame = pd.concat(self._rows, ignore_index=True)
        return frame[[c for c in columns if c in frame.columns]]

    def write(self, folder: Path, file_format: FileFormat) -> int:
        """Write the ``campaigns`` table into the data folder; returns its row count."""
        frame = self.assignments()
        if file_format == "csv":
            frame.to_csv(folder / "campaigns.csv", index=False)
        else:
            frame.to_parquet(folder / "campaigns.parquet", index=False)
        return len(frame)


def write_campaign_truth(
    truth_dir: Path, assignments: pd.DataFrame, horizon_days: int = 90, rule: SleepingDogRule = "usage"
) -> pd.DataFrame:
    """Each assigned customer's true effect of every action at each campaign's date, into
    ``campaign_effects.parquet`` of the truth folder: ``customer_id``, ``campaign``, ``assigned_at``,
    ``action``, ``hazard_multiplier``, ``sleeping_dog``, ``sleeping_dog_probability``,
    ``churn_probability_without`` (the oracle's, doing nothing), ``churn_probability_with`` and
    ``true_effect`` (with - without: negative keeps customers), and ``true_effect_blind``: the effect
    expected over the sleeping-dog draw (probability x the effect as a dog + the rest x the effect as
    none), the most a policy built on the data can know. ``rule`` is the one the world drew them by."""
    from features.synthetic.oracle import load_truth, true_churn_probability

    truth = load_truth(truth_dir)
    params = Params.from_meta(truth.attrs["synthetic"]["params"])
    parts = []
    for (name, moment), rows in assignments.groupby(["campaign", "assigned_at"], sort=True):
        at = pd.Timestamp(moment)
        label = at.strftime("%Y_%m")
        ids = rows["customer_id"].astype(str).to_numpy()
        known = truth.loc[ids]
        contract = known["is_contract"].to_numpy(dtype=bool)
        probability = sleeping_dog_probability(contract, known["purchase_rate"].to_numpy(), params, rule)
        traits = pd.DataFrame(
            {
                "gap": np.nan_to_num(known[f"gap_{label}"].to_numpy(dtype=np.float64)),
                "discount_propensity": known["discount_propensity"].to_numpy(),
                "tenure_months": np.maximum((at - known["signup_date"]).dt.days.to_numpy(), 0)
                / DAYS_PER_MONTH,
                "is_contract": contract,
                "segment": known["segment"].astype(str).to_numpy(),
                "sleeping_dog": sleeping_dogs(list(ids), probability),
            }
        )
        without = true_churn_probability(truth, at, horizon_days).reindex(ids).to_numpy()

        def churn_with(multiplier: np.ndarray, at: pd.Timestamp = at, ids: np.ndarray = ids) -> np.ndarray:
            scaled = truth.copy(deep=False)
            factor = pd.Series(multiplier, index=ids).reindex(truth.index).fillna(1.0)
            scaled["base_hazard"] = truth["base_hazard"] * factor
            scaled["purchase_rate"] = truth["purchase_rate"] * rate_multipliers(factor.to_numpy())
            return true_churn_probability(scaled, at, horizon_days).reindex(ids).to_numpy()

        dog = traits["sleeping_dog"].to_numpy(dtype=bool)
        for action in ACTION_COSTS:
            multiplier = hazard_multipliers(action, traits, params)
            with_action = churn_with(multiplier)
            blind = with_action - without
            undecided = (probability > 0) & (probability < 1)
            if action != DO_NOTHING and undecided.any():  # the same customers had the draw gone the other way
                flipped = np.where(dog, multiplier / SLEEPING_DOG_FACTOR, multiplier * SLEEPING_DOG_FACTOR)
                other = churn_with(np.where(undecided, flipped, multiplier)) - without
                as_dog, as_none = np.where(dog, blind, other), np.where(dog, other, blind)
                blind = np.where(undecided, probability * as_dog + (1 - probability) * as_none, blind)
            parts.append(
                pd.DataFrame(
                    {
                        "customer_id": ids,
                        "campaign": str(name),
                        "assigned_at": at,
                        "action": action,
                        "hazard_multiplier": multiplier,
                        "sleeping_dog": dog,
                        "sleeping_dog_probability": probability,
                        "churn_probability_without": without,
                        "churn_probability_with": with_action,
                        "true_effect": with_action - without,
                        "true_effect_blind": blind,
                    }
                )
            )
    effects = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    effects.to_parquet(truth_dir / "campaign_effects.parquet", index=False)
    return effects


def load_campaign_effects(truth_dir: Path) -> pd.DataFrame:
    """The truth's ``campaign_effects.parquet`` (see :func:`write_campaign_truth`)."""
    path = Path(truth_dir) / "campaign_effects.parquet"
    if not path.exists():
        raise ConfigError(f"{truth_dir} holds no campaign truth: generate the data with campaigns")
    return pd.read_parquet(path)
