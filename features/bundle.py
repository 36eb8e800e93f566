"""The model bundle: one deployable unit holding everything needed to score a customer.

Training builds it, MLflow stores it as the artifact of the ``churnguard`` pyfunc, and every way of
scoring (API, batch, ``mlflow models serve``, Spark) loads the same files. It is plain files, not a
pickle: the feature specification and calibration as JSON, the LightGBM models as text.

When training learned from randomised campaigns and the policy gate admitted the result, the bundle also
carries the **action effects** (:class:`ActionEffects`): per action, a LightGBM model of the change in the
probability of staying through the horizon that the action causes. Scoring then chooses each customer's
action by :func:`choose_by_effects` instead of the playbook's priors.

Contract of the model input: a DataFrame with one column per feature named in ``features`` (extra
columns ignored, missing ones treated as unknown). Inputs are built by column name, never by position.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.campaigns import DO_NOTHING
from features.economics import Columns
from features.value import CustomerValue, ValueModel, combine, parts_for_frame, revenue_field

# 2: adds the revenue forecast's level scale; 3: adds ``value_model`` (BTYD lifetime value, see
# features.value); 4: adds ``effects`` (per-action uplift models, files under effects/); 5: renames the
# revenue forecast's file and scale (``revenue_model.txt``, ``revenue_scale``) and its validation metrics
# (``revenue_*``). Older formats still load: scale 1.0, no value model (lifetime value then unavailable,
# null), no effects (the playbook's priors decide), and the old names of format 5's renames.
BUNDLE_FORMAT = 5
_READABLE_FORMATS = {1, 2, 3, 4, 5}
# Compatibility: formats 1-4 named the revenue forecast "clv", from before clv meant lifetime value
# (issue #13); these are its file, scale key and metric prefix there.
_OLD_REVENUE_FILE, _OLD_REVENUE_SCALE, _OLD_REVENUE_METRICS = "clv_model.txt", "clv_scale", "clv_"
UPLIFT_EFFECTS: Final = "uplift effects"  # the action was chosen by the bundle's learned effects
PLAYBOOK_PRIORS: Final = "playbook priors"  # ... or by the playbook's typed-in success rates
NEW_CUSTOMER_DAYS: Final = (
    180  # an 'onboarding' reason is one an action can answer only for customers this new
)


@dataclass(frozen=True)
class FeatureInfo:
    """One model input, with what the explanations need to speak about it."""

    name: str
    description: str
    unit: str
    group: str
    categories: list[str] | None = None  # for categorical features, the levels seen in training
    typical: float | str | None = None  # median (or mode) among customers who stayed
    p10: float | None = None
    p90: float | None = None


@dataclass(frozen=True)
class Calibration:
    """Maps the churn model's probability to a calibrated one (isotonic steps or a Platt sigmoid)."""

    method: str  # "isotonic" | "platt"
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    a: float = 1.0
    b: float = 0.0

    def apply(self, p: np.ndarray) -> np.ndarray:
        if self.method == "isotonic":
            return np.interp(p, np.asarray(self.x), np.asarray(self.y))
        logit = np.log(np.clip(p, 1e-12, 1 - 1e-12) / np.clip(1 - p, 1e-12, 1.0))
        return 1.0 / (1.0 + np.exp(-(self.a * logit + self.b)))


def to_model_input(frame: pd.DataFrame, features: list[FeatureInfo]) -> pd.DataFrame:
    """Columns by name in the model's order, numeric as float64, categoricals with training levels."""
    out: dict[str, pd.Series | pd.Categorical] = {}
    index = frame.index
    for info in features:
        column = frame[info.name] if info.name in frame.columns else pd.Series(np.nan, index=index)
        if info.categories is not None:
            out[info.name] = pd.Categorical(column.astype("string").str.lower(), categories=info.categories)
        else:
            out[info.name] = pd.to_numeric(column, errors="coerce").astype("float64")
    return pd.DataFrame(out, index=index)


