"""Model quality on many worlds: every generator scenario, the shipped model against baselines and the oracle.

    python benchmarks/bench_quality.py                          # every scenario, 8,000 customers
    python benchmarks/bench_quality.py --customers 3000 --scenarios base,seasonal --json out.json

For each scenario the world is generated once (cached), then cut at a **scoring date** T, one horizon before
the data's end: everything the product sees is strictly before T, and what happened in [T, T + horizon) is
the future it is judged on. On the cut folder, ``churnguard train`` runs exactly as a user would run it (a fresh
MLflow store, default config), and the champion it leaves scores the customers at T. Reported per world:

* ``champion``: the first ``train`` left a champion (a user can score with no manual step);
* ROC AUC on the realised future, as a share of the oracle's (the generator's true churn probabilities at T,
  ``features.synthetic.true_churn_probability``), and against a plain unconstrained LightGBM (default
  parameters, trained on the same snapshots), a recency rule and an RFM logistic regression;
* ECE at the scoring date, two ways: against the oracle's probabilities (the future's expectation, free of
  sampling noise: the verdict) and against the realised outcomes;
* spend over the horizon: total predicted / total realised, and Spearman against the realised spend, for
  the model, a run-rate and (when ``features.btyd`` is there) BG/NBD + Gamma-Gamma;
* lifetime value (``residual_value``, discounted to T at the value model's rate; each customer valued from
  the exact purchase summary at T, as batch scoring values them, and beside it from the features alone, as
  ``POST /v1/score`` does when it is sent no summary) against the oracle's, the
  generator's expected residual value at T (``features.synthetic.true_residual_value``): Spearman and the
  total ratio sum(predicted) / sum(oracle) (aim 0.85–1.15), for the model and for BG/NBD + Gamma-Gamma
  alone. The yardstick for ranking is the oracle's own ranking quality: both are ranked against the
  **realised value**, what each customer's future turned out to be as far as the data goes (revenue booked
  in [T, end), discounted to T) plus the truth's residual value at the end (its expectation from there,
  discounted to T), and the model's Spearman is reported as a share of the oracle's (aim ≥ 0.9). Beside
  it, the **data's ceiling** (:func:`data_ceiling`): the Spearman against the oracle of a LightGBM fitted
  to the oracle's own values (cross-fitted), which shows how much of the oracle's ranking the tables carry
  at all; ``--ceiling-curve 5k,20k,80k`` prints it alone as the world grows, and ``--richer-view`` beside
  it the ceiling with more of the raw tables than the features hold (:func:`richer_view`).

The cut keeps each table's own file shape (a shop export stays an invoice-line CSV with its columns.yaml), so
every world also goes through the loader as it would in production.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA_ROOT, churnguard_home, parse_count, table

HORIZON_DAYS = 90
TARGETS = {
    "auc_share_of_oracle": 0.93,
    "auc_vs_plain_lgbm": -0.003,
    "ece_vs_oracle": 0.02,
    "spend_ratio": (0.9, 1.1),
    "value_share_of_oracle": 0.9,
    "value_ratio": (0.85, 1.15),
}


@dataclass
class WorldQuality:
    scenario: str
    customers_scored: int
    churn_rate: float
    champion: bool
    promotion: str
    auc: float
    auc_oracle: float
    auc_plain_lgbm: float
    auc_recency: float
    auc_rfm_logistic: float
    ece_vs_oracle: float
    ece_realised: float
    ece_oracle_realised: float
    spend_ratio: float
    spend_spearman: float
    spend_ratio_run_rate: float
    spend_spearman_run_rate: float
    spend_ratio_btyd: float | None
    spend_spearman_btyd: float | None
    seconds_train: float
    # Lifetime value at the scoring date (None: no value model, or figures from before it).
    value_spearman: float | None = None  # Spearman(predicted residual value, oracle's)
    value_ratio: float | None = None  # sum(predicted) / sum(oracle's)
    value_spearman_realised: float | None = None  # Spearman(predicted, realised value)
    value_spearman_oracle_realised: float | None = None  # the oracle's own: Spearman(oracle's, realised)
    value_spearman_btyd: float | None = None  # BG/NBD + Gamma-Gamma alone vs the oracle's
    value_ratio_btyd: float | None = None
    value_spearman_ceiling: float | None = None  # a LightGBM fitted to the oracle's own values, vs them
    # The same, valued from the features alone (POST /v1/score without a purchase summary)
    value_spearman_features_only: float | None = None
    value_ratio_features_only: float | None = None

    @property
    def auc_share(self) -> float:
        return self.auc / self.auc_oracle

    @property
    def value_share(self) -> float | None:
        """The model's ranking of realised value as a share of the oracle's own."""
        if self.value_spearman_realised is None or not self.value_spearman_oracle_realised:
            return None
        return self.value_spearman_realised / self.value_spearman_oracle_realised

    @property
    def value_share_of_ceiling(self) -> float | None:
        """The model's Spearman against the oracle as a share of what the data's ceiling reaches."""
        if self.value_spearman is None or not self.value_spearman_ceiling:
            return None
        return self.value_spearman / self.value_spearman_ceiling

    def misses(self) -> list[str]:
        out = []
        if not self.champion:
            out.append("no champion after the first train")
        if self.auc_share < TARGETS["auc_share_of_oracle"]:
            out.append(f"AUC {self.auc_share:.3f} of the oracle's")
        if self.auc - self.auc_plain_lgbm < TARGETS["auc_vs_plain_lgbm"]:
            out.append(f"AUC {self.auc - self.auc_plain_lgbm:+.3f} vs plain LightGBM")
        if self.ece_vs_oracle > TARGETS["ece_vs_oracle"]:
            out.append(f"ECE {self.ece_vs_oracle:.3f}")
        low, high = TARGETS["spend_ratio"]
        if not low <= self.spend_ratio <= high:
            out.append(f"spend ratio {self.spend_ratio:.2f}")
        share = self.value_share
        if share is not None and share < TARGETS["value_share_of_oracle"]:
            out.append(f"value ρ {share:.2f} of the oracle's")
        low, high = TARGETS["value_ratio"]
        if self.value_ratio is not None and not low <= self.value_ratio <= high:
            out.append(f"value ratio {self.value_ratio:.2f}")
        return out


# -- the cut ------------------------------------------------------------------------------------------
def _mapping(folder: Path) -> dict[str, Any]:
    path = folder / "columns.yaml"
    return yaml.safe_load(path.read_text()) or {} if path.exists() else {}


def _table_files(folder: Path) -> dict[str, tuple[Path, str, str | None]]:
    """table -> (file, its timestamp column as named in the file, date format) for every table present."""
    mapping = _mapping(folder)
    found = {}
    for name, stamp in (
        ("transactions", "timestamp"),
        ("interactions", "timestamp"),
        ("cancellations", "timestamp"),
        ("customers", "signup_date"),
    ):
        spec = mapping.get(name, {}) or {}
        candidates = (
            [folder / spec["file"]]
            if "file" in spec
            else [folder / f"{name}.parquet", folder / f"{name}.csv"]
        )
        for path in candidates:
            if path.exists():
                column = (spec.get("columns") or {}).get(stamp, stamp)
                found[name] = (path, column, spec.get("date_format"))
    return found


def cut_folder(source: Path, target: Path, before: pd.Timestamp) -> None:
    """Copy a data folder keeping only rows dated strictly before ``before``, in each file's own shape."""
    target.mkdir(parents=True, exist_ok=True)
    for extra in ("columns.yaml",):
        if (source / extra).exists():
            (target / extra).write_text((source / extra).read_text())
    for _name, (path, column, date_format) in _table_files(source).items():
        frame = (
            pd.read_parquet(path)
            if path.suffix == ".parquet"
            else pd.read_csv(path, dtype=str, keep_default_na=False)
        )
        if column in frame.columns:
            raw = frame[column]
            stamps = (
                pd.to_datetime(raw, format=date_format, errors="coerce") if path.suffix == ".csv" else raw
            )
            keep = stamps.isna() | (stamps < before) if column == "signup_date" else stamps < before
            frame = frame[keep.to_numpy()]
        if path.suffix == ".parquet":
            frame.to_parquet(target / path.name, index=False)
        else:
            frame.to_csv(target / path.name, index=False)


