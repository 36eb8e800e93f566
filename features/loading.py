"""Read a data folder into a validated :class:`Dataset`; the only place that touches input files.

Every problem found is collected and raised together as one :class:`DataValidationError` naming the
file, the column, how many rows fail, a few examples and how to fix it. Nothing is written here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow
import pyarrow.compute as pc
import yaml

from features.contract import TABLES, TRANSACTIONS, ColumnSpec, Kind, TableMapping, TableSpec
from features.errors import DataProblem, DataValidationError
from features.validation import check_values, duplicated_rows

MAPPING_FILE = "columns.yaml"
_TRUE = {"true", "t", "yes", "y", "1", "1.0"}
_FALSE = {"false", "f", "no", "n", "0", "0.0"}


@dataclass
class Dataset:
    """Validated input tables in contract form, with every optional column present but one.

    ``provided`` records which optional tables and columns the user really supplied, so features that
    need data the user does not have are left out instead of learned from filled-in defaults.

    ``transactions.order_id`` is kept only while it groups rows: when it is absent or never repeats, every
    row is its own order and the column would tell the features nothing (at 1M customers it held 0.35 GiB).
    Text columns with a small vocabulary (``channel``, ``type``) are pandas categoricals, for the same
    reason: repeating short strings cost more than the rest of their table.
    """

    transactions: pd.DataFrame
    customers: pd.DataFrame
    interactions: pd.DataFrame
    cancellations: pd.DataFrame
    provided: frozenset[str] = field(default_factory=frozenset)  # "table" and "table.column" entries
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def rows_are_orders(self) -> bool:
        """True when every transaction row is its own order (no ``order_id`` column is kept): the features
        then skip rolling lines up to orders, the costliest step at scale."""
        return "order_id" not in self.transactions.columns

    @property
    def attribute_columns(self) -> list[str]:
        return [c for c in self.customers.columns if c not in ("customer_id", "signup_date")]

    @property
    def last_date(self) -> pd.Timestamp:
        """The newest event in the data: the default as-of date for scoring."""
        stamps = [self.transactions["timestamp"].max()]
        for frame in (self.interactions, self.cancellations):
            if len(frame):
                stamps.append(frame["timestamp"].max())
        return pd.Timestamp(max(stamps))

    def fingerprint(self) -> dict[str, object]:
        """Input file hashes, row counts and date range: what a model card needs to name its data."""
        files = {name: {"path": str(path), "sha256": _sha256(path)} for name, path in self.files.items()}
        rows = {
            "transactions": len(self.transactions),
            "customers": len(self.customers),
            "interactions": len(self.interactions),
            "cancellations": len(self.cancellations),
        }
        return {
            "files": files,
            "rows": rows,
            "first_date": str(self.transactions["timestamp"].min()),
            "last_date": str(self.last_date),
            "provided": sorted(self.provided),
        }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_mapping(path: Path) -> dict[str, TableMapping]:
    """Parse a column-mapping YAML file; unknown tables or keys are errors, not silently ignored."""
    where = str(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DataValidationError(
            [
                DataProblem(
                    where,
                    None,
                    f"cannot be read as YAML ({exc.__class__.__name__})",
                    "write it as UTF-8 YAML; see 'Column mapping' in the README",
                )
            ]
        ) from exc
    known = {t.name for t in TABLES}
    problems: list[DataProblem] = []
    mapping: dict[str, TableMapping] = {}
    if not isinstance(raw, dict):
        raw = {}
        problems.append(DataProblem(where, None, "is not a mapping of table names", "see the README"))
    for table, body in raw.items():
        if table not in known:
            problems.append(
                DataProblem(
                    where, None, f"names unknown table '{table}'", f"use one of: {', '.join(sorted(known))}"
                )
            )
            continue
        body = body or {}
        extra = set(body) - {"file", "columns", "date_format", "encoding"}
        if extra or not isinstance(body.get("columns", {}), dict):
            problems.append(
                DataProblem(
                    where,
                    None,
                    f"table '{table}' has unknown keys {sorted(extra)}",
                    "allowed keys: file, columns, date_format, encoding",
                )
            )
            continue
        mapping[table] = TableMapping(
            file=body.get("file"),
            columns={str(k): str(v) for k, v in (body.get("columns") or {}).items()},
            date_format=body.get("date_format"),
            encoding=body.get("encoding", "utf-8"),
        )
    if problems:
        raise DataValidationError(problems)
    return mapping


def load_dataset(data_dir: Path, mapping_file: Path | None = None, *, now: datetime | None = None) -> Dataset:
    """Load and validate a data folder. Raises DataValidationError listing every problem."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataValidationError(
            [
                DataProblem(
                    str(data_dir),
                    None,
                    "is not a folder",
                    "pass the folder that holds transactions.csv or transactions.parquet",
                )
            ]
        )
    if mapping_file is None and (data_dir / MAPPING_FILE).exists():
        mapping_file = data_dir / MAPPING_FILE
    mappings = read_mapping(mapping_file) if mapping_file else {}
    now_ts = (
        pd.Timestamp(now or datetime.now(UTC)).tz_localize(None)
        if (now is None or now.tzinfo)
        else pd.Timestamp(now)
    )

    problems: list[DataProblem] = []
    frames: dict[str, pd.DataFrame] = {}
    files: dict[str, Path] = {}
    provided: set[str] = set()
    unique_order_ids = False
    for spec in TABLES:
        table_mapping = mappings.get(spec.name, TableMapping())
        path = _find_file(data_dir, spec, table_mapping, problems)
        if path is None:
            continue
        files[spec.name] = path
        frame = _read_table(path, spec, table_mapping, problems)
        if frame is None:
            continue
        table = _to_contract(frame, path, spec, table_mapping, now_ts, problems)
        del frame  # the raw file's frame is not needed past here: don't hold it while the next table loads
        if table is None:
            continue
        provided.add(spec.name)
        provided.update(f"{spec.name}.{c}" for c in table.columns)
        frames[spec.name] = table.frame
        unique_order_ids = unique_order_ids or table.unique_order_ids
    if problems:
        raise DataValidationError(problems)

    for spec in TABLES:
        frames[spec.name] = _fill_defaults(frames.get(spec.name), spec)
    if unique_order_ids:
        frames["transactions"] = frames["transactions"].drop(columns="order_id")
    _check_references(frames, files, problems)
    if problems:
        raise DataValidationError(problems)
    _return_freed_memory()
    return Dataset(
        transactions=frames["transactions"],
        customers=frames["customers"],
        interactions=frames["interactions"],
        cancellations=frames["cancellations"],
        provided=frozenset(provided),
        files=files,
    )