def to_matrix(frame: pd.DataFrame, features: list[FeatureInfo]) -> np.ndarray:
    """The model input as a float matrix: categoricals as their training codes, unknown as NaN.

    LightGBM maps pandas categoricals to exactly these codes, so a matrix and a DataFrame score the same;
    the matrix skips pandas' per-call overhead (most of the cost of scoring a single row).
    """
    x = to_model_input(frame, features)
    matrix = np.empty((len(x), len(features)), dtype=np.float64)
    for j, info in enumerate(features):
        column = x[info.name]
        if info.categories is not None:
            codes = column.cat.codes.to_numpy().astype(np.float64)
            codes[codes < 0] = np.nan
            matrix[:, j] = codes
        else:
            matrix[:, j] = column.to_numpy(dtype=np.float64, na_value=np.nan)
    return matrix


def records_to_matrix(records: list[dict[str, object]], features: list[FeatureInfo]) -> np.ndarray:
    """Like :func:`to_matrix` for a few records given as dicts (the API's path: no DataFrame at all)."""
    matrix = np.full((len(records), len(features)), np.nan, dtype=np.float64)
    for j, info in enumerate(features):
        lookup = {c: float(k) for k, c in enumerate(info.categories)} if info.categories is not None else None
        for i, record in enumerate(records):
            value = record.get(info.name)
            if value is None:
                continue
            if lookup is not None:
                matrix[i, j] = lookup.get(str(value).lower(), np.nan)
            else:
                matrix[i, j] = float(value)  # type: ignore[arg-type]
    return matrix


@dataclass(frozen=True)
class EffectChoice:
    """The policy of the learned effects per customer: ``best``, the column of the action with the largest
    expected net value (``net``); whether it is recommended (``chosen``); ``do_not_contact``, every
    action's estimated effect is negative (contact would push the customer away); ``exits``, graceful
    exits (lifetime value <= 0). Neither a do-not-contact customer nor a graceful exit gets a paid action."""

    best: np.ndarray
    net: np.ndarray
    effect: np.ndarray  # the best action's estimated change in retention
    chosen: np.ndarray
    do_not_contact: np.ndarray
    exits: np.ndarray

    def names(self, actions: list[str]) -> np.ndarray:
        return np.where(self.chosen, np.asarray(actions, dtype=object)[self.best], DO_NOTHING)


def choose_by_effects(
    estimates: np.ndarray,
    value: np.ndarray,
    costs: np.ndarray,
    *,
    min_net_value: float = 0.0,
    lifetime: np.ndarray | None = None,
) -> EffectChoice:
    """Per customer (rows of ``estimates``, one column per action), the action with the largest expected
    incremental retention x ``value`` (the value if retained, in the business's terms) - cost;
    ``no_action`` (worth 0) whenever no action returns more than ``min_net_value``. The one policy of the
    learned effects: scoring, the pyfunc, training's gate and the benchmark all use it."""
    n = len(estimates)
    worth = np.clip(np.nan_to_num(np.asarray(value, dtype=np.float64)), 0.0, None)
    net = estimates * worth[:, None] - np.asarray(costs, dtype=np.float64)[None, :]
    if not estimates.shape[1]:
        nothing = np.zeros(n, dtype=bool)
        return EffectChoice(np.zeros(n, np.intp), np.zeros(n), np.zeros(n), nothing, nothing, nothing)
    best = np.argmax(net, axis=1)
    best_net = np.take_along_axis(net, best[:, None], axis=1)[:, 0]
    effect = np.take_along_axis(estimates, best[:, None], axis=1)[:, 0]
    harmful = np.asarray((estimates < 0).all(axis=1), dtype=bool)
    exits = np.zeros(n, dtype=bool) if lifetime is None else np.asarray(lifetime) <= 0
    chosen = (best_net > min_net_value) & ~harmful & ~exits
    return EffectChoice(best, best_net, effect, chosen, harmful, exits)