# -- metrics ------------------------------------------------------------------------------------------
def ece(p: np.ndarray, target: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-count bins of ``p``; ``target`` may be outcomes or true
    probabilities (then it is calibration against the truth, free of sampling noise)."""
    order = np.argsort(p, kind="stable")
    total = 0.0
    for chunk in np.array_split(order, bins):
        if len(chunk):
            total += len(chunk) * abs(float(p[chunk].mean()) - float(target[chunk].mean()))
    return total / len(p)


def _ratio_and_rank(predicted: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    return float(predicted.sum() / max(actual.sum(), 1e-9)), float(spearmanr(predicted, actual).statistic)


def _btyd_value(
    dataset: Any, cutoff: pd.Timestamp, ids: pd.Series, rate: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """BG/NBD + Gamma-Gamma alone: expected spend over the horizon (undiscounted) and residual value
    (discounted at ``rate``), fitted as churnguard's value model fits them (heavy-tailed order values capped
    at their 99th percentile when Gamma-Gamma refuses them, as practitioners do); None when even that
    fails."""
    from features import btyd
    from features.value import fit_value_model

    try:
        model = fit_value_model(dataset.transactions, cutoff, economics=None)
    except btyd.ModelFitError as exc:
        print(f"BG/NBD + Gamma-Gamma baseline not available: {exc}")
        return None
    summary = btyd.rfm_summary(dataset.transactions, cutoff)
    horizon = btyd.expected_value(
        model.purchases, model.spend, summary, horizon_days=HORIZON_DAYS, annual_discount_rate=0.0
    )
    lifetime = btyd.residual_value(model.purchases, model.spend, summary, annual_discount_rate=rate)

    def per_id(value: Any) -> np.ndarray:
        return pd.Series(np.asarray(value), index=summary.index).reindex(ids).fillna(0.0).to_numpy(float)

    return per_id(horizon), per_id(lifetime)


def realised_value(
    transactions: pd.DataFrame, truth: pd.DataFrame, cutoff: pd.Timestamp, rate: float
) -> pd.Series:
    """Per truth customer, the value their future realised as far as the data goes: revenue booked in
    [cutoff, end), each amount discounted to the cutoff by ``(1 + rate) ** (-days / 365.25)``, plus the
    truth's expected residual value at the end, discounted alike."""
    from features.synthetic import true_residual_value

    end = pd.Timestamp(truth.attrs["synthetic"]["end"])
    stamps = transactions["timestamp"]
    future = transactions[(stamps >= cutoff) & (stamps < end)]
    years = (future["timestamp"] - cutoff) / pd.Timedelta(days=365.25)
    booked = (future["amount"] * (1.0 + rate) ** -years).groupby(future["customer_id"].astype(str)).sum()
    later = true_residual_value(truth, end, annual_discount_rate=rate) * (1.0 + rate) ** -(
        (end - cutoff) / pd.Timedelta(days=365.25)
    )
    later.index = later.index.astype(str)
    return later + booked.reindex(later.index, fill_value=0.0)