def _return_freed_memory() -> None:
    """Hand the memory that parsing and checking used back to the system.

    Arrow's pool and the C heap keep freed pages for reuse, but the feature engine allocates through its
    own allocator and never reuses them: at 1M customers they held about 0.15 GiB through the whole build.
    """
    pyarrow.default_memory_pool().release_unused()
    libc = ctypes.util.find_library("c")
    if libc:
        trim = getattr(ctypes.CDLL(libc), "malloc_trim", None)  # glibc only
        if trim is not None:
            trim(0)


def _find_file(
    data_dir: Path, spec: TableSpec, mapping: TableMapping, problems: list[DataProblem]
) -> Path | None:
    if mapping.file:
        path = data_dir / mapping.file
        if not path.exists():
            problems.append(
                DataProblem(
                    str(path),
                    None,
                    "is named in the column mapping but does not exist",
                    "fix 'file' in the mapping or add the file",
                )
            )
            return None
        return path
    candidates = [data_dir / f"{spec.name}{ext}" for ext in (".parquet", ".csv", ".csv.gz")]
    found = [p for p in candidates if p.exists()]
    if len(found) > 1:
        problems.append(
            DataProblem(
                str(data_dir),
                None,
                f"holds {spec.name} twice: {[p.name for p in found]}",
                "keep one file per table",
            )
        )
        return None
    if not found and spec.required:
        problems.append(
            DataProblem(
                str(data_dir / f"{spec.name}.csv"),
                None,
                "is missing (required)",
                f"add {spec.name}.csv or {spec.name}.parquet with columns "
                f"{', '.join(spec.required_columns)}, or name the file in {MAPPING_FILE}",
            )
        )
    return found[0] if found else None