@dataclass
class ActionEffects:
    """Per action, a LightGBM model of the change in the probability of staying through the horizon the
    action causes (learned by ``training.uplift`` from randomised campaigns and admitted by its policy
    gate), and the economics the gate judged the policy with: each action's cost, the weight of a unit of
    value (the playbook margin on a revenue basis) and the minimum net value. Serving decides with the
    playbook in force (its costs and labels); the pyfunc, which has no playbook, with these."""

    models: dict[str, lgb.Booster]
    costs: dict[str, float]
    weight: float = 1.0
    min_net_value: float = 0.0
    shared: lgb.Booster | None = None  # the effect of contact itself, added to every action's own model

    @property
    def actions(self) -> list[str]:
        return list(self.models)

    def estimate(self, x: np.ndarray) -> np.ndarray:
        """Estimated change in retention probability, rows x :attr:`actions`, within [-1, 1]."""
        threads = 1 if len(x) < 256 else 0
        columns = [np.asarray(m.predict(x, num_threads=threads), dtype=float) for m in self.models.values()]
        if not columns:
            return np.zeros((len(x), 0))
        shared = 0.0 if self.shared is None else np.asarray(self.shared.predict(x, num_threads=threads))
        return np.clip(np.column_stack(columns) + np.reshape(shared, (-1, 1)), -1.0, 1.0)

    def choose(self, x: np.ndarray, value: np.ndarray, lifetime: np.ndarray | None = None) -> EffectChoice:
        """:func:`choose_by_effects` with the costs, weight and minimum recorded at training."""
        costs = np.array([self.costs.get(a, 0.0) for a in self.actions])
        return choose_by_effects(
            self.estimate(x),
            value * self.weight,
            costs,
            min_net_value=self.min_net_value,
            lifetime=lifetime,
        )

    def save(self, folder: Path) -> dict[str, Any]:
        folder.mkdir(parents=True, exist_ok=True)
        for action, model in self.models.items():
            (folder / f"{action}.txt").write_text(model.model_to_string())
        if self.shared is not None:  # action names start with a letter: no action is called _shared
            (folder / "_shared.txt").write_text(self.shared.model_to_string())
        return {
            "shared": self.shared is not None,
            "actions": self.actions,
            "costs": self.costs,
            "weight": self.weight,
            "min_net_value": self.min_net_value,
        }

    @classmethod
    def load(cls, folder: Path, spec: dict[str, Any]) -> ActionEffects:
        models = {a: lgb.Booster(model_str=(folder / f"{a}.txt").read_text()) for a in spec["actions"]}
        shared = lgb.Booster(model_str=(folder / "_shared.txt").read_text()) if spec.get("shared") else None
        return cls(
            models=models,
            costs={k: float(v) for k, v in spec["costs"].items()},
            weight=float(spec.get("weight", 1.0)),
            min_net_value=float(spec.get("min_net_value", 0.0)),
            shared=shared,
        )