def value_quality(
    predicted: np.ndarray, oracle: np.ndarray, realised: np.ndarray, btyd_value: np.ndarray | None
) -> dict[str, float | None]:
    """The lifetime-value figures of one world (see the module docstring), over customers with all three."""
    known = np.isfinite(predicted) & np.isfinite(oracle) & np.isfinite(realised)
    if known.sum() < 10:
        return {}

    def rho(a: np.ndarray, b: np.ndarray) -> float:
        return float(spearmanr(a[known], b[known]).statistic)

    total = max(float(oracle[known].sum()), 1e-9)
    figures: dict[str, float | None] = {
        "value_spearman": rho(predicted, oracle),
        "value_ratio": float(predicted[known].sum()) / total,
        "value_spearman_realised": rho(predicted, realised),
        "value_spearman_oracle_realised": rho(oracle, realised),
    }
    if btyd_value is not None:
        figures["value_spearman_btyd"] = rho(btyd_value, oracle)
        figures["value_ratio_btyd"] = float(btyd_value[known].sum()) / total
    return figures


def data_ceiling(frame: pd.DataFrame, oracle: np.ndarray, seed: int = 0, folds: int = 5) -> float | None:
    """The data's ceiling for ranking lifetime value: Spearman against the oracle's residual values of a
    LightGBM **fitted to those values themselves** (log scale), cross-fitted over ``folds`` folds, on
    ``frame``'s numeric columns (the features at the scoring date and the purchase summary).

    No product has the oracle's answers to learn from; this model does, for four fifths of the customers
    each time, so it shows how much of the oracle's ranking the tables can carry at all. What it misses
    lies in the latent state (activity, expectations, the draw of who leaves) that no table records."""
    import lightgbm as lgb
    from sklearn.model_selection import KFold

    known = np.isfinite(oracle)
    if known.sum() < 10 * folds:
        return None
    x = frame.select_dtypes(include=[np.number, bool]).astype(float).to_numpy()[known]
    y = np.log1p(np.maximum(oracle[known], 0.0))
    fitted = np.zeros(len(y))
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(x):
        model = lgb.LGBMRegressor(
            n_estimators=400,
            learning_rate=0.03,
            num_leaves=15,
            min_child_samples=30,
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.8,
            random_state=seed,
            verbose=-1,
        )
        fitted[test] = model.fit(x[train], y[train]).predict(x[test])
    return float(spearmanr(fitted, oracle[known]).statistic)


