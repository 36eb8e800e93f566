"""Run configuration for ``churnguard train``: a YAML file parsed into a typed model, never a bare dict."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from features.errors import ConfigError, RenamedSettingWarning


class ChurnModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_leaves_grid: list[int] = Field(
        default=[4, 7, 15],
        min_length=1,
        description="Leaf counts tried; the cheapest to explain within auc_tolerance of "
        "the best wins (accuracy per unit of explanation cost).",
    )
    balanced_trees: bool = Field(
        default=True,
        description="Cap each tree's depth at that of a balanced tree with num_leaves leaves: "
        "shallow trees cost less to explain for the same leaves.",
    )
    auc_tolerance: float = Field(default=0.003, ge=0, le=0.05)
    max_explanation_cost: float = Field(
        default=3_000,
        gt=0,
        description="Budget of exact TreeSHAP work per row: the summed depth of every leaf of every tree "
        "(about 25 ns per unit and row on one core, so 3,000 is about 0.08 ms): keeps exact reasons "
        "affordable for batch scoring at thousands of customers per second.",
    )
    learning_rate: float = Field(default=0.1, gt=0, le=1)
    max_trees: int = Field(default=300, ge=10, le=5000)
    min_child_samples: int = Field(default=50, ge=1)
    feature_fraction: float = Field(default=0.8, gt=0, le=1)
    bagging_fraction: float = Field(default=0.8, gt=0, le=1)
    lambda_l2: float = Field(default=1.0, ge=0)
    early_stopping_rounds: int = Field(default=30, ge=5)
    reference_num_leaves: int = Field(
        default=31,
        ge=2,
        description="Leaves of the unconstrained reference LightGBM (no depth cap, no explanation budget) "
        "fitted on the same backtest: the accuracy the budget is measured against.",
    )
    max_auc_loss: float = Field(
        default=0.003,
        ge=0,
        le=0.1,
        description="ROC AUC the explanation budget may cost against the reference, averaged over the "
        "backtest origins; above it the reference's capacity is used instead (accuracy first).",
    )
    calibration_half_life: float | None = Field(
        default=None,
        gt=0,
        description="If set, calibration and the revenue forecast's level weigh held-out customers by the "
        "age of their cutoff (a cutoff this many steps older counts half). Off by default: at 5,000 "
        "customers a half-life of 1 step moved ECE at the scoring date from 0.014 to 0.033 on a seasonal "
        "world (the newest labelled cutoff is a season away from the scoring date) and from 0.018 to 0.015 "
        "on the base world.",
    )


class BacktestConfig(BaseModel):
    """Rolling-origin backtest: each origin is evaluated by a model fitted only on cutoffs whose outcomes
    were known by then (at least ``min_train_cutoffs`` of them)."""

    model_config = ConfigDict(extra="forbid")
    origins: int = Field(default=3, ge=0, le=12, description="Origins evaluated, newest first (0 = off).")
    min_train_cutoffs: int = Field(default=2, ge=1)


class RevenueModelConfig(BaseModel):
    """The revenue forecast over the horizon (``expected_revenue_{H}d``), a Tweedie LightGBM regressor of
    spend. Every customer scored pays for every tree, so the tree count is kept low: at 100k customers, 150
    trees at learning rate 0.1 ranked spend as well as 600 at 0.05 (Gini 0.853 both, top-decile capture
    0.622 / 0.623, Spearman 0.568 / 0.573) and predict six times faster (3.7 against 23 microseconds a row)."""

    model_config = ConfigDict(extra="forbid")
    num_leaves: int = Field(default=31, ge=2)
    learning_rate: float = Field(default=0.1, gt=0, le=1)
    max_trees: int = Field(default=150, ge=10, le=5000)
    tweedie_variance_power: float = Field(default=1.3, gt=1, lt=2)
    min_child_samples: int = Field(default=50, ge=1)
    early_stopping_rounds: int = Field(default=30, ge=5)


class PromotionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metric: Literal["pr_auc", "roc_auc", "brier", "log_loss"] = "pr_auc"
    max_ece: float = Field(
        default=0.03, gt=0, le=1, description="Calibration guard: never promote above this."
    )
    baseline_tolerance: float = Field(
        default=0.02,
        ge=0,
        le=0.2,
        description="A first model within this much of the best baseline on the metric still becomes "
        "champion, with a warning: one validation cutoff of about 2,000 customers has a PR AUC standard "
        "error of 0.01-0.015, so a smaller gap is noise. On fewer customers the allowed gap is 1.96 "
        "standard errors of the paired difference when that is larger (training.promotion.paired_noise).",
    )


class BusinessConfig(BaseModel):
    """Assumed campaign economics for the business view of the evaluation (the playbook refines them)."""

    model_config = ConfigDict(extra="forbid")
    contact_cost: float = Field(default=5.0, ge=0)
    success_rate: float = Field(default=0.2, ge=0, le=1)
    top_share: float = Field(default=0.1, gt=0, le=1)


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    horizon_days: int = Field(default=90, ge=7, le=730)
    snapshots: int = Field(
        default=6, ge=2, le=36, description="Training cutoffs (the validation cutoff is extra)."
    )
    step_days: int = Field(default=30, ge=7, le=365)
    seed: int = 42
    tune_trials: int = Field(
        default=0, ge=0, le=500, description="Optuna trials for the churn model (0 = off)."
    )
    threads: int = Field(default=2, ge=1, le=256)
    churn: ChurnModelConfig = ChurnModelConfig()
    revenue: RevenueModelConfig = RevenueModelConfig()
    promotion: PromotionConfig = PromotionConfig()
    business: BusinessConfig = BusinessConfig()
    backtest: BacktestConfig = BacktestConfig()
    risk_thresholds: dict[str, float] = Field(default={"medium": 0.3, "high": 0.6})

    @model_validator(mode="before")
    @classmethod
    def _renamed_sections(cls, data: Any) -> Any:
        """Compatibility: the revenue forecast's section was ``clv:`` before ``clv`` meant lifetime value
        (issue #13); a config written then still trains, with a warning naming ``revenue:``."""
        if not isinstance(data, dict) or "clv" not in data:
            return data
        if "revenue" in data:
            raise PydanticCustomError(
                "renamed_section",
                "both `clv:` and `revenue:` are given; `clv:` is the old name of `revenue:` (the revenue "
                "forecast's settings): keep only `revenue:`",
            )
        warnings.warn(
            "the training config's `clv:` section is now called `revenue:` (the revenue forecast's "
            "settings); `clv:` is read as `revenue:` for now: rename it",
            RenamedSettingWarning,
            stacklevel=1,
        )
        return {("revenue" if k == "clv" else k): v for k, v in data.items()}


def load_train_config(path: Path | None, **overrides: object) -> TrainConfig:
    """Defaults, then the YAML file, then explicit CLI overrides (those that are not None)."""
    data: dict[str, object] = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read the training config ({exc})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the training config must be a YAML mapping")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"] for e in exc.errors()
        ]
        raise ConfigError(f"{path or 'training config'}: " + "; ".join(lines)) from None
