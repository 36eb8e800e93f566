"""Batch scoring: every customer of a dataset as of a date, written atomically and into the store."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from features.bundle import ModelBundle
from features.engine import compute_features
from features.io import write_frame_atomic
from features.loading import Dataset
from serving.actions import Playbook
from serving.history import recent_history
from serving.model_source import LoadedModel
from serving.scoring import ModelOutputs, model_outputs, score_features
from serving.store import ScoreStore

FILE_COLUMNS = (
    "customer_id",
    "as_of",
    "churn_probability",
    "risk_tier",
    "clv",
    "value_at_risk",
    "segment",
    "reasons",
    "action",
    "model",
    "action_name",
    "expected_net_value",
    "top_reason",
    "model_version",
)


@dataclass(frozen=True)
class BatchResult:
    customers: int
    seconds: float
    as_of: str

    @property
    def per_second(self) -> float:
        return self.customers / self.seconds if self.seconds else float("inf")


def score_dataset(
    dataset: Dataset,
    as_of: pd.Timestamp,
    model: LoadedModel,
    playbook: Playbook,
    *,
    top_k: int = 5,
    chunk_rows: int = 20_000,
    threads: int = 2,
    report: Callable[[str, float], None] | None = None,
) -> pd.DataFrame:
    """Scores for every customer active at ``as_of``, with reasons, action, inputs and recent history.

    Reasons, action and model are JSON text, written once here and kept as is by the file and the store;
    ``features`` holds each customer's model inputs as a JSON array in the order of
    ``model.bundle.feature_names``.

    Both cores stay busy: the next chunk's SHAP values and CLV are computed in LightGBM (C code, off the
    interpreter lock) while this chunk's reasons and actions are written in Python, and the recent history
    is gathered on another thread meanwhile (numpy, Arrow and DuckDB)."""
    report = report or (lambda stage, fraction: None)
    report("computing features", 0.05)
    features = compute_features(dataset, as_of, threads)
    stamp = str(as_of.date())
    ids = features["customer_id"].astype(str).tolist()
    bundle = model.bundle
    with ThreadPoolExecutor(max_workers=1) as background, ThreadPoolExecutor(max_workers=1) as trees:
        histories = background.submit(recent_history, dataset, as_of, ids, threads)
        chunks = [features.iloc[start : start + chunk_rows] for start in range(0, len(features), chunk_rows)]
        upcoming = trees.submit(_model_inputs_and_outputs, bundle, chunks[0]) if chunks else None
        parts = []
        for i, chunk in enumerate(chunks):
            report(f"scoring {i * chunk_rows:,}/{len(features):,}", 0.2 + 0.6 * i / len(chunks))
            matrix, outputs = upcoming.result()  # type: ignore[union-attr]
            if i + 1 < len(chunks):
                upcoming = trees.submit(_model_inputs_and_outputs, bundle, chunks[i + 1])
            parts.append(
                score_features(
                    bundle,
                    chunk,
                    playbook,
                    model.info,
                    stamp,
                    top_k,
                    encoded=True,
                    matrix=matrix,
                    outputs=outputs,
                )
            )
        scores = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        report("collecting inputs and history", 0.85)
        # Only the store reads these: kept as Python text, not converted to text columns.
        scores["features"] = pd.Series(input_rows(features, model.bundle.feature_names), dtype=object)
        scores["history"] = pd.Series(histories.result(), dtype=object)
    return scores


def _model_inputs_and_outputs(bundle: ModelBundle, chunk: pd.DataFrame) -> tuple[np.ndarray, ModelOutputs]:
    matrix = bundle.matrix(chunk)
    return matrix, model_outputs(bundle, matrix)


def input_rows(features: pd.DataFrame, names: list[str]) -> list[str]:
    """Each row's model inputs as a JSON array of values in the order of ``names`` (numbers to 6 decimals).

    One encoder call for all rows, split at the row boundaries; should a text value contain the boundary
    itself, the rows are written as JSON objects instead (the store reads both)."""
    inputs = features.reindex(columns=names)
    if not len(inputs):
        return []
    rows = inputs.to_json(orient="values", double_precision=6)[2:-2].split("],[")
    if len(rows) != len(inputs):
        return inputs.to_json(orient="records", lines=True, double_precision=6).splitlines()
    return [f"[{row}]" for row in rows]


def to_output(scores: pd.DataFrame) -> pd.DataFrame:
    """The file form of scores: flat columns a CRM can import, nested parts as JSON text."""
    out = scores.drop(columns=["features", "history"], errors="ignore")
    versions = {text: json.loads(text)["version"] for text in out["model"].unique()}
    return out.assign(model_version=out["model"].map(versions))[list(FILE_COLUMNS)]


def run_batch(
    dataset: Dataset,
    as_of: pd.Timestamp,
    model: LoadedModel,
    playbook: Playbook,
    out_file: Path | None,
    store: ScoreStore | None,
    *,
    top_k: int = 5,
    threads: int = 2,
    report: Callable[[str, float], None] | None = None,
) -> BatchResult:
    """Score, then write the file (atomically) and refresh the store (one transaction)."""
    started = time.perf_counter()
    scores = score_dataset(dataset, as_of, model, playbook, top_k=top_k, threads=threads, report=report)
    if report:
        report("writing", 0.9)
    if out_file is not None:
        write_frame_atomic(to_output(scores), out_file)
    if store is not None:
        store.replace_all(
            scores,
            {
                "as_of": str(as_of.date()),
                "model": model.info.as_dict(),
                "scored_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
                "customers": len(scores),
                "feature_names": model.bundle.feature_names,
            },
        )
    return BatchResult(len(scores), time.perf_counter() - started, str(as_of.date()))