def ceiling_frame(dataset: Any, cutoff: pd.Timestamp, features: pd.DataFrame, rate: float) -> pd.DataFrame:
    """The features at ``cutoff`` with each customer's purchase summary (frequency, recency, age, mean
    order value) and BG/NBD + Gamma-Gamma's residual value beside them, aligned with ``features``."""
    from features import btyd
    from features.value import fit_value_model

    ids = features["customer_id"].astype(str)
    summary = btyd.rfm_summary(dataset.transactions, cutoff)
    summary.index = summary.index.astype(str)
    try:
        model = fit_value_model(dataset.transactions, cutoff, economics=None)
        summary["btyd_residual_value"] = np.asarray(
            btyd.residual_value(model.purchases, model.spend, summary, annual_discount_rate=rate)
        )
    except btyd.ModelFitError:
        pass
    extra = summary.add_prefix("summary_").reindex(ids).reset_index(drop=True)
    return pd.concat([features.drop(columns=["customer_id"]).reset_index(drop=True), extra], axis=1)


def _per_month(
    frame: pd.DataFrame,
    ids: pd.Series,
    cutoff: pd.Timestamp,
    months: int,
    prefix: str,
    value: str | None = None,
) -> pd.DataFrame:
    """Per customer (rows of ``ids``), the count (or sum of ``value``) of ``frame``'s rows in each of the
    ``months`` 30-day months before ``cutoff``, newest first."""
    age = (cutoff - frame["timestamp"]).dt.days // 30
    inside = frame[(age >= 0) & (age < months)]
    amounts = inside[value] if value else pd.Series(1.0, index=inside.index)
    table_ = amounts.groupby([inside["customer_id"].astype(str), age[inside.index]]).sum().unstack()
    table_ = table_.reindex(index=ids.to_numpy(), columns=range(months)).fillna(0.0)
    table_.columns = [f"{prefix}{month}" for month in table_.columns]
    return table_.reset_index(drop=True)


def richer_view(dataset: Any, cutoff: pd.Timestamp, ids: pd.Series) -> pd.DataFrame:
    """More of the raw tables than the product's features hold, to test whether the ceiling is only the
    ceiling of those features: orders per month (36 months), spend per month (24), late deliveries,
    complaints, support contacts and surveys per month (12), the last and mean satisfaction and NPS, the
    count of unresolved contacts and the customer's plan."""
    tx = dataset.transactions[dataset.transactions["timestamp"] < cutoff]
    parts = [
        _per_month(tx, ids, cutoff, 36, "orders_m"),
        _per_month(tx, ids, cutoff, 24, "spend_m", "amount"),
    ]
    if "delivery_delay_days" in tx:
        late = tx.assign(late=(tx["delivery_delay_days"] > 0).astype(float))
        parts.append(_per_month(late, ids, cutoff, 12, "late_m", "late"))
    contacts = dataset.interactions
    contacts = contacts[contacts["timestamp"] < cutoff].sort_values("timestamp", kind="stable")
    for kind in ("complaint", "support", "survey"):
        parts.append(_per_month(contacts[contacts["type"] == kind], ids, cutoff, 12, f"{kind}_m"))
    who = contacts["customer_id"].astype(str)
    for column in ("satisfaction", "nps"):
        if column in contacts:
            answers = contacts[column].groupby(who)
            parts.append(
                pd.DataFrame(
                    {
                        f"last_{column}": answers.last().reindex(ids.to_numpy()).to_numpy(),
                        f"mean_{column}": answers.mean().reindex(ids.to_numpy()).to_numpy(),
                    }
                )
            )
    if "resolved" in contacts:
        unresolved = (contacts["resolved"] == False).groupby(who).sum()  # noqa: E712 (nullable booleans)
        parts.append(pd.DataFrame({"unresolved": unresolved.reindex(ids.to_numpy()).fillna(0).to_numpy()}))
    customers = dataset.customers
    if "plan" in customers:
        plan = customers.set_index(customers["customer_id"].astype(str))["plan"].reindex(ids.to_numpy())
        parts.append(pd.DataFrame({f"plan_{p}": (plan == p).to_numpy(float) for p in plan.dropna().unique()}))
    return pd.concat(parts, axis=1)


