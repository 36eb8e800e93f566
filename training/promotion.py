"""The promotion policy: when a newly registered version becomes the champion, written out as rules.

1. ``--no-promote``: never.
2. A readable champion exists: the candidate must be within the calibration guard (``max_ece``) *and* at
   least as good as the champion on ``promotion.metric``, both measured on the same validation rows.
   The guard protects a working champion: a worse-calibrated challenger never replaces it.
3. No champion (the first model), or a champion that cannot be loaded or scored: the candidate must not
   lose to any baseline (recency rule, RFM logistic) on the metric by more than its noise: the larger of
   ``baseline_tolerance`` and 1.96 standard errors of the paired difference on the validation rows
   (:func:`paired_noise`, a bootstrap of the same customers scored by both). One validation cutoff of
   about 2,000 customers has a PR AUC standard error of 0.01-0.015, a few hundred customers several times
   that, and a new user with no champion at all cannot score anything, so a model that ties the baselines
   within that noise is promoted, with a warning that it only ties them. A model clearly worse than a
   baseline is not: the data or the features are suspect. "Clearly worse" means every view of the ranking
   says so: a model behind on the metric but ahead of that baseline on ROC AUC (the whole ranking, not
   its top) is promoted with a warning naming both (seen on the contract-only world at 2,500 customers:
   PR AUC 0.720 against the RFM logistic's 0.745, ROC AUC 0.810 against 0.808, Brier better too). A
   promoted first model becomes champion even above the calibration guard, because a model that ranks as
   well as the baselines is more use than no model at all, but the verdict carries a loud calibration
   warning (also in the model card and the bundle's ``metadata["warnings"]``, which serving shows).

This module is pure: it judges metrics and never talks to MLflow (``training.tracking`` does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from training.config import PromotionConfig

LOWER_IS_BETTER = frozenset({"brier", "log_loss"})
Z95 = 1.959964
BOOTSTRAP_DRAWS = 200


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


def _allowed_gap(policy: PromotionConfig, standard_error: float | None) -> float:
    """How far a first model may trail a baseline and still be a tie: the tolerance, or the noise of the
    paired difference when that is larger."""
    if standard_error is None or not np.isfinite(standard_error):
        return policy.baseline_tolerance
    return max(policy.baseline_tolerance, Z95 * standard_error)


def _ahead_on_roc_auc(metric: str, candidate: Mapping[str, float], baseline: Mapping[str, float]) -> bool:
    """Whether the candidate ranks the whole validation cutoff at least as well as the baseline (ROC AUC),
    when the promotion metric is another one."""
    if metric == "roc_auc" or "roc_auc" not in candidate or "roc_auc" not in baseline:
        return False
    return candidate["roc_auc"] >= baseline["roc_auc"]


def _better(metric: str, new: float, old: float) -> bool:
    return new <= old if metric in LOWER_IS_BETTER else new >= old


def paired_noise(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y: np.ndarray,
    candidate: np.ndarray,
    others: Mapping[str, np.ndarray],
    *,
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = 0,
) -> dict[str, float]:
    """Per other model, the standard error of ``metric(candidate) - metric(other)`` on the rows ``y``:
    the customers are resampled with replacement and both models judged on the same resample, so what
    they share (which customers happened to be in the validation cutoff) cancels out. Resamples holding
    one class only are skipped; NaN when too few remain."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    differences: dict[str, list[float]] = {name: [] for name in others}
    for _ in range(draws):
        rows = rng.integers(0, len(y), len(y))
        if y[rows].min() == y[rows].max():
            continue
        own = metric(y[rows], candidate[rows])
        for name, scores in others.items():
            differences[name].append(own - metric(y[rows], scores[rows]))
    return {
        name: float(np.std(found, ddof=1)) if len(found) >= 20 else float("nan")
        for name, found in differences.items()
    }


def decide(
    candidate: dict[str, float],
    baselines: dict[str, dict[str, float]],
    champion: Champion | UnreadableChampion | None,
    policy: PromotionConfig,
    noise: Mapping[str, float] | None = None,
) -> Decision:
    """Apply rules 2 and 3 of the module docstring (rule 1 is the caller's ``--no-promote``). ``noise``:
    per baseline, the standard error of the paired difference on the validation rows (:func:`paired_noise`;
    absent or NaN: the tolerance alone)."""
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
    allowed = {name: _allowed_gap(policy, (noise or {}).get(name)) for name in baselines}
    beyond = {name for name, gap in behind.items() if gap > allowed[name]}
    mixed = {name for name in beyond if _ahead_on_roc_auc(metric, candidate, baselines[name])}
    lost = {name: behind[name] for name in beyond - mixed}
    if lost:
        worst = ", ".join(
            f"{name} {baselines[name][metric]:.4f}, {gap:.4f} ahead where noise allows {allowed[name]:.4f}"
            for name, gap in lost.items()
        )
        return Decision(
            False,
            f"not promoted: {metric} {score:.4f} is clearly below the baseline ({worst}: the larger of the "
            f"tolerance {policy.baseline_tolerance} and 1.96 paired standard errors); check the data, or "
            "promote it anyway with `churnguard promote VERSION`",
        )
    why = (
        "first champion"
        if champion is None
        else f"champion v{champion.version} could not be evaluated ({champion.error})"
    )
    ties = {name: gap for name, gap in behind.items() if gap > 0 and name not in mixed}
    verdict = "beats the baselines" if not ties and not mixed else "ties the baselines"
    reason = f"promoted: {why} ({metric} {score:.4f}, {verdict})"
    warnings = []
    for name in sorted(mixed):
        warnings.append(
            f"ranking: {metric} {score:.4f} trails {name}'s {baselines[name][metric]:.4f} beyond one "
            f"cutoff's noise, but ROC AUC {candidate['roc_auc']:.4f} is ahead of its "
            f"{baselines[name]['roc_auc']:.4f}: the top of the ranking is where it is weaker; check the "
            "backtest before acting on the top few customers only"
        )
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
