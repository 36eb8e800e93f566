"""Batch scoring: every customer of a dataset as of a date, written atomically and into the store.

:func:`publish_scores` is the whole job behind ``churnguard score`` (load the model and the data, score,
write the file, refresh the store); :func:`run_batch` is its scoring and writing part, for callers that
already hold a model and a dataset.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from features.bundle import ModelBundle, ModelInfo
from features.engine import compute_features
from features.io import write_frame_atomic
from features.loading import Dataset
from features.progress import Report, silent
from features.referrals import referral_values, referred_values
from features.value import attach_parts
from serving.encoding import FILE_COLUMNS, input_rows, spreadsheet_safe
from serving.history import recent_history
from serving.monitor import HistoryPolicy, RunInputs, record_run
from serving.scoring import ModelOutputs, Scorer, model_outputs
from serving.store import ScoreStore

__all__ = [
    "FILE_COLUMNS",
    "BatchResult",
    "HistoryPolicy",
    "PublishRequest",
    "Published",
    "ScoresFile",
    "publish_scores",
    "run_batch",
    "score_dataset",
    "to_output",
]


@dataclass(frozen=True)
class BatchResult:
    customers: int
    seconds: float
    as_of: str
    run_id: int | None = None  # the run kept in the store's history, if any

    @property
    def per_second(self) -> float:
        return self.customers / self.seconds if self.seconds else float("inf")


@dataclass(frozen=True)
class ScoresFile:
    """Where the scores file goes and, for CSV, how it is written.

    A CSV is read by spreadsheets, where a text cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a
    carriage return runs as a formula: such cells are prefixed with ``'`` unless ``raw`` (see
    :func:`serving.encoding.spreadsheet_cell`). ``excel`` starts the file with a UTF-8 byte-order mark
    so that spreadsheet programs read accents right."""

    path: Path
    raw: bool = False
    excel: bool = False

    def write(self, scores: pd.DataFrame) -> None:
        """Write the file form of ``scores`` atomically."""
        frame = to_output(scores)
        if self.path.suffix != ".csv":
            write_frame_atomic(frame, self.path)
            return
        write_frame_atomic(
            frame if self.raw else spreadsheet_safe(frame),
            self.path,
            csv_encoding="utf-8-sig" if self.excel else "utf-8",
        )


def score_dataset(
    dataset: Dataset,
    as_of: pd.Timestamp,
    scorer: Scorer,
    *,
    chunk_rows: int = 20_000,
    threads: int = 2,
    report: Report = silent,
    features: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Scores for every customer active at ``as_of``, with reasons, action, inputs and recent history.
    ``features``: the frame of ``compute_features(dataset, as_of)`` when the caller already has it.

    Reasons, action and model are JSON text, written once here and kept as is by the file and the store;
    ``features`` holds each customer's model inputs as a JSON array in the order of
    ``scorer.bundle.feature_names``. ``referral_value`` is computed once all customers are scored, from the
    referred customers' own figures (:func:`referral_column`).

    Both cores stay busy: the next chunk's SHAP values and revenue forecast are computed in LightGBM (C code,
    off the interpreter lock) while this chunk's reasons and actions are written in Python, and the recent
    history is gathered on another thread meanwhile (numpy, Arrow and DuckDB)."""
    if features is None:
        report("computing features", 0.05)
        features = compute_features(dataset, as_of, threads)
    stamp = str(as_of.date())
    ids = features["customer_id"].astype(str).tolist()
    bundle = scorer.bundle
    if bundle.value_model is not None:  # lifetime value: one BTYD pass for all customers (features.value)
        report("valuing customers", 0.15)
        features = attach_parts(
            bundle.value_model, features, dataset.transactions, as_of, horizon_days=bundle.horizon_days
        )
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
            parts.append(scorer.score_frame(chunk, stamp, encoded=True, matrix=matrix, outputs=outputs))
        scores = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        scores["referral_value"] = referral_column(dataset, as_of, bundle, scores)
        report("collecting inputs and history", 0.85)
        # Only the store reads these: kept as Python text, not converted to text columns.
        scores["features"] = pd.Series(input_rows(features, bundle.feature_names), dtype=object)
        scores["history"] = pd.Series(histories.result(), dtype=object)
    return scores


def referral_column(
    dataset: Dataset, as_of: pd.Timestamp, bundle: ModelBundle, scores: pd.DataFrame
) -> np.ndarray:
    """Each scored customer's ``referral_value`` (:mod:`features.referrals`), to the cent: the sum, over
    the customers they referred, of what each brought from the referral on plus their own residual value
    as scored here (0 for a referred customer no longer active). Null without a referrals table or a value
    model, where no customer's value is known."""
    if dataset.referrals is None or bundle.value_model is None or not len(scores):
        return np.full(len(scores), np.nan)
    scored = pd.DataFrame({"customer_id": scores["customer_id"], "residual_value": scores["clv"]})
    referred = referred_values(dataset, as_of, scored, bundle.value_model.economics)
    values = referral_values(dataset.referrals, referred, as_of, scores["customer_id"])
    return np.round(values, 2)