def ceiling_curve(
    scenario: str, sizes: list[int], seed: int, richer: bool = False
) -> list[tuple[int, int, float | None, float | None]]:
    """The data's ceiling (:func:`data_ceiling`) as the world grows: (customers generated, customers
    valued, ceiling, ceiling on the product's columns plus :func:`richer_view` when ``richer``, else None).
    No training: it shows whether a larger benchmark, or more of the raw tables, could lift the ceiling."""
    from features.economics import DEFAULT_DISCOUNT_RATE as RATE
    from features.engine import compute_features
    from features.loading import load_dataset
    from features.snapshots import observed_until
    from features.synthetic import load_truth, true_residual_value

    out = []
    for size in sizes:
        data, truth_dir = world_folder(scenario, size, seed)
        full = load_dataset(data)
        cutoff = observed_until(full) - pd.Timedelta(days=HORIZON_DAYS)
        features = compute_features(full, cutoff)
        oracle = true_residual_value(load_truth(truth_dir), cutoff, annual_discount_rate=RATE)
        oracle.index = oracle.index.astype(str)
        values = oracle.reindex(features["customer_id"].astype(str)).to_numpy(float)
        frame = ceiling_frame(full, cutoff, features, RATE)
        rich = None
        if richer:
            more = richer_view(full, cutoff, features["customer_id"].astype(str))
            rich = data_ceiling(pd.concat([frame, more], axis=1), values, seed)
        out.append((size, int(np.isfinite(values).sum()), data_ceiling(frame, values, seed), rich))
    return out


def _plain_lightgbm(
    dataset: Any, cutoff: pd.Timestamp, names: list[str], scoring: pd.DataFrame
) -> np.ndarray:
    """Default LightGBM (31 leaves, 100 trees) on every fully observed snapshot before the cutoff."""
    import lightgbm as lgb

    from features.snapshots import build_snapshots

    step = pd.Timedelta(days=30)
    newest = cutoff - pd.Timedelta(days=HORIZON_DAYS)
    cutoffs = [newest - step * k for k in range(7)]
    first = dataset.transactions["timestamp"].min()
    cutoffs = sorted(c for c in cutoffs if c - first >= step)
    frame = pd.concat([s.frame for s in build_snapshots(dataset, cutoffs, HORIZON_DAYS)], ignore_index=True)
    x = _model_frame(frame, names)
    model = lgb.LGBMClassifier(verbose=-1, n_jobs=2).fit(x, frame["churned"].astype(int))
    return model.predict_proba(_model_frame(scoring, names, like=x))[:, 1]


def _model_frame(frame: pd.DataFrame, names: list[str], like: pd.DataFrame | None = None) -> pd.DataFrame:
    out = frame[names].copy()
    for name in names:
        if like is not None and isinstance(like[name].dtype, pd.CategoricalDtype):
            out[name] = pd.Categorical(out[name].astype("string"), categories=like[name].cat.categories)
        elif not pd.api.types.is_numeric_dtype(out[name]):
            out[name] = out[name].astype("string").astype("category")
    return out


# -- one world ----------------------------------------------------------------------------------------
def world_folder(scenario: str, customers: int, seed: int) -> tuple[Path, Path]:
    from features.synthetic import generate_dataset

    data = DATA_ROOT / f"quality-{scenario}-{customers}-s{seed}"
    truth = data.with_name(data.name + "-truth")
    if (truth / "meta.json").exists() and not (truth / "pull.npy").exists():
        for stale in (data, truth):  # cached before the truth carried residual value
            shutil.rmtree(stale)
    if not (truth / "meta.json").exists():
        generate_dataset(data, customers, seed, truth_dir=truth, scenario=scenario)
    return data, truth


