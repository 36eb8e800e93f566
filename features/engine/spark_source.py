"""A data folder read by Spark itself, in contract form and checked, without bringing a table to the driver.

What it covers, as Spark expressions (one aggregate pass per table, then a few counts):

- files: ``<table>.parquet`` / ``.csv`` / ``.csv.gz``, a folder of part files (``<table>/`` or
  ``<table>.parquet/``, partitioned folders too), or the file ``columns.yaml`` names;
- the column mapping's ``file``, ``columns`` (renames), ``encoding`` and ``duplicates`` (drop, keep, fail);
- required tables and columns; values that do not parse as their kind (dates must be ISO-8601 text or
  typed timestamps); the contract's bounds; timestamps in the future or before 1970; whole numbers;
- rows without a customer id in event tables (skipped, counted); exact duplicate rows (dropped by default);
- customer ids repeated in customers, and event ids that are not in customers.

What it refuses, naming the option: an export's reshaping (``date_format``, ``amount: quantity *
unit_price``, returns marked other than by a negative amount). ``churnguard validate`` and the DuckDB engine
handle those; convert such an export once (``churnguard`` reads it, writes contract tables), then scale out.
Problems are reported as :class:`DataValidationError`, like the loader's: file, column, count, examples.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from features.build import Tables
from features.contract import MAPPING_FILE, TABLES, DuplicatePolicy, Kind, ReturnsBy, TableMapping, TableSpec
from features.errors import ConfigError, DataProblem, DataValidationError
from features.spec import FeatureDef, available_features

if TYPE_CHECKING:
    from pyspark.sql import Column, SparkSession
    from pyspark.sql import DataFrame as SparkFrame

__all__ = ["SparkSource", "read_folder"]

_MAX_CHANNELS = 16  # as features.engine.duckdb's small vocabulary
_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")
_EXAMPLES = 5


@dataclass(frozen=True)
class SparkSource:
    """A data folder as Spark tables in contract form, plus what :class:`~features.loading.Dataset` says
    about its shape (the same names, so the feature selection is the same)."""

    tables: Tables
    provided: frozenset[str]
    attribute_columns: list[str]
    text_attributes: frozenset[str]
    files: dict[str, str]
    first_date: pd.Timestamp
    last_date: pd.Timestamp

    def model_features(self) -> list[FeatureDef]:
        """As :func:`features.snapshots.model_features` for a loaded dataset."""
        attributes = {name: name in self.text_attributes for name in self.attribute_columns}
        return available_features(self.provided, attributes)

    def observed_until(self) -> pd.Timestamp:
        """Midnight after the newest event (the default as-of date)."""
        return self.last_date.normalize() + pd.Timedelta(days=1)


def read_folder(
    backend: Any,
    data_dir: Path,
    mapping_file: Path | None = None,
    *,
    now: datetime | None = None,
    duplicates: str | None = None,
) -> SparkSource:
    """Read and check a data folder on Spark (``backend``: :func:`features.engine.spark.connect`);
    ``duplicates`` overrides the mapping's policy, as ``load_dataset``'s does."""
    from features.contract import read_mapping

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataValidationError(
            [DataProblem(str(data_dir), None, "is not a folder", "pass the folder that holds the tables")]
        )
    if mapping_file is None and (data_dir / MAPPING_FILE).exists():
        mapping_file = data_dir / MAPPING_FILE
    mappings = read_mapping(mapping_file) if mapping_file else {}
    override = None if duplicates is None else DuplicatePolicy.parse(duplicates, "duplicates")
    moment = pd.Timestamp(now or datetime.now(UTC)).tz_localize(None) if now is None or now.tzinfo else now
    session: SparkSession = backend._session
    problems: list[DataProblem] = []
    frames: dict[str, SparkFrame] = {}
    files: dict[str, str] = {}
    provided: set[str] = set()
    for spec in TABLES:
        mapping = mappings.get(spec.name, TableMapping())
        if override is not None:
            mapping = replace(mapping, duplicates=override)
        _refuse_reshaping(spec, mapping)
        path = _find(data_dir, spec, mapping, problems)
        if path is None:
            continue
        raw = _read(session, path, mapping)
        table = _to_contract(raw, spec, mapping, str(path), pd.Timestamp(moment), problems)
        if table is None:
            continue
        frame, present = table
        files[spec.name], frames[spec.name] = str(path), frame
        provided.add(spec.name)
        provided.update(f"{spec.name}.{c}" for c in present)
    if problems:
        raise DataValidationError(problems)
    attributes, text_attributes = _attributes(frames.get("customers"))
    for spec in TABLES:
        frames[spec.name] = _with_defaults(
            session, frames.get(spec.name), spec, (attributes, text_attributes)
        )
    _check_references(frames, files, problems)
    if problems:
        raise DataValidationError(problems)
    return _source(backend, frames, files, provided, attributes, text_attributes)


def _refuse_reshaping(spec: TableSpec, mapping: TableMapping) -> None:
    unsupported = []
    if mapping.date_format:
        unsupported.append(f"date_format: {mapping.date_format!r}")
    if mapping.derive_amount:
        unsupported.append("amount: quantity * unit_price")
    if mapping.returns.by is not ReturnsBy.SIGN:
        unsupported.append(f"returns: {mapping.returns.describe()}")
    if unsupported:
        raise ConfigError(
            f"{MAPPING_FILE}, {spec.name}: {', '.join(unsupported)} is not supported with --engine spark, "
            "which reads contract-shaped tables (ISO dates, an amount column, returns as negative amounts): "
            "use --engine duckdb for this export, or convert it to contract tables once"
        )


def _find(data_dir: Path, spec: TableSpec, mapping: TableMapping, problems: list[DataProblem]) -> Path | None:
    if mapping.file:
        path = data_dir / mapping.file
        if not path.exists():
            problems.append(
                DataProblem(
                    str(path), None, "is named in the column mapping but does not exist", "fix 'file'"
                )
            )
            return None
        return path
    names = (f"{spec.name}.parquet", f"{spec.name}.csv", f"{spec.name}.csv.gz", spec.name)
    found = [data_dir / n for n in names if (data_dir / n).exists()]
    if len(found) > 1:
        problems.append(
            DataProblem(
                str(data_dir), None, f"holds {spec.name} twice: {[p.name for p in found]}", "keep one"
            )
        )
        return None
    if not found and spec.required:
        problems.append(
            DataProblem(
                str(data_dir / f"{spec.name}.parquet"),
                None,
                "is missing (required)",
                f"add {spec.name}.parquet, .csv or a folder {spec.name}/ of Parquet part files",
            )
        )
    return found[0] if found else None


def _read(session: SparkSession, path: Path, mapping: TableMapping) -> SparkFrame:
    """Parquet (a file or a folder of part files, partitioned or not) or CSV with a header, all text."""
    is_csv = path.name.endswith((".csv", ".csv.gz")) or (
        path.is_dir() and any(p.name.endswith(".csv") for p in path.iterdir())
    )
    if is_csv:
        reader = session.read.option("header", "true").option("encoding", mapping.encoding)
        return reader.option("multiLine", "true").option("escape", '"').csv(str(path))
    return session.read.parquet(str(path))


def _to_contract(
    raw: SparkFrame, spec: TableSpec, mapping: TableMapping, where: str, now: pd.Timestamp, problems: list
) -> tuple[SparkFrame, list[str]] | None:
    """Rename, parse and check one table; None (with problems) when it cannot be used."""
    from pyspark.sql import functions as F

    raw = raw.toDF(*[c.strip() for c in raw.columns])
    renames = {source: target for target, source in mapping.columns.items()}
    missing_sources = [s for s in renames if s not in raw.columns]
    for name in missing_sources:
        problems.append(DataProblem(where, name, "is named in the column mapping but not in the file", ""))
    raw = raw.withColumnsRenamed({s: t for s, t in renames.items() if s in raw.columns})
    missing = [c for c in spec.required_columns if c not in raw.columns]
    for column in missing:
        problems.append(
            DataProblem(
                where,
                column,
                "required column is missing",
                f"rename a column to '{column}' or map it in {MAPPING_FILE}; columns in the file: "
                f"{', '.join(raw.columns[:20])}",
            )
        )
    if missing or missing_sources:
        return None
    policy = mapping.duplicates or DuplicatePolicy.DROP
    present = [c for c in spec.columns if c.name in raw.columns]
    parsed = {c.name: _parse(raw[c.name], c.kind, dict(raw.dtypes)[c.name]) for c in present}
    extra = [c for c in raw.columns if c not in parsed] if spec.extra_columns_are_attributes else []
    table = raw.select(
        *[parsed[c.name].alias(c.name) for c in present],
        *[F.col(c) for c in extra],
        *[raw[c.name].alias(f"__raw_{c.name}") for c in present],
    )
    if spec.name != "customers":  # an event without a customer id belongs to nobody: skipped
        table = table.filter(F.col("customer_id").isNotNull() & (F.length("customer_id") > 0))
    checks = _checks(spec, present, now)
    counts = table.agg(
        *[F.sum(F.when(rule, 1).otherwise(0)).alias(name) for name, (rule, _) in checks.items()]
    )
    failed = {name: n for name, n in counts.collect()[0].asDict().items() if n}
    for name, n in failed.items():
        column, message = checks[name][1]
        examples = [
            r[0] for r in table.filter(checks[name][0]).select(f"__raw_{column}").limit(_EXAMPLES).collect()
        ]
        problems.append(DataProblem(where, column, message, _hint(message), int(n), examples))
    if failed:
        return None
    table = table.drop(*[f"__raw_{c.name}" for c in present])
    stored = [c.name for c in present if c.stored]
    table = table.select(*stored, *extra)
    if policy is not DuplicatePolicy.KEEP:
        distinct = table.dropDuplicates()
        if policy is DuplicatePolicy.FAIL:
            repeated = table.count() - distinct.count()
            if repeated:
                problems.append(
                    DataProblem(
                        where, None, "repeats rows exactly", "remove them or set duplicates: drop", repeated
                    )
                )
                return None
        table = distinct
    return table, [c.name for c in present]


def _parse(column: Column, kind: Kind, spark_type: str) -> Column:
    """A raw column as its contract kind; values that do not parse become null (and are counted)."""
    from pyspark.sql import functions as F

    text = spark_type == "string"
    if kind is Kind.ID:
        out = F.trim(column.cast("string"))
        return F.when(F.length(out) > 0, out)
    if kind is Kind.TEXT:  # as the loader: trimmed lower case, blank is "unknown"
        return F.coalesce(F.lower(F.trim(column.cast("string"))), F.lit("unknown"))
    if kind is Kind.TIMESTAMP:
        return F.try_to_timestamp(F.trim(column)) if text else column.cast("timestamp")
    if kind in (Kind.FLOAT, Kind.INT):
        return F.trim(column).try_cast("double") if text else column.cast("double")
    if kind is Kind.BOOL:
        if not text:
            return column.cast("boolean")
        low = F.lower(F.trim(column))
        return F.when(low.isin(*_TRUE), F.lit(True)).when(low.isin(*_FALSE), F.lit(False))
    raise AssertionError(kind)


def _checks(spec: TableSpec, present: list, now: pd.Timestamp) -> dict[str, tuple[Column, tuple[str, str]]]:
    """name -> (condition true on a failing row, (column, message))."""
    from pyspark.sql import functions as F

    checks: dict[str, tuple[Column, tuple[str, str]]] = {}
    for c in present:
        value, raw = F.col(c.name), F.col(f"__raw_{c.name}")
        blank = raw.isNull() | (F.trim(raw.cast("string")) == "")
        checks[f"{c.name}__parse"] = (
            ~blank & value.isNull(),
            (c.name, f"has values that are not {_kind_text(c.kind)}"),
        )
        if c.kind in (Kind.FLOAT, Kind.INT):
            checks[f"{c.name}__finite"] = (
                F.abs(value) == float("inf"),
                (c.name, "has values that break 'finite'"),
            )
            if c.minimum is not None:
                checks[f"{c.name}__min"] = (
                    value < c.minimum,
                    (c.name, f"has values that break 'at least {c.minimum:g}'"),
                )
            if c.maximum is not None:
                checks[f"{c.name}__max"] = (
                    value > c.maximum,
                    (c.name, f"has values that break 'at most {c.maximum:g}'"),
                )
            if c.kind is Kind.INT:
                checks[f"{c.name}__whole"] = (
                    value != F.round(value),
                    (c.name, "has values that break 'whole number'"),
                )
        if c.kind is Kind.TIMESTAMP:
            future = F.lit(now.to_pydatetime()).cast("timestamp")
            checks[f"{c.name}__future"] = (
                value > future,
                (c.name, "has values that break 'not in the future'"),
            )
            checks[f"{c.name}__1970"] = (
                value < F.lit("1970-01-01").cast("timestamp"),
                (c.name, "has values that break 'not before 1970'"),
            )
        if c.kind is Kind.ID and c.required and spec.name == "customers":
            checks[f"{c.name}__blank"] = (value.isNull(), (c.name, "has rows without an id"))
    return checks


def _kind_text(kind: Kind) -> str:
    return {
        Kind.TIMESTAMP: "ISO-8601 dates (YYYY-MM-DD[ HH:MM:SS])",
        Kind.FLOAT: "numbers",
        Kind.INT: "numbers",
        Kind.BOOL: "true/false",
    }.get(kind, "text")


def _hint(message: str) -> str:
    if "not in the future" in message:
        return "events cannot lie after today: check the date format or the clock of the export"
    if "ISO-8601" in message:
        return "write dates as YYYY-MM-DD or YYYY-MM-DD HH:MM:SS, or use --engine duckdb with date_format"
    return "correct or remove those rows"


def _attributes(customers: SparkFrame | None) -> tuple[list[str], frozenset[str]]:
    """The customers' extra columns, and which are text (numbers in a CSV are numeric when every value
    parses)."""
    if customers is None:
        return [], frozenset()
    from pyspark.sql import functions as F

    names = [c for c in customers.columns if c not in ("customer_id", "signup_date")]
    types = dict(customers.dtypes)
    text_columns = [n for n in names if types[n] == "string"]
    if not text_columns:
        return names, frozenset()
    failing = (
        customers.agg(
            *[
                F.sum(
                    F.when(F.col(n).isNotNull() & F.col(n).try_cast("double").isNull(), 1).otherwise(0)
                ).alias(n)
                for n in text_columns
            ]
        )
        .collect()[0]
        .asDict()
    )
    return names, frozenset(n for n in text_columns if failing[n])


def _with_defaults(
    session: SparkSession,
    frame: SparkFrame | None,
    spec: TableSpec,
    attributes: tuple[list[str], frozenset[str]],
) -> SparkFrame:
    """Every stored contract column (order_id only when supplied), with its default where missing; an
    empty table for a missing optional file."""
    from pyspark.sql import functions as F

    if frame is None:
        frame = session.createDataFrame([], "customer_id string")
    types = {Kind.TIMESTAMP: "timestamp", Kind.FLOAT: "double", Kind.INT: "double", Kind.BOOL: "boolean"}
    columns = []
    for c in spec.columns:
        if not c.stored or (c.name == "order_id" and c.name not in frame.columns):
            continue
        default = F.lit(c.default if c.kind is not Kind.TEXT else (c.default or "")).cast(
            types.get(c.kind, "string")
        )
        if c.name not in frame.columns:
            columns.append(default.alias(c.name))
        elif c.name == "returned":  # a blank flag is no return (as the loader fills it)
            columns.append(F.coalesce(F.col(c.name), F.lit(False)).alias(c.name))
        else:
            columns.append(F.col(c.name))
    names, text = attributes
    extra = [  # as the loader's parse_attribute: numbers as doubles, text trimmed lower case
        F.coalesce(F.lower(F.trim(F.col(a))), F.lit("unknown")).alias(a)
        if a in text
        else F.col(a).try_cast("double").alias(a)
        for a in names
        if spec.name == "customers" and a in frame.columns
    ]
    return frame.select(*columns, *extra)


def _check_references(
    frames: dict[str, SparkFrame], files: dict[str, str], problems: list[DataProblem]
) -> None:
    if "customers" not in files:
        return
    from pyspark.sql import functions as F

    customers = frames["customers"].select("customer_id")
    repeated = customers.groupBy("customer_id").count().filter(F.col("count") > 1)
    n = repeated.count()
    if n:
        examples = [r[0] for r in repeated.limit(_EXAMPLES).collect()]
        problems.append(
            DataProblem(
                files["customers"],
                "customer_id",
                "has ids on more than one row",
                "keep one row per customer",
                n,
                examples,
            )
        )
    for name in ("transactions", "interactions", "cancellations"):
        if name not in files:
            continue
        unknown = frames[name].select("customer_id").join(customers, "customer_id", "left_anti")
        n = unknown.count()
        if n:
            examples = [r[0] for r in unknown.distinct().limit(_EXAMPLES).collect()]
            problems.append(
                DataProblem(
                    files[name],
                    "customer_id",
                    "has ids that are not in customers",
                    f"add those customers to {Path(files['customers']).name} or remove their rows",
                    n,
                    examples,
                )
            )


def _source(
    backend: Any,
    frames: dict[str, SparkFrame],
    files: dict[str, str],
    provided: set[str],
    attributes: list[str],
    text_attributes: frozenset[str],
) -> SparkSource:
    """Register the tables and gather the dataset's shape in one aggregate over the transactions."""
    from pyspark.sql import functions as F

    tx = frames["transactions"]
    has_order_ids = "order_id" in tx.columns
    shape = tx.agg(
        F.count(F.lit(1)).alias("rows"),
        (F.countDistinct("order_id") if has_order_ids else F.lit(0)).alias("orders"),
        F.max(F.when(F.col("amount") < 0, 1).otherwise(0)).alias("returns"),
        F.min("timestamp").alias("first"),
        F.max("timestamp").alias("last"),
    ).first()
    assert shape is not None  # an aggregate has one row
    if has_order_ids and shape["orders"] == shape["rows"]:  # every row its own order, as the loader decides
        frames["transactions"] = tx = tx.drop("order_id")
    if shape["returns"]:
        provided.add("transactions.returned")
    vocabulary = tx.select("channel").distinct().limit(_MAX_CHANNELS + 1).collect()
    values = [r[0] for r in vocabulary]
    channels = (
        tuple(sorted(values)) if values and None not in values and len(values) <= _MAX_CHANNELS else None
    )
    last = [shape["last"]]
    for name in ("interactions", "cancellations"):
        newest = frames[name].agg(F.max("timestamp")).collect()[0][0]
        if newest is not None:
            last.append(newest)
    tables = []
    for name in ("transactions", "customers", "interactions", "cancellations"):
        view = f"_cg_src_{name}"
        frames[name].createOrReplaceTempView(view)
        tables.append(backend.table(view))
    return SparkSource(
        Tables(
            tables[0],
            tables[1],
            tables[2],
            tables[3],
            rows_are_orders="order_id" not in tx.columns,
            channels=channels,
            has_returns=bool(shape["returns"]),
        ),
        frozenset(provided),
        attributes,
        text_attributes,
        files,
        pd.Timestamp(shape["first"]),
        pd.Timestamp(max(last)),
    )