def _model_inputs_and_outputs(bundle: ModelBundle, chunk: pd.DataFrame) -> tuple[np.ndarray, ModelOutputs]:
    matrix = bundle.matrix(chunk)
    return matrix, model_outputs(bundle, matrix)


def to_output(scores: pd.DataFrame) -> pd.DataFrame:
    """The file form of scores: flat columns a CRM can import, nested parts as JSON text. Scores without a
    ``referral_value`` get null there: a Spark partition's, whose referral values are joined in once
    every partition is scored (:func:`serving.spark_batch.with_referral_values`)."""
    out = scores.drop(columns=["features", "history"], errors="ignore")
    if "referral_value" not in out.columns:
        out = out.assign(referral_value=np.nan)
    versions = {text: json.loads(text)["version"] for text in out["model"].unique()}
    return out.assign(model_version=out["model"].map(versions))[list(FILE_COLUMNS)]


@dataclass(frozen=True)
class BatchOutputs:
    """Where a batch run's scores go: a file (written atomically), the serving store (refreshed in one
    transaction) and, with ``history``, the run's dated snapshot and drift report in that store."""

    out_file: ScoresFile | None = None
    store: ScoreStore | None = None
    history: HistoryPolicy | None = None


def run_batch(
    dataset: Dataset,
    as_of: pd.Timestamp,
    scorer: Scorer,
    *,
    outputs: BatchOutputs,
    threads: int = 2,
    report: Report = silent,
) -> BatchResult:
    """Score, then write the file (atomically) and refresh the store (one transaction); with a history
    policy, the store also keeps the run's dated snapshot and drift report (:func:`serving.monitor.record_run`)."""
    out_file, store, history = outputs.out_file, outputs.store, outputs.history
    started = time.perf_counter()
    report("computing features", 0.05)
    features = compute_features(dataset, as_of, threads)
    scores = score_dataset(dataset, as_of, scorer, threads=threads, report=report, features=features)
    report("writing", 0.9)
    if out_file is not None:
        out_file.write(scores)
    run_id = None
    if store is not None:
        scored_at = datetime.now(UTC).replace(microsecond=0).isoformat()
        store.replace_all(
            scores,
            {
                "as_of": str(as_of.date()),
                "model": scorer.info.as_dict(),
                "scored_at": scored_at,
                "customers": len(scores),
                "feature_names": scorer.bundle.feature_names,
            },
        )
        if history is not None:
            report("recording history", 0.95)
            model = {**scorer.info.as_dict(), "metrics": scorer.bundle.metadata.get("metrics", {})}
            run = RunInputs(scores, features, dataset, as_of, scorer.bundle, model, scored_at)
            run_id = record_run(store, run, keep_runs=history.keep_runs, limits=history.limits)
    return BatchResult(len(scores), time.perf_counter() - started, str(as_of.date()), run_id)


@dataclass(frozen=True)
class PublishRequest:
    """What to score and where the scores go.

    ``as_of`` None scores as of the last day the data observes; ``choose_as_of(dataset, as_of)``, when
    given, decides instead (the CLI's refuses dates outside the data). ``playbook`` None uses the shipped
    one. At least one of ``out_file`` and ``store`` should be given, or the scores go nowhere."""

    data_dir: Path
    model_uri: str
    as_of: pd.Timestamp | None = None
    choose_as_of: Callable[[Dataset, pd.Timestamp | None], pd.Timestamp] | None = field(
        default=None, compare=False
    )
    mapping: Path | None = None
    playbook: Path | None = None
    out_file: ScoresFile | None = None
    store: ScoreStore | None = field(default=None, compare=False)
    history: HistoryPolicy | None = None
    top_k: int = 5
    threads: int = 2


@dataclass(frozen=True)
class Published:
    """What a :func:`publish_scores` did: the model it used, the batch's figures (its rate is the
    scoring's and writing's own) and the seconds spent loading the data, apart."""

    model: ModelInfo
    batch: BatchResult
    load_seconds: float


def publish_scores(request: PublishRequest, report: Report = silent) -> Published:
    """Load the model, the data and the playbook, score every active customer and publish the scores to
    the file and the store. MLflow must already point at the registry in force
    (``features.model_store.connect``) when the model is a registry URI."""
    from features.loading import load_dataset
    from features.model_store import load_model
    from features.snapshots import observed_until
    from serving.actions import load_playbook

    report("loading model", 0.01)
    model = load_model(request.model_uri)
    report("validating input", 0.03)
    began = time.perf_counter()
    dataset = load_dataset(request.data_dir, request.mapping)
    load_seconds = time.perf_counter() - began
    if request.choose_as_of is not None:
        as_of = request.choose_as_of(dataset, request.as_of)
    else:
        as_of = request.as_of if request.as_of is not None else observed_until(dataset)
    scorer = Scorer.for_model(model, load_playbook(request.playbook), request.top_k)
    batch = run_batch(
        dataset,
        as_of,
        scorer,
        outputs=BatchOutputs(request.out_file, request.store, request.history),
        threads=request.threads,
        report=report,
    )
    return Published(model.info, batch, load_seconds)