def _read_table(
    path: Path, spec: TableSpec, mapping: TableMapping, problems: list[DataProblem]
) -> pd.DataFrame | None:
    where = str(path)
    if path.stat().st_size == 0:
        problems.append(
            DataProblem(
                where, None, "is empty (0 bytes)", "export the table again with a header row and data rows"
            )
        )
        return None
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype=str, encoding=mapping.encoding, keep_default_na=True)
            # pandas renames a repeated header ("amount", "amount.1"): keep the names as written, so the
            # repeated-column check below sees them
            header = pd.read_csv(path, dtype=str, encoding=mapping.encoding, header=None, nrows=1)
            frame.columns = [str(c) for c in header.iloc[0].tolist()]
    except UnicodeDecodeError as exc:
        problems.append(
            DataProblem(
                where,
                None,
                f"is not valid {mapping.encoding} text (byte {exc.start})",
                f"save it as UTF-8, or set 'encoding' for {spec.name} in {MAPPING_FILE}",
            )
        )
        return None
    except pd.errors.EmptyDataError:
        problems.append(DataProblem(where, None, "has no header row", "export it with a header row"))
        return None
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        kind = "Parquet" if path.suffix == ".parquet" else "CSV"
        message = str(exc).splitlines()[0][:160] if str(exc) else exc.__class__.__name__
        problems.append(
            DataProblem(
                where,
                None,
                f"is not a readable {kind} file: {message}",
                "the file may be truncated or corrupt; export it again",
            )
        )
        return None
    except Exception as exc:  # pyarrow raises its own error types for corrupt files
        problems.append(
            DataProblem(
                where,
                None,
                f"cannot be read: {exc.__class__.__name__}",
                "the file may be truncated or corrupt; export it again",
            )
        )
        return None
    if spec.required and frame.empty:
        problems.append(
            DataProblem(where, None, "has a header but no rows", "export the table with its rows")
        )
        return None
    return frame


@dataclass(frozen=True)
class _ContractTable:
    """One table parsed and checked against the contract."""

    frame: pd.DataFrame
    columns: list[str]  # the contract columns the user supplied
    unique_order_ids: bool  # transactions whose supplied order_id never repeats: each row is an order


def _to_contract(
    frame: pd.DataFrame,
    path: Path,
    spec: TableSpec,
    mapping: TableMapping,
    now: pd.Timestamp,
    problems: list[DataProblem],
) -> _ContractTable | None:
    """Rename mapped columns, parse every contract column to its kind, and check values."""
    where = str(path)
    frame.columns = [str(c).strip() for c in frame.columns]
    renames = {source: target for target, source in mapping.columns.items()}
    missing_sources = [s for s in renames if s not in frame.columns]
    for source in missing_sources:
        problems.append(
            DataProblem(
                where,
                source,
                "is named in the column mapping but not in the file",
                f"columns in the file: {', '.join(frame.columns[:20])}",
            )
        )
    frame = frame.rename(columns=renames)
    repeated = sorted(set(frame.columns[frame.columns.duplicated()]))
    for column in repeated:
        problems.append(
            DataProblem(
                where,
                column,
                "appears more than once in the header (after trimming spaces and "
                "applying the column mapping)",
                "keep one column of that name",
            )
        )
    missing = [c for c in spec.required_columns if c not in frame.columns]
    if missing or missing_sources or repeated:
        for column in missing:
            problems.append(
                DataProblem(
                    where,
                    column,
                    "required column is missing",
                    f"rename a column to '{column}' or map it in {MAPPING_FILE}; "
                    f"columns in the file: {', '.join(frame.columns[:20])}",
                )
            )
        return None
    before = len(problems)
    out: dict[str, pd.Series] = {}
    present = [c for c in spec.columns if c.name in frame.columns]
    for column in present:
        out[column.name] = _parse(frame[column.name], column, where, mapping, problems)
    if spec.extra_columns_are_attributes:
        for name in frame.columns:
            if name not in out:
                out[name] = _parse_attribute(frame[name])
    if len(problems) > before:
        return None
    parsed = pd.DataFrame(out, copy=False)  # the parsed columns are new already: no second copy
    unique_order_ids = spec.name == TRANSACTIONS.name and _never_repeats(parsed, "order_id")
    check_values(parsed, spec, where, now, problems, rows_distinct=unique_order_ids)
    if len(problems) > before:
        return None
    return _ContractTable(parsed, [c.name for c in present], unique_order_ids)


def _never_repeats(frame: pd.DataFrame, column: str) -> bool:
    """Whether ``column`` is present and holds no value twice.

    Unique order ids make every row its own order, and no two rows can then be exact duplicates, so
    this one pass over a single column saves both the order roll-up and the whole-row duplicate search.
    """
    return column in frame.columns and not duplicated_rows(frame[[column]]).any()


def _examples(values: pd.Series, mask: pd.Series | np.ndarray) -> list[object]:
    return [v for v in values[mask].head(5).tolist()]


