"""Batch scoring: every customer of a dataset as of a date, written atomically and into the store."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from features.engine import compute_features
from features.io import write_frame_atomic
from features.loading import Dataset
from serving.actions import Playbook
from serving.history import recent_history
from serving.model_source import LoadedModel
from serving.scoring import score_features
from serving.store import ScoreStore


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
    chunk_rows: int = 50_000,
    threads: int = 2,
    report: Callable[[str, float], None] | None = None,
) -> pd.DataFrame:
    """Scores for every customer active at ``as_of``, with reasons, action, inputs and recent history."""
    report = report or (lambda stage, fraction: None)
    report("computing features", 0.05)
    features = compute_features(dataset, as_of, threads)
    stamp = str(as_of.date())
    parts = []
    for start in range(0, len(features), chunk_rows):
        report(f"scoring {start:,}/{len(features):,}", 0.2 + 0.6 * start / max(len(features), 1))
        parts.append(
            score_features(
                model.bundle, features.iloc[start : start + chunk_rows], playbook, model.info, stamp, top_k
            )
        )
    scores = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    report("collecting inputs and history", 0.85)
    inputs = features.reindex(columns=model.bundle.feature_names)
    scores["features"] = (
        inputs.to_json(orient="records", lines=True, double_precision=6).splitlines() if len(inputs) else []
    )
    histories = recent_history(dataset, as_of, threads)
    empty = '{"purchases": [], "interactions": []}'
    scores["history"] = [histories.get(c, empty) for c in scores["customer_id"]]
    return scores


def to_output(scores: pd.DataFrame) -> pd.DataFrame:
    """The file form of scores: flat columns a CRM can import, nested parts as JSON text."""
    out = scores.drop(columns=["features", "history"], errors="ignore").copy()
    out["action_name"] = [a["name"] for a in out["action"]]
    out["expected_net_value"] = [a["expected_net_value"] for a in out["action"]]
    out["top_reason"] = [r[0]["sentence"] if r else "" for r in out["reasons"]]
    out["model_version"] = [m["version"] for m in out["model"]]
    for column in ("reasons", "action", "model"):
        out[column] = [json.dumps(v, default=str) for v in out[column]]
    return out


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
            },
        )
    return BatchResult(len(scores), time.perf_counter() - started, str(as_of.date()))
