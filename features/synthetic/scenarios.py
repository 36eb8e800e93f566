"""Worlds to test on: variations of the generative story, each keeping an exact oracle.

A model that only ever meets the generator's own world learns that world. Each scenario changes one thing a
real business differs in (seasonal churn, acquisition trends, one cohort, contracts only, a bare purchase
log, a shop's invoice export, a logistics failure) and records what it changed in the truth's ``meta.json``
(``scenario`` block), so :func:`~features.synthetic.oracle.true_churn_probability` uses exactly the rates the
world simulated. The ``base`` world writes no ``scenario`` block, so its output is unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from features.errors import ConfigError
from features.synthetic.params import DEFAULT_PARAMS, PLAN_PROBS_BY_SEGMENT, Calendar, Params

Shape = Literal["tables", "purchase_log", "shop_export"]

SCENARIOS: dict[str, str] = {
    "base": "the default world: four contract tables, growing acquisition, service failures drive churn",
    "seasonal": "churn hazard with a strong yearly cycle (x1.8 in January, x0.6 in summer): base rates shift",
    "growth": "acquisition rising strongly (6x over the period) while the churn hazard drifts down",
    "decline": "acquisition falling away (to a tenth) while the churn hazard drifts up (x1.8 by the end)",
    "single_cohort": "every customer signs up in the first two months; the base only decays",
    "contract_only": "every customer is on a monthly or annual plan; leaving is always a cancellation",
    "purchase_log": "only transactions with customer_id, timestamp, amount; no other table or column",
    "shop_export": "one invoices.csv shaped like a shop's invoice-line export, plus columns.yaml",
    "drift": "late deliveries x4 from three months before the end month (a logistics failure)",
}

# Calendar month -> churn hazard factor in the seasonal world (index 0 = January).
SEASONAL_HAZARD = np.array([1.8, 1.7, 1.4, 1.0, 0.75, 0.6, 0.6, 0.65, 0.8, 1.0, 1.2, 1.5])
COHORT_DAYS = 61.0
DRIFT_LATE_FACTOR = 4.0
DRIFT_MONTHS_BEFORE_END = 3
_NO_CONTRACTS = np.array([[1.0, 0.0, 0.0]] * 3)


@dataclass(frozen=True)
class World:
    """Everything a scenario sets: parameters, per-month factors, who is on a plan, and the output shape.

    ``hazard_factor`` and ``late_factor`` hold one multiplier per simulated month (of the churn hazard and
    of the late-delivery probability). ``cohort_days``: if set, every signup falls in the first that many
    days. ``late_from`` (drift) is the ISO date the late-delivery spike starts. ``cyclic``: the factors follow
    the calendar year, so after the period they repeat it (the truth's residual value looks that far);
    otherwise they hold their last month's value there.
    """

    name: str
    params: Params
    hazard_factor: np.ndarray
    late_factor: np.ndarray
    plan_probs: np.ndarray
    shape: Shape = "tables"
    cohort_days: float | None = None
    late_from: str | None = None
    cyclic: bool = False

    def meta(self) -> dict[str, object] | None:
        """The truth's ``scenario`` block (None for the base world, whose ``meta.json`` stays as it was)."""
        if self.name == "base":
            return None
        block: dict[str, object] = {
            "name": self.name,
            "description": SCENARIOS[self.name],
            "shape": self.shape,
            "hazard_factor": [float(x) for x in self.hazard_factor],
            "late_factor": [float(x) for x in self.late_factor],
            "plan_probs_by_segment": self.plan_probs.tolist(),
            "cohort_days": self.cohort_days,
        }
        if self.late_from is not None:
            block["late_delivery_spike"] = {"from": self.late_from, "factor": DRIFT_LATE_FACTOR}
        return block


def build_world(name: str, calendar: Calendar) -> World:
    """The world called ``name`` over ``calendar``; ConfigError naming the choices for an unknown name."""
    if name not in SCENARIOS:
        raise ConfigError(f"unknown scenario {name!r}; choose one of: {', '.join(SCENARIOS)}.")
    ones = np.ones(calendar.n_months)
    world = World(name, DEFAULT_PARAMS, ones, ones, PLAN_PROBS_BY_SEGMENT)
    # Position of each month's middle in the period, 0 at the start and 1 at the end (for slow trends).
    progress = (calendar.edges[:-1] + calendar.edges[1:]) / 2.0 / calendar.total_days
    if name == "seasonal":
        return dataclasses.replace(world, hazard_factor=SEASONAL_HAZARD[calendar.month_of_year], cyclic=True)
    if name == "growth":
        params = dataclasses.replace(DEFAULT_PARAMS, signup_growth=6.0, early_wave_share=0.05)
        return dataclasses.replace(world, params=params, hazard_factor=0.7**progress)
    if name == "decline":
        params = dataclasses.replace(DEFAULT_PARAMS, signup_growth=0.1, early_wave_share=0.35)
        return dataclasses.replace(world, params=params, hazard_factor=1.8**progress)
    if name == "single_cohort":
        return dataclasses.replace(world, cohort_days=min(COHORT_DAYS, calendar.total_days))
    if name == "contract_only":
        on_plan = PLAN_PROBS_BY_SEGMENT * np.array([0.0, 1.0, 1.0])
        return dataclasses.replace(world, plan_probs=on_plan / on_plan.sum(axis=1, keepdims=True))
    if name in ("purchase_log", "shop_export"):  # a shop has no contracts: leaving is always silent
        return dataclasses.replace(world, plan_probs=_NO_CONTRACTS, shape=name)  # type: ignore[arg-type]
    if name == "drift":
        return _drift(world, calendar)
    return world


def _drift(world: World, calendar: Calendar) -> World:
    """Late deliveries ×4 from the first day of the calendar month three months before the end's month."""
    end_month = (calendar.end - pd.Timedelta(days=1)).to_period("M")  # the month of the period's last day
    begins = max((end_month - DRIFT_MONTHS_BEFORE_END).to_timestamp(), calendar.start)
    first_month = calendar.month_of_day((begins - calendar.start) / pd.Timedelta(days=1))
    late = np.where(np.arange(calendar.n_months) >= first_month, DRIFT_LATE_FACTOR, 1.0)
    return dataclasses.replace(world, late_factor=late, late_from=begins.date().isoformat())
