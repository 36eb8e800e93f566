"""Whole Spark jobs behind the commands: the feature table of a data folder, written where it lies, and
what batch scoring reads per customer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ibis
import pandas as pd

from features.engine.spark import (
    compute_features,
    config_from_settings,
    connect,
    spark_frame,
    spark_session,
    write_parquet_atomic,
)
from features.engine.spark_source import SparkSource, read_folder
from features.engine.spark_value import attach_value_inputs
from features.errors import ConfigError
from features.value import FEATURE_INPUTS, ValueModel

__all__ = [
    "FeatureRequest",
    "FeaturesWritten",
    "Sample",
    "checked_as_of",
    "feature_frame",
    "open_source",
    "scoring_frame",
    "snapshot_sample",
    "write_features",
]


@dataclass(frozen=True)
class FeatureRequest:
    """What ``churnguard features --engine spark`` computes: ``as_of`` None is the day after the newest
    event, and a date outside the data is refused (:func:`checked_as_of`)."""

    data_dir: Path
    out: Path
    as_of: pd.Timestamp | None = None
    mapping: Path | None = None
    duplicates: str | None = None


@dataclass(frozen=True)
class FeaturesWritten:
    customers: int
    features: list[str]
    as_of: pd.Timestamp


def open_source(
    settings: Any, data_dir: Path, mapping: Path | None = None, duplicates: str | None = None
) -> SparkSource:
    """Start (or join) the settings' Spark session and read the data folder on it."""
    backend = connect(spark_session(config_from_settings(settings)))
    return read_folder(backend, data_dir, mapping, duplicates=duplicates)


def feature_frame(
    source: SparkSource, as_of: pd.Timestamp, extra: Sequence[str] = ()
) -> tuple[Any, list[str]]:
    """(Spark DataFrame of customer_id, as_of, the model's features and those of the ``extra`` feature
    columns the table has, the model's feature names)."""
    names = [f.name for f in source.model_features()]
    table = compute_features(source.tables, as_of, source.attribute_columns)
    kept = [c for c in dict.fromkeys(extra) if c in table.columns and c not in names]
    table = table.select(
        "customer_id", ibis.literal(as_of.to_pydatetime(), type="timestamp").name("as_of"), *names, *kept
    )
    return spark_frame(table), names


def scoring_frame(
    source: SparkSource, as_of: pd.Timestamp, value_model: ValueModel | None
) -> tuple[Any, list[str]]:
    """What batch scoring reads per customer, as local batch has it: the model's features and, with a value
    model, the features its cost to serve and historic value read plus the exact purchase summary
    (:data:`features.value.INPUT_COLUMNS`, from the transactions on Spark: :mod:`.spark_value`)."""
    if value_model is None:
        return feature_frame(source, as_of)
    frame, names = feature_frame(source, as_of, FEATURE_INPUTS)
    transactions = spark_frame(source.tables.transactions)
    return attach_value_inputs(frame, transactions, as_of, value_model.economics), names


def write_features(settings: Any, request: FeatureRequest) -> FeaturesWritten:
    """Features of every active customer, written by Spark as a Parquet folder at ``request.out``
    (atomically, see :func:`features.engine.spark.write_parquet_atomic`): no row passes the driver."""
    if request.out.suffix == ".csv":
        raise ConfigError(
            f"{request.out}: with --engine spark the features are written as a Parquet folder; "
            "give --out features.parquet (pandas and Spark both read the folder)"
        )
    source = open_source(settings, request.data_dir, request.mapping, request.duplicates)
    as_of = checked_as_of(source, request.as_of)
    frame, names = feature_frame(source, as_of)
    write_parquet_atomic(frame, request.out)
    customers = frame.sparkSession.read.parquet(str(request.out)).count()
    return FeaturesWritten(customers, names, as_of)


def checked_as_of(source: SparkSource, requested: pd.Timestamp | None) -> pd.Timestamp:
    """The as-of date in force: ``requested`` if the data can describe it (as the DuckDB commands' check),
    else the day after the newest event; a date outside the data is a ConfigError naming its range."""
    end = source.observed_until()
    if requested is None:
        return end
    if requested > end or requested <= source.first_date:
        raise ConfigError(
            f"--as-of {requested.date()} is outside the data, which covers {source.first_date.date()} to "
            f"{(end - pd.Timedelta(days=1)).date()}: choose a date inside it, or leave --as-of out"
        )
    return requested


@dataclass(frozen=True)
class Sample:
    """A training sample brought to the driver, and how it was drawn (log it with the run: ``as_params``)."""

    frame: pd.DataFrame  # customer_id, cutoff, features..., churned, future_spend
    population: int
    fraction: float
    seed: int

    def as_params(self) -> dict[str, str]:
        return {
            "sample.population": str(self.population),
            "sample.rows": str(len(self.frame)),
            "sample.fraction": f"{self.fraction:.6g}",
            "sample.seed": str(self.seed),
            "sample.strata": "cutoff x churned",
        }


def snapshot_sample(
    source: SparkSource,
    cutoffs: list[pd.Timestamp],
    horizon_days: int,
    *,
    max_rows: int = 2_000_000,
    seed: int = 0,
) -> Sample:
    """Features and labels at each cutoff computed on Spark, and a stratified sample of them (the same
    fraction of every (cutoff, churned) stratum, so churn rates and the cutoffs' mix are kept) of at most
    about ``max_rows`` rows on the driver, for single-node LightGBM. Everything is taken when it fits."""
    from pyspark.sql import functions as F

    from features.engine.spark import compute_labels

    parts = []
    for cutoff in cutoffs:
        features = compute_features(source.tables, cutoff, source.attribute_columns)
        labels = compute_labels(source.tables, cutoff, horizon_days).select(
            "customer_id", "churned", "future_spend"
        )
        joined = features.join(labels, "customer_id").mutate(
            cutoff=ibis.literal(cutoff.to_pydatetime(), type="timestamp")
        )
        parts.append(spark_frame(joined))
    frame = parts[0]
    for part in parts[1:]:
        frame = frame.unionByName(part)
    population = frame.count()
    fraction = min(1.0, max_rows / max(population, 1))
    if fraction < 1.0:
        frame = frame.withColumn(
            "_stratum", F.concat_ws("|", F.col("cutoff").cast("string"), F.col("churned").cast("string"))
        )
        strata = [r[0] for r in frame.select("_stratum").distinct().collect()]
        frame = frame.sampleBy("_stratum", dict.fromkeys(strata, fraction), seed).drop("_stratum")
    pdf = pd.DataFrame(frame.toPandas()).sort_values(["cutoff", "customer_id"], ignore_index=True)
    columns = ["customer_id", "cutoff", *[c for c in pdf.columns if c not in ("customer_id", "cutoff")]]
    return Sample(pdf[columns], population, fraction, seed)