class _InputColumn:
    """One input column, with its trimmed text and blank mask each built at most once.

    The text form of 20M values costs about a second, and both the blank check and the parsing need it.
    """

    def __init__(self, raw: pd.Series) -> None:
        self.raw = raw

    @cached_property
    def trimmed(self) -> pd.Series:
        return self.raw.astype("string").str.strip()

    @cached_property
    def blank(self) -> pd.Series:
        """Which values are missing or only spaces.

        Numbers, booleans and dates never print as spaces, so for them only missing values count: their
        text form costs seconds per column at scale and is never built here.
        """
        raw, dtype = self.raw, self.raw.dtype
        if (
            pd.api.types.is_bool_dtype(dtype)
            or pd.api.types.is_numeric_dtype(dtype)
            or pd.api.types.is_datetime64_any_dtype(dtype)
            or pd.api.types.is_timedelta64_dtype(dtype)
        ):
            return raw.isna()
        if isinstance(dtype, pd.StringDtype):  # both text forms are Arrow strings, trimmed alike
            return raw.isna() | self.trimmed.eq("").fillna(False).astype(bool)
        return raw.isna() | (raw.astype(str).str.strip() == "")


def _parse(
    raw: pd.Series, column: ColumnSpec, where: str, mapping: TableMapping, problems: list[DataProblem]
) -> pd.Series:
    source = _InputColumn(raw)
    blank = source.blank
    if column.kind is Kind.ID:
        values = source.trimmed
        if blank.any():
            problems.append(
                DataProblem(
                    where, column.name, "has empty ids", "every row needs an id", int(blank.sum()), []
                )
            )
        return values.astype(str)
    if column.kind is Kind.TIMESTAMP:
        return _parse_timestamp(source, column, where, mapping, problems)
    if column.kind in (Kind.FLOAT, Kind.INT):
        values = (
            raw
            if pd.api.types.is_numeric_dtype(raw) and raw.dtype != bool
            else pd.to_numeric(source.trimmed, errors="coerce")
        )
        values = values.astype("float64")
        bad = values.isna() & ~blank
        if bad.any():
            problems.append(
                DataProblem(
                    where,
                    column.name,
                    "has values that are not numbers",
                    "use plain numbers with '.' as decimal point and no currency signs",
                    int(bad.sum()),
                    _examples(raw, bad),
                )
            )
        if column.required and blank.any():
            problems.append(
                DataProblem(where, column.name, "has empty values", "fill in every row", int(blank.sum()), [])
            )
        return values
    if column.kind is Kind.BOOL:
        if raw.dtype == bool:
            return raw.astype("boolean")
        text = source.trimmed.str.lower()
        values = pd.Series(pd.NA, index=raw.index, dtype="boolean")
        values[text.isin(_TRUE).fillna(False)] = True
        values[text.isin(_FALSE).fillna(False)] = False
        bad = values.isna() & ~blank
        if bad.any():
            problems.append(
                DataProblem(
                    where,
                    column.name,
                    "has values that are not true/false",
                    "use true/false, yes/no or 1/0",
                    int(bad.sum()),
                    _examples(raw, bad),
                )
            )
        return values
    return source.trimmed.str.lower().fillna("unknown").astype(str)


def _parse_timestamp(
    source: _InputColumn, column: ColumnSpec, where: str, mapping: TableMapping, problems: list[DataProblem]
) -> pd.Series:
    raw, blank = source.raw, source.blank
    if pd.api.types.is_datetime64_any_dtype(raw):
        if column.required and blank.any():
            problems.append(
                DataProblem(where, column.name, "has empty dates", "fill in every row", int(blank.sum()), [])
            )
        values = raw.dt.tz_convert(None) if getattr(raw.dt, "tz", None) is not None else raw
        return values.astype("datetime64[us]")
    fmt = mapping.date_format or "ISO8601"
    values = pd.to_datetime(source.trimmed, format=fmt, errors="coerce", utc=True).dt.tz_convert(None)
    bad = values.isna() & ~blank
    if bad.any():
        problems.append(
            DataProblem(
                where,
                column.name,
                f"has values that are not dates in format {fmt}",
                f"write dates as YYYY-MM-DD (optionally with a time) or set 'date_format' "
                f"for this table in {MAPPING_FILE} (e.g. '%d/%m/%Y')",
                int(bad.sum()),
                _examples(raw, bad),
            )
        )
    if column.required and blank.any():
        problems.append(
            DataProblem(where, column.name, "has empty dates", "fill in every row", int(blank.sum()), [])
        )
    return values.astype("datetime64[us]")


