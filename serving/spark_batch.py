"""Batch scoring on Spark: every partition of the feature table scored where it lies, by the same scoring
core as local batch (:class:`serving.scoring.Scorer`), written as partitioned Parquet, atomically.

The registered model and the playbook are loaded once on the driver and shipped to the executors inside
the ``mapInPandas`` function (a LightGBM booster pickles as its model text); each partition then goes
through ``Scorer.score_frame`` exactly as a chunk of ``churnguard score`` does, so probabilities, values,
exact TreeSHAP reasons and actions are the local ones. Lifetime values read each customer's exact purchase
summary, as local batch's ``features.value.attach_parts`` does: Spark computes it from the transactions
(:mod:`features.engine.spark_value`, ``rfm_summary``'s conventions) and joins it to the features, and the
scoring core values each partition from it (``features.value.parts_for_frame``). The output is the scores
file's columns plus the store's ``features`` and ``stored_reasons``, partitioned by ``as_of``, with a
``_churnguard.json`` sidecar (the store's meta) and Spark's ``_SUCCESS`` marker; :func:`load_store` turns
it into the serving store.

``referral_value`` is local batch's too, to the cent: a referrer's value reads the scores of the customers
they referred, so it is joined in once every partition is scored (:func:`with_referral_values`; the
referrals table is read and cleaned on the driver by the loader's code, the referred customers' spend is
summed on Spark: :mod:`features.engine.spark_referrals` says why and how far that scales). The scores are
then kept (``persist``: memory, spilling to the executors' disks) between that lookup and the write, so
the model runs once per customer. Without a referrals table or a value model the value is null, and
nothing is kept.

Not here yet: the dashboard's recent purchase history (``history`` is ``{}``), which local batch gathers
from the loaded tables, and the dated run snapshot and drift report that local ``churnguard score`` keeps
in the store (:func:`load_store` replaces the current scores only).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.errors import ConfigError
from features.value import FEATURE_INPUTS, INPUT_COLUMNS
from serving.batch import BatchResult, to_output
from serving.encoding import DECISION_COLUMNS, FIGURE_COLUMNS, FILE_COLUMNS, input_rows
from serving.scoring import Scorer
from serving.store import ScoreStore

if TYPE_CHECKING:
    from features.economics import EconomicsConfig
    from features.engine.spark_source import SparkSource

__all__ = [
    "META_FILE",
    "SparkScoreRequest",
    "load_store",
    "run_spark_batch",
    "score_partitions",
    "with_referral_values",
]

META_FILE = "_churnguard.json"
_STORE_ONLY = ("stored_reasons", "features", "history")
# the numeric columns, as the store types them (REAL); the rest are text
_DOUBLES = frozenset(c for c, t in {**FIGURE_COLUMNS, **DECISION_COLUMNS}.items() if t == "REAL")


def _schema() -> str:
    columns = [*FILE_COLUMNS, *_STORE_ONLY]
    return ", ".join(f"{c} {'double' if c in _DOUBLES else 'string'}" for c in columns)


def score_partitions(features: Any, scorer: Scorer, as_of: pd.Timestamp) -> Any:
    """The Spark DataFrame of scores for a Spark DataFrame of features, one ``Scorer.score_frame`` call
    per Arrow batch. ``features``: customer_id, the model's features and, for the exact lifetime value,
    the purchase summary and the features the value reads (``features.engine.spark_jobs.scoring_frame``
    gives all of them); without the summary, values come from the value model's feature-based inputs."""
    stamp = str(as_of.date())
    names = scorer.bundle.feature_names
    value_columns = [
        c
        for c in dict.fromkeys((*FEATURE_INPUTS, *INPUT_COLUMNS))
        if c in features.columns and c not in names
    ]

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for chunk in batches:
            if not len(chunk):
                continue
            scores = scorer.score_frame(chunk, stamp, encoded=True)
            out = to_output(scores)
            out["stored_reasons"] = scores["stored_reasons"].tolist()
            out["features"] = input_rows(chunk, names)
            out["history"] = "{}"
            yield _typed(out)

    return features.select("customer_id", *names, *value_columns).mapInPandas(score, _schema())


def _typed(scores: pd.DataFrame) -> pd.DataFrame:
    """The schema's types: doubles as float64, every other column as text or null (a model version is a
    number in the scores file, an all-empty top reason a float NaN)."""
    out = {}
    for name, column in scores.items():
        if name in _DOUBLES:
            out[name] = column.astype("float64")
        else:
            out[name] = pd.Series([None if pd.isna(v) else str(v) for v in column], dtype=object)
    return pd.DataFrame(out)


@dataclass(frozen=True)
class SparkScoreRequest:
    """What ``churnguard score --engine spark`` does: score the folder's active customers as of ``as_of``
    (None: the day after the newest event) with ``model_uri`` and write a Parquet folder at ``out``."""

    data_dir: Path
    model_uri: str
    out: Path
    as_of: pd.Timestamp | None = None
    mapping: Path | None = None
    playbook: Path | None = None
    top_k: int = 5


