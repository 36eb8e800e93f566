"""The Spark engine: the same Ibis expressions as DuckDB's (:mod:`features.build`), run by Apache Spark.

Spark sessions are expensive (a JVM, about 20 s to start in local mode), so one is made per process by
:func:`spark_session` and passed around. Three things make Spark's answers equal DuckDB's:

- **UTC.** Ages are differences of epoch seconds, and Spark computes epoch seconds of a time-zone-less
  timestamp in the *session* time zone: in any zone with daylight saving a customer can move between
  windows. Every entry point here sets ``spark.sql.session.timeZone=UTC`` on the session it is given (Ibis
  does too when it connects, silently, to the caller's session), and new sessions also start the JVM in
  UTC.
- **The active-months bit mask.** ``bit_or`` is an ordinary Ibis reduction that Ibis 12's Spark compiler
  lacks a rule for, although Spark SQL has had the aggregate since 3.0; :func:`_add_bit_or_rule` adds it.
  The portable rewrites (twelve conditional counts, or a distinct count of months) cost DuckDB 40-300 %
  more on that pass (measured at 3M orders), so the expression stays and Spark learns it.
- **Types.** Categoricals become strings on the way in; results come back with DuckDB's dtypes
  (:func:`to_pandas`).

Spark keeps microseconds, so timestamps with sub-second parts agree; Spark's ANSI mode raises on
overflowing casts instead of returning null, which the feature expressions never do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import ibis
import ibis.expr.types as ir
import pandas as pd

from features.build import Tables, feature_table, label_table

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkFrame
    from pyspark.sql import SparkSession

    from features.loading import Dataset

__all__ = [
    "SparkConfig",
    "compute_features",
    "compute_labels",
    "connect",
    "spark_session",
    "tables_from_dataset",
    "to_pandas",
    "utc",
]

UTC_ZONE = "UTC"
_JAVA_UTC = "-Duser.timezone=UTC"
# Defaults for a session this module starts; the user's settings (spark conf) override them.
_DEFAULT_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": UTC_ZONE,
    "spark.driver.extraJavaOptions": _JAVA_UTC,
    "spark.executor.extraJavaOptions": _JAVA_UTC,
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
}


@dataclass(frozen=True)
class SparkConfig:
    """How to start (or join) a Spark session: ``master`` as ``spark-submit --master`` takes it
    (``local[2]``, ``yarn``, ``spark://host:7077``, ``k8s://...``) and extra ``spark.*`` settings, as a
    ``spark-defaults.conf`` would give them. ``shuffle_partitions`` None keeps Spark's default (200),
    right on a cluster; local runs want about 2-4 per core."""

    master: str = "local[2]"
    conf: Mapping[str, str] = field(default_factory=dict)
    app_name: str = "churnguard"
    shuffle_partitions: int | None = None


def spark_session(config: SparkConfig) -> SparkSession:
    """The process's Spark session, started if needed, in UTC.

    Under ``spark-submit`` an existing session is joined and its master kept (the cluster manager's).
    """
    import os
    import warnings

    # pyspark 4.3 warns that pandas 3 is "not fully supported"; the paths used here are tested on it
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support", category=FutureWarning)
    from pyspark.sql import SparkSession

    if config.master.startswith("local"):
        import sys

        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        # Python workers run this interpreter (with the project's packages), not the first python3 on PATH
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(config.app_name)
    if not _inside_spark_submit():
        builder = builder.master(config.master)
    conf = dict(_DEFAULT_CONF)
    if config.shuffle_partitions is not None:
        conf["spark.sql.shuffle.partitions"] = str(config.shuffle_partitions)
    conf.update(config.conf)
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    utc(session)
    return session


def _inside_spark_submit() -> bool:
    import os

    return "SPARK_ENV_LOADED" in os.environ or "PYSPARK_GATEWAY_PORT" in os.environ


def utc(session: SparkSession) -> None:
    """Set the session's time zone to UTC (see the module docstring: ages depend on it)."""
    session.conf.set("spark.sql.session.timeZone", UTC_ZONE)


def connect(session: SparkSession) -> Any:
    """An Ibis backend on ``session`` (set to UTC), able to compile every feature expression."""
    _add_bit_or_rule()
    utc(session)
    return ibis.pyspark.connect(session)


def _add_bit_or_rule() -> None:
    """Teach Ibis's Spark compiler ``BitOr`` (Spark SQL's ``bit_or`` aggregate); idempotent."""
    import ibis.expr.operations as ops
    from ibis.backends.sql.compilers.pyspark import PySparkCompiler

    def visit_bit_or(self: Any, op: ops.BitOr, *, arg: Any, where: Any = None, **_: Any) -> Any:
        return self.agg.bit_or(arg, where=where)

    PySparkCompiler.visit_BitOr = visit_bit_or  # type: ignore[attr-defined]


def tables_from_dataset(backend: Any, dataset: Dataset, prefix: str = "cg") -> Tables:
    """A loaded (pandas) dataset as Spark tables: for training and tests, where the data fits one
    machine. Categoricals go in as strings; :mod:`features.engine.spark_source` reads large data."""
    from features.engine.duckdb import small_vocabulary

    session: SparkSession = backend._session
    names = ("transactions", "customers", "interactions", "cancellations")
    tables = []
    for name in names:
        frame = _plain(getattr(dataset, name))
        view = f"_{prefix}_{name}"
        session.createDataFrame(frame, schema=_spark_schema(frame)).createOrReplaceTempView(view)
        tables.append(backend.table(view))
    return Tables(
        tables[0],
        tables[1],
        tables[2],
        tables[3],
        rows_are_orders=dataset.rows_are_orders,
        channels=small_vocabulary(dataset.transactions["channel"]),
        has_returns=dataset.has_returns,
    )


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Categoricals and pandas' string dtype as plain strings, nullable numbers as floats/bools Arrow and
    Spark both take."""
    out = {}
    for name, column in frame.items():
        if isinstance(column.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(column.dtype):
            out[str(name)] = column.astype(object).where(column.notna(), None)
        else:
            out[str(name)] = column
    return pd.DataFrame(out, index=frame.index)


def _spark_schema(frame: pd.DataFrame) -> Any:
    """Spark's schema for ``frame``: explicit, so an empty table (a missing optional file) keeps its
    column types and text columns of nulls stay strings."""
    from pyspark.sql import types as T

    fields = []
    for name, column in frame.items():
        dtype = column.dtype
        if pd.api.types.is_bool_dtype(dtype):
            kind: Any = T.BooleanType()
        elif pd.api.types.is_integer_dtype(dtype):
            kind = T.LongType()
        elif pd.api.types.is_float_dtype(dtype):
            kind = T.DoubleType()
        elif pd.api.types.is_datetime64_any_dtype(dtype):
            kind = T.TimestampType()
        else:
            kind = T.StringType()
        fields.append(T.StructField(str(name), kind, True))
    return T.StructType(fields)


def compute_features(tables: Tables, as_of: datetime | pd.Timestamp, attributes: list[str]) -> ir.Table:
    """The feature expression on Spark tables (nothing runs until it is written or collected)."""
    return feature_table(tables, pd.Timestamp(as_of).to_pydatetime(), attributes)


def compute_labels(tables: Tables, cutoff: datetime | pd.Timestamp, horizon_days: int) -> ir.Table:
    return label_table(tables, pd.Timestamp(cutoff).to_pydatetime(), horizon_days)


def to_pandas(table: ir.Table) -> pd.DataFrame:
    """A (small) result on the driver as pandas, one row per customer in customer_id order, with the
    dtypes DuckDB's :func:`features.engine.duckdb.to_frame` gives: integer columns without nulls as int64.
    For results too large for the driver, write them with :func:`spark_frame` instead."""
    backend = ibis.get_backend(table)
    utc(backend._session)
    frame = table.order_by("customer_id").to_pandas()
    for name, dtype in table.schema().items():
        column = frame[name]
        if dtype.is_integer() and column.dtype.kind == "f" and not column.isna().any():
            frame[name] = column.astype("int64")
    return frame


def spark_frame(table: ir.Table) -> SparkFrame:
    """The expression as a Spark DataFrame, to write or to score where it lies."""
    backend = ibis.get_backend(table)
    utc(backend._session)
    frame = backend._session.sql(ibis.to_sql(table, dialect="pyspark"))
    # Spark types some results its own way (``count + 1.0`` is a DECIMAL, a bit count an INT): cast every
    # column to the expression's type, so written files have DuckDB's dtypes
    return frame.select(
        *[frame[name].cast(_spark_type(dtype)).alias(name) for name, dtype in table.schema().items()]
    )


def _spark_type(dtype: Any) -> str:
    if dtype.is_floating():
        return "double"
    if dtype.is_integer():
        return "bigint"
    if dtype.is_boolean():
        return "boolean"
    if dtype.is_timestamp():
        return "timestamp"
    if dtype.is_string():
        return "string"
    from ibis.backends.sql.datatypes import PySparkType

    return str(PySparkType.to_string(dtype))


def config_from_settings(settings: Any) -> SparkConfig:
    """The Spark session the settings describe (``features.settings.ChurnguardSettings``)."""
    partitions = settings.spark_shuffle_partitions
    if partitions is None and settings.spark_master.startswith("local"):
        partitions = 4 * _local_cores(settings.spark_master)
    return SparkConfig(settings.spark_master, dict(settings.spark_conf), shuffle_partitions=partitions)


def _local_cores(master: str) -> int:
    import os

    inside = master.removeprefix("local").strip("[]").split(",")[0]
    if inside in ("", "*"):
        return os.cpu_count() or 1
    return int(inside) if inside.isdigit() else 1


def write_parquet_atomic(
    frame: SparkFrame,
    target: Any,
    partition_by: tuple[str, ...] = (),
    sidecars: Mapping[str, str] | None = None,
) -> None:
    """Write a Spark DataFrame as a Parquet folder at ``target`` (a local or mounted path), atomically.

    Spark writes into a hidden staging sibling, and its job commit ends with a ``_SUCCESS`` marker; only
    then is the staging folder renamed onto the target. Readers therefore see the previous output or the
    complete new one, never the part files of a job still running or one that failed halfway (Spark's
    own ``mode("overwrite")`` deletes the old output first). An existing target is moved aside and
    removed after the swap. On object stores, where a rename is a copy, use a table format with atomic
    commits (Delta Lake, Iceberg) instead. ``sidecars`` (file name -> text) are written into the folder
    before the swap, so they appear with the data.
    """
    import os
    import shutil
    import tempfile
    from pathlib import Path

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    aside = staging.with_name(staging.name + ".old")
    try:
        writer = frame.write.mode("overwrite")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        writer.parquet(str(staging))
        if not (staging / "_SUCCESS").exists():
            raise OSError(f"Spark did not commit {target}: no _SUCCESS marker in {staging}")
        for name, text in (sidecars or {}).items():
            (staging / name).write_text(text)
        if target.exists():
            os.replace(target, aside)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(aside, ignore_errors=True)