def _parse_attribute(raw: pd.Series) -> pd.Series:
    """Customer attributes: numeric when every value parses as a number, else lower-case text."""
    if pd.api.types.is_numeric_dtype(raw):
        return raw.astype("float64")
    if not _starts_with_text(raw):
        numeric = pd.to_numeric(raw, errors="coerce")
        if numeric.notna().sum() == raw.notna().sum():
            return numeric.astype("float64")
    return raw.astype("string").str.strip().str.lower().fillna("unknown").astype(str)


def _starts_with_text(raw: pd.Series, rows: int = 1000) -> bool:
    """Whether a value among the first ``rows`` is present but not a number.

    One such value makes the attribute text, so parsing a million country names as numbers (seconds)
    is skipped; each value parses on its own, so the answer never differs from parsing them all.
    """
    head = raw.iloc[:rows]
    return bool((pd.to_numeric(head, errors="coerce").isna() & head.notna()).any())


def _fill_defaults(frame: pd.DataFrame | None, spec: TableSpec) -> pd.DataFrame:
    """Give every table every contract column (but a missing ``order_id``: see :class:`Dataset`) so the
    feature code never branches on the input's shape; text columns become categoricals."""
    if frame is None:
        frame = pd.DataFrame(index=pd.RangeIndex(0))
    frame = frame.copy(deep=False)  # columns are added or replaced, never changed in place
    for column in spec.columns:
        if column.kind is Kind.TEXT and column.name in frame.columns:
            frame[column.name] = frame[column.name].astype("category").cat.as_ordered()  # min() as for text
        if column.name in frame.columns or column.name == "order_id":
            continue
        if column.kind is Kind.TIMESTAMP:
            frame[column.name] = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[us]")
        elif column.kind is Kind.TEXT:
            frame[column.name] = pd.Series(
                column.default or "", index=frame.index, dtype="category"
            ).cat.as_ordered()
        elif column.kind is Kind.ID:
            frame[column.name] = pd.Series(column.default or "", index=frame.index, dtype=str)
        elif column.kind is Kind.BOOL:
            frame[column.name] = pd.Series(column.default, index=frame.index, dtype="boolean")
        else:
            frame[column.name] = pd.Series(column.default, index=frame.index, dtype="float64")
    if spec.name == "transactions" and frame["returned"].isna().any():
        frame["returned"] = frame["returned"].fillna(False)
    return frame


def _check_references(
    frames: dict[str, pd.DataFrame], files: dict[str, Path], problems: list[DataProblem]
) -> None:
    customers = frames["customers"]
    if "customers" not in files:
        return
    repeated = customers["customer_id"].duplicated(keep=False)
    if repeated.any():
        problems.append(
            DataProblem(
                str(files["customers"]),
                "customer_id",
                "has ids on more than one row",
                "keep one row per customer",
                int(repeated.sum()),
                list(customers["customer_id"][repeated].unique()[:5]),
            )
        )
    known = pc.unique(pyarrow.array(customers["customer_id"]))
    for name in ("transactions", "interactions", "cancellations"):
        if name not in files:
            continue
        ids = frames[name]["customer_id"]
        unknown = _not_in(ids, known)
        if unknown.any():
            problems.append(
                DataProblem(
                    str(files[name]),
                    "customer_id",
                    "has ids that are not in customers",
                    f"add those customers to {files['customers'].name} or remove their rows",
                    int(unknown.sum()),
                    list(ids[unknown].unique()[:5]),
                )
            )


def _not_in(values: pd.Series, known: pyarrow.Array) -> np.ndarray:
    """``~values.isin(known)`` through Arrow's hash lookup: pandas compares Arrow strings through Python
    lists, seconds at scale. Missing values count as known only when ``known`` holds a missing value too."""
    found = pc.is_in(pyarrow.array(values), value_set=known, skip_nulls=False)
    return ~np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool)


def describe_contract() -> Iterable[str]:
    """Lines describing the contract (used by `churnguard contract` and kept in step with the README)."""
    for spec in TABLES:
        state = "required" if spec.required else "optional"
        yield f"{spec.name} ({state}): {spec.description}"
        for column in spec.columns:
            yield (
                f"  {column.name:<20} {column.kind.value:<9} {'required' if column.required else 'optional':<8} "
                f"{column.description}"
            )