def evaluate_world(scenario: str, customers: int, seed: int, work: Path) -> WorldQuality:
    from features.economics import DEFAULT_DISCOUNT_RATE
    from features.engine import compute_features, compute_labels
    from features.loading import load_dataset
    from features.model_store import load_model
    from features.settings import get_settings
    from features.snapshots import observed_until
    from features.synthetic import load_truth, true_churn_probability, true_residual_value
    from features.value import PART_COLUMNS, attach_parts
    from training.config import TrainConfig
    from training.pipeline import train

    data, truth_dir = world_folder(scenario, customers, seed)
    full = load_dataset(data)
    cutoff = observed_until(full) - pd.Timedelta(days=HORIZON_DAYS)
    cut = work / scenario / "data"
    cut_folder(data, cut, cutoff)
    seen = load_dataset(cut)
    with churnguard_home(work / scenario / "home"):
        started = time.perf_counter()
        result = train(cut, TrainConfig(), get_settings())
        seconds = time.perf_counter() - started
        try:
            bundle = load_model(f"models:/{get_settings().model_name}@champion").bundle
            champion = True
        except Exception:
            bundle = load_model(f"models:/{get_settings().model_name}/{result.version}").bundle
            champion = False
    scoring = compute_features(seen, cutoff)
    labels = compute_labels(full, cutoff, HORIZON_DAYS).set_index("customer_id")
    scoring = scoring[scoring["customer_id"].isin(labels.index)].reset_index(drop=True)
    y = labels.loc[scoring["customer_id"], "churned"].to_numpy(bool)
    spend = labels.loc[scoring["customer_id"], "future_spend"].to_numpy(float)
    from_features = bundle.predict(scoring)["residual_value"].to_numpy(float)
    if bundle.value_model is not None:  # as batch scoring values them: the exact purchase summary at T
        scoring = attach_parts(
            bundle.value_model, scoring, seen.transactions, cutoff, horizon_days=bundle.horizon_days
        )
    predicted = bundle.predict(scoring)
    revenue_column = f"expected_revenue_{HORIZON_DAYS}d"
    p, revenue = predicted["churn_probability"].to_numpy(), predicted[revenue_column].to_numpy()

    truth = load_truth(truth_dir)
    oracle = true_churn_probability(truth, cutoff, HORIZON_DAYS)
    oracle.index = oracle.index.astype(str)
    p_true = oracle.reindex(scoring["customer_id"].astype(str)).to_numpy(float)
    known = ~np.isnan(p_true)
    names = bundle.feature_names

    from training.fit import (
        predict_recency,
        predict_rfm_logistic,
        recency_baseline,
        rfm_logistic_baseline,
        run_rate_revenue,
    )

    history = pd.concat([s.frame for s in _history_snapshots(seen, cutoff)], ignore_index=True)
    y_hist = history["churned"].to_numpy(bool)
    recency = predict_recency(recency_baseline(history, y_hist), scoring)
    rfm = predict_rfm_logistic(rfm_logistic_baseline(history, y_hist, seed), scoring)
    plain = _plain_lightgbm(seen, cutoff, names, scoring)
    run_rate = run_rate_revenue(scoring, HORIZON_DAYS)
    value_model = bundle.value_model
    rate = DEFAULT_DISCOUNT_RATE if value_model is None else value_model.annual_discount_rate
    btyd_values = _btyd_value(seen, cutoff, scoring["customer_id"], rate)
    btyd_value, btyd_lifetime = btyd_values if btyd_values is not None else (None, None)
    spend_ratio, spend_rank = _ratio_and_rank(revenue, spend)
    rr_ratio, rr_rank = _ratio_and_rank(run_rate, spend)
    bt = _ratio_and_rank(btyd_value, spend) if btyd_value is not None else (None, None)
    ids = scoring["customer_id"].astype(str)
    oracle_value = true_residual_value(truth, cutoff, annual_discount_rate=rate)
    oracle_value.index = oracle_value.index.astype(str)
    realised = realised_value(full.transactions, truth, cutoff, rate).reindex(ids).to_numpy(float)
    value = value_quality(
        predicted["residual_value"].to_numpy(float),
        oracle_value.reindex(ids).to_numpy(float),
        realised,
        btyd_lifetime,
    )
    approximated = value_quality(from_features, oracle_value.reindex(ids).to_numpy(float), realised, None)
    if approximated:
        value["value_spearman_features_only"] = approximated["value_spearman"]
        value["value_ratio_features_only"] = approximated["value_ratio"]
    value["value_spearman_ceiling"] = data_ceiling(
        ceiling_frame(seen, cutoff, scoring.drop(columns=list(PART_COLUMNS), errors="ignore"), rate),
        oracle_value.reindex(ids).to_numpy(float),
        seed,
    )
    return WorldQuality(
        scenario=scenario,
        customers_scored=len(scoring),
        churn_rate=float(y.mean()),
        champion=champion,
        promotion=str(result.promotion_reason),
        auc=float(roc_auc_score(y, p)),
        auc_oracle=float(roc_auc_score(y[known], p_true[known])),
        auc_plain_lgbm=float(roc_auc_score(y, plain)),
        auc_recency=float(roc_auc_score(y, recency)),
        auc_rfm_logistic=float(roc_auc_score(y, rfm)),
        ece_vs_oracle=ece(p[known], p_true[known]),
        ece_realised=ece(p, y.astype(float)),
        ece_oracle_realised=ece(p_true[known], y[known].astype(float)),
        spend_ratio=spend_ratio,
        spend_spearman=spend_rank,
        spend_ratio_run_rate=rr_ratio,
        spend_spearman_run_rate=rr_rank,
        spend_ratio_btyd=bt[0],
        spend_spearman_btyd=bt[1],
        seconds_train=seconds,
        **value,
    )


