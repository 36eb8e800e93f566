"""The promotion policy: when a newly registered version becomes the champion, written out as rules.

1. ``--no-promote``: never.
2. A readable champion exists: the candidate must be within the calibration guard (``max_ece``) *and* at
   least as good as the champion on ``promotion.metric``, both measured on the same validation rows.
   The guard protects a working champion: a worse-calibrated challenger never replaces it.
3. No champion (the first model), or a champion that cannot be loaded or scored: the candidate must not
   lose to any baseline (recency rule, RFM logistic) on the metric by more than ``baseline_tolerance``.
   One validation cutoff of about 2,000 customers has a PR AUC standard error of 0.01-0.015, and a new user
   with no champion at all cannot score anything, so a model that ties the baselines within that noise is
   promoted, with a warning that it only ties them. A model clearly worse than a baseline is not: the
   data or the features are suspect. A promoted first model becomes champion even above the calibration
   guard, because a model that ranks as well as the baselines is more use than no model at all, but the
   verdict carries a loud calibration warning (also in the model card and the bundle's
   ``metadata["warnings"]``, which serving shows).

This module is pure: it judges metrics and never talks to MLflow (``training.tracking`` does).
"""

from __future__ import annotations

from dataclasses import dataclass

from training.config import PromotionConfig

LOWER_IS_BETTER = frozenset({"brier", "log_loss"})


@dataclass(frozen=True)
class Champion:
    """The current champion's metrics on the candidate's validation rows."""

    version: str
    metrics: dict[str, float]


@dataclass(frozen=True)
class UnreadableChampion:
    """A champion alias points at a version that could not be loaded or scored."""

    version: str
    error: str


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str


def calibration_warning(ece: float, policy: PromotionConfig) -> str | None:
    """The warning a model above the calibration guard carries, or None within it."""
    if ece <= policy.max_ece:
        return None
    return (
        f"calibration: ECE {ece:.3f} above the guard {policy.max_ece} on the validation cutoff; "
        f"probabilities may be off by about {ece:.0%} on average: use them to rank, and check the "
        "reliability plot before acting on their level"
    )


def _better(metric: str, new: float, old: float) -> bool:
    return new <= old if metric in LOWER_IS_BETTER else new >= old


def decide(
    candidate: dict[str, float],
    baselines: dict[str, dict[str, float]],
    champion: Champion | UnreadableChampion | None,
    policy: PromotionConfig,
) -> Decision:
    """Apply rules 2 and 3 of the module docstring (rule 1 is the caller's ``--no-promote``)."""
    metric = policy.metric
    score = candidate[metric]
    if isinstance(champion, Champion):
        if candidate["ece"] > policy.max_ece:
            return Decision(
                False,
                f"not promoted: ECE {candidate['ece']:.4f} above the guard {policy.max_ece} "
                f"(champion v{champion.version} kept)",
            )
        old = champion.metrics[metric]
        verdict = "promoted" if _better(metric, score, old) else "not promoted"
        return Decision(
            verdict == "promoted",
            f"{verdict}: {metric} {score:.4f} vs champion v{champion.version} {old:.4f}",
        )
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0  # how much worse the candidate is, in metric units
    behind = {name: sign * (score - m[metric]) for name, m in baselines.items()}
    lost = {name: gap for name, gap in behind.items() if gap > policy.baseline_tolerance}
    if lost:
        worst = ", ".join(f"{name} {baselines[name][metric]:.4f}" for name in lost)
        return Decision(
            False,
            f"not promoted: {metric} {score:.4f} is clearly below the baseline ({worst}; tolerance "
            f"{policy.baseline_tolerance}); check the data, or promote it anyway with "
            "`churnguard promote VERSION`",
        )
    why = (
        "first champion"
        if champion is None
        else f"champion v{champion.version} could not be evaluated ({champion.error})"
    )
    ties = {name: gap for name, gap in behind.items() if gap > 0}
    verdict = "beats the baselines" if not ties else "ties the baselines"
    reason = f"promoted: {why} ({metric} {score:.4f}, {verdict})"
    warnings = []
    if ties:
        tied = ", ".join(f"{name} {baselines[name][metric]:.4f}" for name in ties)
        warnings.append(
            f"ranking: {metric} {score:.4f} only ties the baselines ({tied}) on the validation cutoff, "
            "within one cutoff's noise; check the backtest before trusting its ranking over a recency rule"
        )
    calibration = calibration_warning(candidate["ece"], policy)
    if calibration is not None:
        warnings.append(calibration)
    reason += "".join(f" WARNING {w}" for w in warnings)
    return Decision(True, reason)
