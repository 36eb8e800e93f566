"""Benchmark explanations: exact TreeSHAP by LightGBM ``pred_contrib`` (what churnguard uses, through
``ModelBundle.contributions``) against ``shap.TreeExplainer(booster).shap_values``, and plain prediction.

    python benchmarks/bench_shap.py [--customers 100k] [--quick]

On the champion churn model of a freshly trained home, for batches of 1, 100 and 10,000 customers drawn
(with replacement) from the scoring features of the training data. Each figure is the median of repeated
calls (one warm-up call excluded), reported per row. Both explainers must give the same values
(``np.allclose``, the base value included); the output says whether they do.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    TrainedHome,
    churnguard_home,
    parse_count,
    run_in_child,
    seconds_per_call,
    stopwatch,
    table,
    trained_home,
)

BATCHES = (1, 100, 10_000)


def _shap_matrix(explainer: Any, x: np.ndarray) -> np.ndarray:
    """shap's values with the base value appended as the last column, like ``pred_contrib``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = explainer.shap_values(x)
    if isinstance(values, list):  # older shap: [class 0, class 1] for a binary model
        values = values[-1]
    base = np.ravel(explainer.expected_value)[-1]
    return np.column_stack([np.asarray(values, dtype=float), np.full(len(x), base)])


def _model_shape(booster: Any) -> dict[str, Any]:
    trees = booster.dump_model()["tree_info"]
    return {
        "trees": len(trees),
        "mean_leaves": float(np.mean([t["num_leaves"] for t in trees])) if trees else 0.0,
        "features": booster.num_feature(),
    }


def _rows(home: str, data_dir: str) -> tuple[Any, np.ndarray]:
    """The champion bundle and the scoring-time model matrix of every active customer."""
    from features.engine import compute_features
    from features.loading import load_dataset
    from features.snapshots import observed_until
    from serving.model_source import load_model

    with churnguard_home(Path(home)):
        bundle = load_model("models:/churnguard@champion").bundle
    dataset = load_dataset(Path(data_dir))
    return bundle, bundle.matrix(compute_features(dataset, observed_until(dataset)))


def measure(home: str, data_dir: str, batches: tuple[int, ...], min_seconds: float) -> dict[str, Any]:
    """Child body: per-row cost of predict, pred_contrib and shap.TreeExplainer at each batch size."""
    import shap

    bundle, pool = _rows(home, data_dir)
    booster = bundle.churn_model
    with stopwatch() as built:
        explainer = shap.TreeExplainer(booster)
    rng = np.random.default_rng(0)
    results = []
    for size in batches:
        x = pool[rng.integers(0, len(pool), size)]
        timing = {
            "predict": seconds_per_call(partial(bundle.churn_raw, x), min_seconds),
            "pred_contrib": seconds_per_call(partial(bundle.contributions, x), min_seconds),
            "shap": seconds_per_call(partial(_shap_matrix, explainer, x), min_seconds),
        }
        ours, theirs = bundle.contributions(x), _shap_matrix(explainer, x)
        additive = np.allclose(ours.sum(axis=1), bundle.churn_raw(x))
        results.append(
            {
                "batch": size,
                **{f"{k}_us_per_row": 1e6 * v["median"] / size for k, v in timing.items()},
                **{f"{k}_calls": v["calls"] for k, v in timing.items()},
                "allclose": bool(np.allclose(ours, theirs)),
                "max_abs_difference": float(np.max(np.abs(ours - theirs))),
                "additive": bool(additive),
            }
        )
    return {
        "rows_available": len(pool),
        "explainer_seconds": built["seconds"],
        "shap_version": shap.__version__,
        **_model_shape(booster),
        "batches": results,
    }


def run(trained: TrainedHome, quick: bool, batches: tuple[int, ...] = BATCHES) -> dict[str, Any]:
    min_seconds = 0.3 if quick else 2.0
    figures = run_in_child(measure, str(trained.home), str(trained.data), batches, min_seconds)
    figures["model_customers"] = trained.n_customers
    return figures


def to_markdown(figures: dict[str, Any]) -> str:
    rows = []
    for b in figures["batches"]:
        rows.append(
            [
                f"{b['batch']:,}",
                f"{b['predict_us_per_row']:,.1f}",
                f"{b['pred_contrib_us_per_row']:,.1f}",
                f"{b['shap_us_per_row']:,.1f}",
                f"{b['shap_us_per_row'] / b['pred_contrib_us_per_row']:.2f}x",
                f"{b['pred_contrib_us_per_row'] / b['predict_us_per_row']:.1f}x",
                "yes" if b["allclose"] else "**NO**",
                f"{b['max_abs_difference']:.1e}",
            ]
        )
    headers = ["batch rows", "predict µs/row", "pred_contrib µs/row", "shap µs/row"]
    headers += ["shap / pred_contrib", "pred_contrib / predict", "np.allclose", "max abs difference"]
    same = all(b["allclose"] for b in figures["batches"])
    additive = all(b["additive"] for b in figures["batches"])
    return "\n".join(
        [
            f"Churn model trained on {figures['model_customers']:,} customers: {figures['trees']} trees, "
            f"{figures['mean_leaves']:.1f} leaves per tree on average, {figures['features']} features; "
            f"rows drawn from {figures['rows_available']:,} scoring rows. shap {figures['shap_version']}; "
            f"building the TreeExplainer took {1000 * figures['explainer_seconds']:.1f} ms (not counted).",
            "",
            table(headers, rows),
            "",
            f"Same values: {'yes' if same else '**NO**'} — `np.allclose(pred_contrib, shap values + base value)` "
            f"at every batch size; contributions add up to the raw score: {'yes' if additive else '**NO**'}. "
            "For LightGBM models shap's TreeExplainer calls the same `pred_contrib` underneath, so the ratio "
            "is the wrapper's overhead (and its thread count: churnguard uses one thread below 256 rows).",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", default="100k", help="training size of the model explained")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="churnguard-bench-shap-") as tmp:
        trained = trained_home(Path(tmp), parse_count(args.customers), args.quick)
        print(to_markdown(run(trained, args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