def _history_snapshots(dataset: Any, cutoff: pd.Timestamp) -> list[Any]:
    from features.snapshots import build_snapshots

    newest = cutoff - pd.Timedelta(days=HORIZON_DAYS)
    first = dataset.transactions["timestamp"].min()
    cutoffs = sorted(
        c
        for c in (newest - pd.Timedelta(days=30 * k) for k in range(7))
        if c - first >= pd.Timedelta(days=30)
    )
    return build_snapshots(dataset, cutoffs, HORIZON_DAYS)


# -- report -------------------------------------------------------------------------------------------
def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def markdown(results: list[WorldQuality]) -> str:
    f = _f
    rows = [
        [
            r.scenario,
            f"{r.customers_scored:,}",
            f(r.churn_rate, 2),
            "yes" if r.champion else "**no**",
            f(r.auc),
            f(r.auc_share),
            f(r.auc_plain_lgbm),
            f(r.auc_recency),
            f(r.auc_rfm_logistic),
            f(r.ece_vs_oracle),
            f(r.ece_realised),
            f(r.spend_ratio, 2),
            f(r.spend_spearman),
            f(r.spend_ratio_run_rate, 2),
            f(r.spend_ratio_btyd, 2),
            f(r.spend_spearman_btyd),
            f(r.value_spearman),
            f(r.value_ratio, 2),
            f(r.value_share, 2),
            "; ".join(r.misses()) or "all met",
        ]
        for r in results
    ]
    headers = [
        "world",
        "scored",
        "churn",
        "champion",
        "AUC",
        "÷ oracle",
        "plain LGBM",
        "recency",
        "RFM logit",
        "ECE vs oracle",
        "ECE realised",
        "spend ratio",
        "spend ρ",
        "run-rate ratio",
        "BG/NBD ratio",
        "BG/NBD ρ",
        "value ρ vs oracle",
        "value ratio",
        "value ρ ÷ oracle's",
        "targets",
    ]
    return table(headers, rows)


def value_markdown(results: list[WorldQuality]) -> str:
    """The lifetime-value figures in full: the model, BG/NBD + Gamma-Gamma alone, and the yardstick."""
    f = _f
    rows = [
        [
            r.scenario,
            f(r.value_spearman),
            f(r.value_ratio, 2),
            f(r.value_spearman_btyd),
            f(r.value_ratio_btyd, 2),
            f(r.value_spearman_realised),
            f(r.value_spearman_oracle_realised),
            f(r.value_share, 2),
            f(r.value_spearman_ceiling),
            f(r.value_share_of_ceiling, 2),
            f(r.value_spearman_features_only),
            f(r.value_ratio_features_only, 2),
        ]
        for r in results
    ]
    headers = [
        "world",
        "ρ vs oracle",
        "total ÷ oracle",
        "BG/NBD alone ρ vs oracle",
        "BG/NBD alone total ÷ oracle",
        "ρ vs realised",
        "oracle's ρ vs realised",
        "÷ oracle's",
        "data's ceiling: ρ vs oracle of a model fitted to the oracle",
        "ρ vs oracle ÷ ceiling",
        "features only: ρ vs oracle",
        "features only: total ÷ oracle",
    ]
    return table(headers, rows)