def run_spark_batch(settings: Any, request: SparkScoreRequest) -> BatchResult:
    """Read, featurise and score on Spark; write the scores atomically (see
    :func:`features.engine.spark.write_parquet_atomic`: staging folder, ``_SUCCESS``, rename)."""
    from features.engine.spark import write_parquet_atomic
    from features.engine.spark_jobs import checked_as_of, open_source, scoring_frame
    from features.engine.spark_referrals import known_customers
    from features.loading import load_referrals
    from features.model_store import load_model
    from features.referrals import customer_source
    from serving.actions import load_playbook

    if request.out.suffix == ".csv":
        raise ConfigError(
            f"{request.out}: with --engine spark the scores are a Parquet folder; give --out scores.parquet"
        )
    started = time.perf_counter()
    model = load_model(request.model_uri)
    scorer = Scorer.for_model(model, load_playbook(request.playbook), request.top_k)
    source = open_source(settings, request.data_dir, request.mapping)
    as_of = checked_as_of(source, request.as_of)
    # read (or refused) before the long part, by the loader's code: the rows it keeps locally
    referrals = load_referrals(
        request.data_dir, known_customers(source), customer_source(source.files), request.mapping
    )
    features, _ = scoring_frame(source, as_of, scorer.bundle.value_model)
    scores = score_partitions(features, scorer, as_of)
    meta = {
        "as_of": str(as_of.date()),
        "model": scorer.info.as_dict(),
        "scored_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "feature_names": scorer.bundle.feature_names,
    }
    value_model = scorer.bundle.value_model
    persisted = None
    try:
        if referrals is not None and value_model is not None:
            # the referred customers' scores feed their referrers': scored once, kept, read twice
            persisted = scores.persist()
            scores = with_referral_values(persisted, referrals, source, as_of, value_model.economics)
        write_parquet_atomic(scores, request.out, ("as_of",), {META_FILE: json.dumps(meta)})
    finally:
        if persisted is not None:
            persisted.unpersist()
    customers = scores.sparkSession.read.parquet(str(request.out)).count()
    return BatchResult(customers, time.perf_counter() - started, str(as_of.date()))


def with_referral_values(
    scores: Any,
    referrals: pd.DataFrame,
    source: SparkSource,
    as_of: pd.Timestamp,
    economics: EconomicsConfig | None,
) -> Any:
    """``scores`` (a Spark frame of :func:`score_partitions`) with each customer's ``referral_value`` as
    local batch gives it (:func:`serving.batch.referral_column`: to the cent, 0 for a customer who referred
    nobody, null where a referred customer's value is unknown), from the referred customers' ``clv`` in
    these scores (:func:`features.engine.spark_referrals.referrer_values`)."""
    from pyspark.sql import functions as F

    from features.engine.spark import spark_frame
    from features.engine.spark_referrals import referrer_values

    residuals = scores.select("customer_id", F.col("clv").alias("residual_value"))
    transactions = spark_frame(source.tables.transactions)
    values = referrer_values(referrals, transactions, residuals, as_of, economics)
    table = scores.sparkSession.createDataFrame(
        pd.DataFrame(
            {
                "customer_id": values["customer_id"].astype(str),
                "_value": np.round(values["referral_value"].to_numpy(float), 2),
                "_referrer": True,
            }
        ),
        "customer_id string, _value double, _referrer boolean",
    )
    value = F.when(F.col("_referrer").isNull(), F.lit(0.0)).otherwise(F.col("_value"))
    joined = scores.join(table, "customer_id", "left")
    return joined.select(*[value.alias(c) if c == "referral_value" else F.col(c) for c in scores.columns])


def read_scores(folder: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A committed Spark scores folder as (scores in the store's shape, meta); refuses one without
    Spark's ``_SUCCESS`` marker or churnguard's sidecar (a job that did not finish)."""
    folder = Path(folder)
    if not (folder / "_SUCCESS").exists() or not (folder / META_FILE).exists():
        raise ConfigError(
            f"{folder} is not a finished Spark scores folder (no _SUCCESS or {META_FILE}): "
            "run `churnguard score --engine spark --out FOLDER` again"
        )
    meta = json.loads((folder / META_FILE).read_text())
    frame = pd.read_parquet(folder)
    frame["as_of"] = frame["as_of"].astype(str)
    for column in _STORE_ONLY:  # the store keeps these as Python text (see serving.batch.score_dataset)
        frame[column] = pd.Series(frame[column].tolist(), dtype=object)
    return frame.sort_values("customer_id", ignore_index=True), meta


def load_store(folder: Path, store: ScoreStore) -> int:
    """Replace the serving store's scores with a Spark scores folder's (one transaction); the count."""
    scores, meta = read_scores(folder)
    store.replace_all(scores, {**meta, "customers": len(scores)})
    return len(scores)