@dataclass(frozen=True)
class ModelInfo:
    """Which model produced a score: name, version, alias, when it was trained, its horizon."""

    name: str
    version: str
    alias: str | None
    trained_at: str
    horizon_days: int
    uri: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def current_metric_names(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Validation metrics (``metadata["metrics"]``, also kept with every scoring run) under today's names:
    the revenue forecast's are ``revenue_*``; bundles before format 5 recorded them as ``clv_*``."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if key.startswith(_OLD_REVENUE_METRICS):  # compatibility: a format 1-4 bundle's name
            out.setdefault("revenue_" + key.removeprefix(_OLD_REVENUE_METRICS), value)
        else:
            out[key] = value
    return out


@dataclass
class ModelBundle:
    features: list[FeatureInfo]
    churn_model: lgb.Booster
    revenue_model: lgb.Booster  # the revenue forecast over the horizon (``expected_revenue_{H}d``)
    calibration: Calibration
    horizon_days: int
    thresholds: dict[str, float]  # risk tiers and value split: {"medium": .., "high": .., "high_value": ..}
    metadata: dict[str, Any] = field(default_factory=dict)  # trained_at, metrics, data fingerprint...
    # Level correction of the revenue forecast, fitted on recent held-out customers at training time:
    # the regressor ranks spend well but its total drifts with the season and the customer base.
    revenue_scale: float = 1.0
    # Lifetime value beyond the horizon (BG/NBD + Gamma-Gamma); None for bundles trained without one.
    value_model: ValueModel | None = None
    # What each action changes (uplift), when training learned it and the gate admitted it; else None.
    effects: ActionEffects | None = None

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def feature_info(self, name: str) -> FeatureInfo:
        return self._by_name()[name]

    def _by_name(self) -> dict[str, FeatureInfo]:
        cached: dict[str, FeatureInfo] | None = self.__dict__.get("_by_name_cache")
        if cached is None:
            cached = {f.name: f for f in self.features}
            self.__dict__["_by_name_cache"] = cached
        return cached

    def model_input(self, frame: pd.DataFrame) -> pd.DataFrame:
        return to_model_input(frame, self.features)

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        return to_matrix(frame, self.features)

    def churn_raw(self, x: np.ndarray) -> np.ndarray:
        """The churn model's raw score (log-odds), the quantity SHAP contributions add up to."""
        return np.asarray(
            self.churn_model.predict(x, raw_score=True, num_threads=self._threads(x)), dtype=float
        )

    @staticmethod
    def _threads(x: np.ndarray) -> int:
        """One thread for small inputs: below a few hundred rows a second thread costs more than it gives."""
        return 1 if len(x) < 256 else 0

    def probability(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated churn probability from the raw score."""
        return self.calibration.apply(1.0 / (1.0 + np.exp(-raw)))

    def revenue(self, x: np.ndarray) -> np.ndarray:
        """Expected spend (revenue) over the horizon, undiscounted, never negative, level-corrected by
        ``revenue_scale``: the ``expected_revenue_{H}d`` field (not lifetime value)."""
        raw = np.asarray(self.revenue_model.predict(x, num_threads=self._threads(x)), dtype=float)
        return np.clip(raw * self.revenue_scale, 0.0, None)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """One row per input row: calibrated churn probability, ``expected_revenue_{H}d`` (LightGBM,
        undiscounted), and from the value model ``residual_value`` (discounted to the end of the
        relationship), ``value_1y`` (discounted, next 365 days), ``p_alive``, ``value_at_risk`` (p x the
        value if retained) and ``value_basis``. Value columns are NaN when the value model is missing or
        the frame lacks what it needs (``orders_total``, ``tenure_days``, ``recency_days``,
        ``spend_total``, or the exact summary columns of :data:`features.value.INPUT_COLUMNS`).

        With :attr:`effects`, also the learned policy's ``action_name``, ``expected_net_value``,
        ``do_not_contact`` and ``decided_by`` (the economics recorded at training: see
        :class:`ActionEffects`); without them the playbook decides, in serving, from the reasons."""
        x = self.matrix(frame)
        probability = self.probability(self.churn_raw(x))
        revenue = self.revenue(x)
        out: dict[str, Any] = {"churn_probability": probability, revenue_field(self.horizon_days): revenue}
        value = self.customer_value(frame, probability, revenue)
        nan = np.full(len(frame), np.nan)
        out |= {
            "residual_value": nan if value is None else value.residual_value,
            "value_1y": nan if value is None else value.value_1y,
            "p_alive": nan if value is None else value.p_alive,
            "value_at_risk": nan if value is None else value.value_at_risk(probability),
            "value_basis": self.value_model.basis if self.value_model is not None else None,
        }
        if self.effects is not None:
            lifetime = None if value is None else value.residual_value
            choice = self.effects.choose(x, self.retained_value(value, revenue), lifetime)
            out |= {
                "action_name": choice.names(self.effects.actions),
                "expected_net_value": np.where(choice.chosen, np.round(choice.net, 2), 0.0),
                "do_not_contact": choice.do_not_contact,
                "decided_by": UPLIFT_EFFECTS,
            }
        return pd.DataFrame(out, index=frame.index)

    @staticmethod
    def retained_value(value: CustomerValue | None, revenue: np.ndarray) -> np.ndarray:
        """The value if retained, what keeping a customer is worth: the value model's (never below 0), or
        the horizon's revenue forecast where that is unknown (as value at risk falls back to p x revenue)."""
        if value is None:
            return np.asarray(revenue, dtype=np.float64)
        kept = value.value_if_retained
        return np.where(np.isnan(kept), revenue, np.maximum(kept, 0.0))

    def risk_groups(self, x: np.ndarray, contributions: np.ndarray, top_k: int = 5) -> list[frozenset[str]]:
        """Per row, the reason families an action can answer: the groups of the ``top_k`` features by
        absolute contribution that raise the risk (to 4 decimals), an 'onboarding' one only while the
        customer is new (a value under NEW_CUSTOMER_DAYS). The playbook's priors choose among the actions
        addressing these (serving.explain applies the same rule to the reasons it words)."""
        infos = self.features
        values = contributions[:, :-1]
        k = min(top_k, len(infos))
        top = np.argsort(-np.abs(values), axis=1, kind="stable")[:, :k]
        raises = np.round(np.take_along_axis(values, top, axis=1), 4) > 0
        numeric = np.array([f.categories is None for f in infos])[top]
        with np.errstate(invalid="ignore"):
            new = numeric & (np.round(np.take_along_axis(x, top, axis=1), 4) < NEW_CUSTOMER_DAYS)
        onboarding = np.array([f.group == "onboarding" for f in infos])[top]
        groups = np.array([f.group for f in infos], dtype=object)[top]
        addressable = raises & (new | ~onboarding)
        cache: dict[tuple[str, ...], frozenset[str]] = {}
        out = []
        for row_groups, row_ok in zip(groups.tolist(), addressable.tolist(), strict=True):
            key = tuple(sorted({g for g, ok in zip(row_groups, row_ok, strict=True) if ok}))
            out.append(cache.setdefault(key, frozenset(key)))
        return out

    def customer_value(
        self, frame: Columns, probability: np.ndarray, revenue: np.ndarray
    ) -> CustomerValue | None:
        """The value model's figures for rows of features, a DataFrame or column name -> values (None
        without a value model)."""
        if self.value_model is None:
            return None
        rows, horizon = len(probability), self.horizon_days
        parts = parts_for_frame(self.value_model, frame, rows=rows, horizon_days=horizon)
        return combine(
            self.value_model,
            parts,
            churn_probability=probability,
            expected_revenue=revenue,
            horizon_days=self.horizon_days,
        )

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Exact TreeSHAP of the churn model's raw score: shape (rows, features + 1), last column the base.

        LightGBM's own ``pred_contrib`` (the same algorithm and speed as shap.TreeExplainer, without the
        wrapper's per-call overhead), parallel over rows for large inputs."""
        return np.asarray(
            self.churn_model.predict(x, pred_contrib=True, num_threads=self._threads(x)), dtype=float
        )

    # -- files ----------------------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "churn_model.txt").write_text(self.churn_model.model_to_string())
        (folder / "revenue_model.txt").write_text(self.revenue_model.model_to_string())
        spec = {
            "format": BUNDLE_FORMAT,
            "features": [asdict(f) for f in self.features],
            "calibration": asdict(self.calibration),
            "horizon_days": self.horizon_days,
            "thresholds": self.thresholds,
            "revenue_scale": self.revenue_scale,
            "value_model": None if self.value_model is None else self.value_model.to_dict(),
            "effects": None if self.effects is None else self.effects.save(folder / "effects"),
            "metadata": self.metadata,
        }
        (folder / "bundle.json").write_text(json.dumps(spec, indent=2, default=str))

    @classmethod
    def load(cls, folder: Path) -> ModelBundle:
        folder = Path(folder)
        spec = json.loads((folder / "bundle.json").read_text())
        if spec.get("format") not in _READABLE_FORMATS:
            raise ValueError(
                f"bundle format {spec.get('format')} is not supported (this version reads "
                f"{sorted(_READABLE_FORMATS)}): upgrade churnguard, or retrain with `churnguard train`"
            )
        old = spec["format"] < 5  # compatibility: the revenue forecast's names before format 5
        revenue_file = _OLD_REVENUE_FILE if old else "revenue_model.txt"
        metadata = spec.get("metadata", {})
        if old and isinstance(metadata.get("metrics"), dict):
            metadata["metrics"] = current_metric_names(metadata["metrics"])
        return cls(
            features=[FeatureInfo(**f) for f in spec["features"]],
            churn_model=lgb.Booster(model_str=(folder / "churn_model.txt").read_text()),
            revenue_model=lgb.Booster(model_str=(folder / revenue_file).read_text()),
            calibration=Calibration(**spec["calibration"]),
            horizon_days=int(spec["horizon_days"]),
            thresholds={k: float(v) for k, v in spec["thresholds"].items()},
            metadata=metadata,
            revenue_scale=float(spec.get(_OLD_REVENUE_SCALE if old else "revenue_scale", 1.0)),
            value_model=ValueModel.from_dict(spec["value_model"]) if spec.get("value_model") else None,
            effects=ActionEffects.load(folder / "effects", spec["effects"]) if spec.get("effects") else None,
        )