def run(customers: int, work_dir: Path, seed: int = 0, scenarios: list[str] | None = None) -> dict[str, Any]:
    """Every world (or ``scenarios``) at ``customers``: the figures for run_all (``make bench``)."""
    from features.synthetic import SCENARIOS

    results = [
        evaluate_world(name, customers, seed, work_dir / "quality") for name in scenarios or list(SCENARIOS)
    ]
    return {"customers": customers, "worlds": [asdict(r) | {"misses": r.misses()} for r in results]}


def _from_figures(figures: dict[str, Any]) -> list[WorldQuality]:
    names = {f.name for f in dataclasses.fields(WorldQuality)}
    return [WorldQuality(**{k: v for k, v in world.items() if k in names}) for world in figures["worlds"]]


def to_markdown(figures: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"Each world generated with {figures['customers']:,} customers and cut one horizon "
            "(90 days) before its end: `churnguard train` on the cut folder as a user runs it, the champion "
            "it leaves scores the customers at the cut, judged on what happened next. Baselines are trained "
            "on the same snapshots. ECE vs oracle compares the probabilities with the generator's true ones "
            "(the verdict); ECE realised with the outcomes (sampling noise included).",
            "",
            markdown(_from_figures(figures)),
            "",
            "Lifetime value (`residual_value`, discounted at the value model's rate) at the scoring date. The "
            "oracle is the generator's expected residual value from each customer's latent state "
            "(`features.synthetic.true_residual_value`). Realised value: revenue booked from the scoring date "
            "to the data's end, discounted, plus the truth's expected residual value at the end, discounted "
            "alike; the oracle's Spearman against it is the best ranking possible, and the model's is given "
            "as a share of it (aim ≥ 0.9). Aim for the total: 0.85–1.15 of the oracle's. The data's ceiling is "
            "the Spearman against the oracle of a LightGBM fitted to the oracle's own values (cross-fitted): "
            "how much of the oracle's ranking these tables carry at all.",
            "",
            value_markdown(_from_figures(figures)),
        ]
    )


def targets(figures: dict[str, Any]) -> list[list[str]]:
    worlds = _from_figures(figures)
    rows = []
    for world in worlds:
        misses = world.misses()
        rows.append(
            [
                f"model quality on the {world.scenario} world (champion, AUC, ECE, spend ratio, value)",
                f"AUC {world.auc:.3f} ({world.auc_share:.2f} of oracle), ECE {world.ece_vs_oracle:.3f}, "
                f"spend ratio {world.spend_ratio:.2f}, value ρ {_f(world.value_share, 2)} of the oracle's "
                f"and total {_f(world.value_ratio, 2)} of it",
                "met" if not misses else "**missed**: " + "; ".join(misses),
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    from features.synthetic import SCENARIOS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated; default: all")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument(
        "--ceiling-curve",
        metavar="SIZES",
        help="only the data's value ceiling per scenario at these world sizes (comma-separated, e.g. "
        "5k,20k,80k): no training",
    )
    parser.add_argument(
        "--richer-view",
        action="store_true",
        help="with --ceiling-curve: also the ceiling with more of the raw tables than the features hold "
        "(monthly histories, survey answers, unresolved contacts, plan)",
    )
    args = parser.parse_args(argv)
    if args.ceiling_curve:
        sizes = [parse_count(size) for size in args.ceiling_curve.split(",")]
        rows = [
            [scenario, f"{size:,}", f"{valued:,}", _f(ceiling), *([_f(rich)] if args.richer_view else [])]
            for scenario in args.scenarios.split(",")
            for size, valued, ceiling, rich in ceiling_curve(scenario, sizes, args.seed, args.richer_view)
        ]
        headers = ["world", "customers generated", "customers valued", "data's ceiling ρ vs oracle"]
        print(table(headers + (["with the richer view"] if args.richer_view else []), rows))
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="cg-quality-") as tmp:
        for scenario in args.scenarios.split(","):
            started = time.perf_counter()
            quality = evaluate_world(scenario, args.customers, args.seed, Path(tmp))
            results.append(quality)
            print(
                f"{scenario}: {time.perf_counter() - started:.0f}s  "
                + json.dumps(asdict(quality), default=str)
            )
    print(markdown(results))
    print()
    print(value_markdown(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) | {"misses": r.misses()} for r in results], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
