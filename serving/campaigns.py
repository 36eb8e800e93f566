"""Measuring retention campaigns against their control groups.

Per campaign and action, the treatment group (given the action) is compared with the control group held
out of it (the arm's own control rows, or the campaign's shared control when the arm has none): retention
and spend in the horizon after ``assigned_at``, incremental customers kept, incremental contribution,
cost and ROI, each with a 95% confidence interval. Means are inverse-propensity weighted (weights
``1 / assignment_probability``, normalised: the Hajek estimator), so arms assigned with unequal
probabilities are still compared fairly; with constant probabilities they are plain means. Intervals use
the normal approximation. When a campaign compares several actions, the p-values are Holm-adjusted.

Planned campaigns and these reports are kept in the serving store in force (:mod:`serving.campaign_store`),
so the API and the dashboard can show plans and reports without the data folder.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from features.campaigns import CONTROL, DEFAULT_HORIZON_DAYS, TREATMENT, campaign_outcomes, load_campaigns
from features.errors import ConfigError

Z95: Final = 1.959964
Z80_POWER: Final = 0.841621
MIN_GROUP: Final = 100  # below this many customers in a group, no result is shown as a finding
MAX_DETECTABLE: Final = 0.05  # warn when only a retention change above 5 points could be told from chance


@dataclass(frozen=True)
class Estimate:
    """A figure with its 95% confidence interval."""

    value: float
    low: float
    high: float

    @staticmethod
    def normal(value: float, se: float) -> Estimate:
        return Estimate(value, value - Z95 * se, value + Z95 * se)

    def scaled(self, factor: float, shift: float = 0.0) -> Estimate:
        ends = sorted((self.low * factor + shift, self.high * factor + shift))
        return Estimate(self.value * factor + shift, ends[0], ends[1])


@dataclass(frozen=True)
class ArmResult:
    """One action of one campaign, treatment against control."""

    campaign: str
    action: str
    assigned_at: str
    treatment: int
    control: int
    retention_treatment: float
    retention_control: float
    spend_treatment: float
    spend_control: float
    incremental_retention: Estimate  # retention rate, treatment - control
    incremental_customers: Estimate  # customers kept because of the action, among those treated
    incremental_contribution: Estimate  # extra spend x margin, among those treated
    cost: float
    roi: Estimate | None  # (incremental contribution - cost) / cost; None when nothing was spent
    p_value: float
    p_adjusted: float
    detectable: float  # smallest retention change these group sizes tell from chance (80% power, 5%)
    warnings: list[str] = field(default_factory=list)

    @property
    def significant(self) -> bool:
        return self.p_adjusted < 0.05


@dataclass(frozen=True)
class CampaignReport:
    """Every action of one campaign, and the notes that qualify them."""

    campaign: str
    horizon_days: int
    margin: float
    arms: list[ArmResult]
    notes: list[str]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for arm, result in zip(out["arms"], self.arms, strict=True):
            arm["significant"] = result.significant
        return out


# ------------------------------------------------------------------------------------------ statistics


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """Hajek mean and its variance (normal approximation, weights treated as fixed)."""
    total = weights.sum()
    mean = float((weights * values).sum() / total)
    variance = float((weights**2 * (values - mean) ** 2).sum() / total**2)
    return mean, variance


def _p_value(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2.0))


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: controls the chance of any false finding among the comparisons."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def customers_needed(base_retention: float, change: float = 0.02) -> int:
    """Customers per group to tell a retention change of ``change`` from chance (80% power, 5% two-sided)."""
    p = min(max(base_retention, 0.01), 0.99)
    return math.ceil((Z95 + Z80_POWER) ** 2 * 2 * p * (1 - p) / change**2)


def _arm(rows: pd.DataFrame, control: pd.DataFrame, margin: float) -> dict[str, Any]:
    """The figures of one arm against its control (before the multiple-testing adjustment)."""
    wt = 1.0 / rows["assignment_probability"].to_numpy(dtype=float)
    wc = 1.0 / control["assignment_probability"].to_numpy(dtype=float)
    kept_t, var_kt = _weighted_mean(1.0 - rows["churned"].to_numpy(dtype=float), wt)
    kept_c, var_kc = _weighted_mean(1.0 - control["churned"].to_numpy(dtype=float), wc)
    spend_t, var_st = _weighted_mean(rows["future_spend"].to_numpy(dtype=float), wt)
    spend_c, var_sc = _weighted_mean(control["future_spend"].to_numpy(dtype=float), wc)
    n = len(rows)
    se_kept = math.sqrt(var_kt + var_kc)
    lift = Estimate.normal(kept_t - kept_c, se_kept)
    extra_spend = Estimate.normal(spend_t - spend_c, math.sqrt(var_st + var_sc))
    contribution = extra_spend.scaled(n * margin)
    cost = float(rows["cost"].fillna(0.0).sum()) if "cost" in rows.columns else 0.0
    roi = contribution.scaled(1.0 / cost, -1.0) if cost > 0 else None
    detectable = (Z95 + Z80_POWER) * se_kept if se_kept > 0 else float("inf")
    warnings = []
    if min(n, len(control)) < MIN_GROUP or detectable > MAX_DETECTABLE:
        needed = customers_needed(kept_c)
        warnings.append(
            f"groups too small to tell: with {n:,} treated and {len(control):,} control customers only a "
            f"retention change above {detectable:.1%} would be told from chance; about {needed:,} per group "
            "are needed to detect 2 points"
        )
    if not rows["complete"].all() or not control["complete"].all():
        warnings.append(
            "the horizon has not passed yet for every customer: the data end before it, so purchases still "
            "to come are missing and retention is understated; report again when the window has passed"
        )
    unknown = int((~rows["known"]).sum() + (~control["known"]).sum())
    if unknown:
        warnings.append(
            f"{unknown:,} assigned customers were not active at the assignment (no purchase or signup in the "
            "year before): they count as churned in both groups"
        )
    z = lift.value / se_kept if se_kept > 0 else 0.0
    return {
        "treatment": n,
        "control": len(control),
        "retention_treatment": kept_t,
        "retention_control": kept_c,
        "spend_treatment": spend_t,
        "spend_control": spend_c,
        "incremental_retention": lift,
        "incremental_customers": lift.scaled(n),
        "incremental_contribution": contribution,
        "cost": cost,
        "roi": roi,
        "p_value": _p_value(z) if se_kept > 0 else 1.0,
        "detectable": detectable,
        "warnings": warnings,
    }


def measure_campaign(outcomes: pd.DataFrame, horizon_days: int, margin: float = 1.0) -> CampaignReport:
    """The report of one campaign from its assignments with outcomes (see
    :func:`features.campaigns.campaign_outcomes`)."""
    name = str(outcomes["campaign"].iloc[0])
    treated = outcomes[outcomes["group"] == TREATMENT]
    controls = outcomes[outcomes["group"] == CONTROL]
    notes: list[str] = []
    figures: list[tuple[str, str, dict[str, Any]]] = []
    for action, rows in treated.groupby("action", sort=True):
        own = controls[controls["action"] == action]
        control = own if len(own) else controls
        if control.empty:
            notes.append(f"{action}: no control group, so its effect cannot be measured")
            continue
        at = str(pd.Timestamp(rows["assigned_at"].min()).date())
        figures.append((str(action), at, _arm(rows, control, margin)))
    adjusted = holm([f["p_value"] for _, _, f in figures])
    if len(figures) > 1:
        notes.append(
            f"{len(figures)} actions are compared in this campaign: p-values are Holm-adjusted, so a finding "
            "marked significant stays so at 5% across all the comparisons (unadjusted, one in twenty "
            "comparisons of actions that do nothing would look significant by chance)"
        )
    arms = [
        ArmResult(campaign=name, action=a, assigned_at=at, p_adjusted=p, **f)
        for (a, at, f), p in zip(figures, adjusted, strict=True)
    ]
    return CampaignReport(name, horizon_days, margin, arms, notes)


def report_campaigns(
    data_dir: Path,
    mapping: Path | None = None,
    *,
    horizon_days: int = DEFAULT_HORIZON_DAYS,
    margin: float = 1.0,
    campaign: str | None = None,
) -> list[CampaignReport]:
    """Load a data folder and its ``campaigns`` table and report every campaign (or only ``campaign``)."""
    from features.loading import load_dataset

    dataset = load_dataset(data_dir, mapping)
    customers = dataset.customers["customer_id"] if "customers" in dataset.provided else None
    campaigns = load_campaigns(data_dir, mapping, customers=customers)
    if campaigns is None:
        raise ConfigError(
            f"{data_dir} holds no campaigns table: add campaigns.csv (see `churnguard contract`) or plan one "
            "with `churnguard campaign plan`"
        )
    if campaign is not None:
        campaigns = campaigns[campaigns["campaign"] == campaign]
        if campaigns.empty:
            raise ConfigError(f"no campaign named {campaign!r} in {data_dir}")
    outcomes = campaign_outcomes(dataset, campaigns, horizon_days)
    return [
        measure_campaign(rows, horizon_days, margin) for _, rows in outcomes.groupby("campaign", sort=True)
    ]


def report_lines(report: CampaignReport) -> list[str]:
    """The report as plain text, one arm per block (what ``churnguard campaign report`` prints)."""
    lines = [f"Campaign {report.campaign} (outcomes over {report.horizon_days} days after assignment)"]
    for arm in report.arms:
        kept, extra = arm.incremental_retention, arm.incremental_customers
        roi = arm.roi
        lines += [
            f"  {arm.action} (assigned {arm.assigned_at}): {arm.treatment:,} treated vs {arm.control:,} control",
            f"    retention {arm.retention_treatment:.1%} vs {arm.retention_control:.1%}: "
            f"{kept.value:+.1%} [{kept.low:+.1%}, {kept.high:+.1%}], p={arm.p_adjusted:.3g}"
            + (" (significant)" if arm.significant else " (not significant)"),
            f"    spend per customer {arm.spend_treatment:,.2f} vs {arm.spend_control:,.2f}",
            f"    customers kept {extra.value:+,.1f} [{extra.low:+,.1f}, {extra.high:+,.1f}]; contribution "
            f"{arm.incremental_contribution.value:+,.2f} [{arm.incremental_contribution.low:+,.2f}, "
            f"{arm.incremental_contribution.high:+,.2f}]; cost {arm.cost:,.2f}"
            + (f"; ROI {roi.value:+.0%} [{roi.low:+.0%}, {roi.high:+.0%}]" if roi else ""),
        ]
        lines += [f"    warning: {w}" for w in arm.warnings]
    lines += [f"  note: {n}" for n in report.notes]
    return lines
