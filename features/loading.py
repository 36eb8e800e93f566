"""Read a data folder into a validated :class:`Dataset`; the only place that touches input files.

Every problem found is collected and raised together as one :class:`DataValidationError` naming the
file, the column, how many rows fail, a few examples and how to fix it. Nothing is written here. What a real
export needs on the way in (guest rows skipped, repeated lines dropped, returns netted, order ids at several
timestamps split) is done by :mod:`features.exports` and accounted for in ``Dataset.report``.
The module is a little over 600 lines on purpose: finding, mapping, parsing and checking each table share
one problem list and one report, and splitting them would pass both through every call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow
import pyarrow.compute as pc

from features import exports
from features.contract import (
    MAPPING_FILE,
    REFERRALS,
    TABLES,
    TRANSACTIONS,
    DuplicatePolicy,
    Kind,
    TableMapping,
    TableSpec,
    describe_contract,
    read_mapping,
)
from features.errors import DataProblem, DataValidationError
from features.exports import LoadReport, TableReport
from features.parsing import InputColumn, parse_attribute, parse_column
from features.referrals import ReferralsLoad, clean_referrals, keep_usable_referrals, without_blank_ids
from features.validation import check_values, duplicated_rows

__all__ = [
    "MAPPING_FILE",
    "Dataset",
    "describe_contract",
    "format_load_report",
    "load_dataset",
    "load_extra_table",
    "load_referrals",
    "read_mapping",
]


@dataclass
class Dataset:
    """Validated input tables in contract form, with every optional column present but one.

    ``provided`` records which optional tables and columns the user really supplied, so features that
    need data the user does not have are left out instead of learned from filled-in defaults.

    ``transactions.order_id`` is kept only while it groups rows: when it is absent or never repeats, every
    row is its own order and the column would tell the features nothing (at 1M customers it held 0.35 GiB).
    Text columns with a small vocabulary (``channel``, ``type``) are pandas categoricals, for the same
    reason: repeating short strings cost more than the rest of their table.

    A transaction with a negative amount is a return (credit) line, whichever way the export marked it
    (see :mod:`features.exports`); the features net it into spend and count it as a returned order, and
    ``transactions.returned`` then counts as provided. ``report`` accounts for every row read.

    ``referrals`` (None when the folder has none) feeds no feature, only ``referral_value``; it holds the
    referrals that can count, see :mod:`features.referrals`.
    """

    transactions: pd.DataFrame
    customers: pd.DataFrame
    interactions: pd.DataFrame
    cancellations: pd.DataFrame
    provided: frozenset[str] = field(default_factory=frozenset)  # "table" and "table.column" entries
    files: dict[str, Path] = field(default_factory=dict)
    report: LoadReport = field(default_factory=LoadReport)
    referrals: pd.DataFrame | None = None

    @property
    def has_returns(self) -> bool:
        """Whether any transaction is a return line (a negative amount): the features then net them."""
        return bool((self.transactions["amount"].to_numpy() < 0).any())

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
        if self.referrals is not None:
            rows["referrals"] = len(self.referrals)
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


def load_dataset(
    data_dir: Path,
    mapping_file: Path | None = None,
    *,
    now: datetime | None = None,
    duplicates: DuplicatePolicy | str | None = None,
) -> Dataset:
    """Load and validate a data folder: a valid :class:`Dataset`, or a DataValidationError listing every
    problem (a mapping file that cannot be understood: a ConfigError).

    ``duplicates`` (drop, keep or fail) overrides each table's ``duplicates`` in the mapping file; the
    default is drop, with the count in ``Dataset.report`` (see :mod:`features.exports` for what counts as
    a repeated line).
    """
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
    override = None if duplicates is None else DuplicatePolicy.parse(duplicates, "duplicates")
    now_ts = (
        pd.Timestamp(now or datetime.now(UTC)).tz_localize(None)
        if (now is None or now.tzinfo)
        else pd.Timestamp(now)
    )

    problems: list[DataProblem] = []
    frames: dict[str, pd.DataFrame] = {}
    files: dict[str, Path] = {}
    provided: set[str] = set()
    report = LoadReport()
    unique_order_ids = False
    for spec in (*TABLES, REFERRALS):
        table_mapping = mappings.get(spec.name, TableMapping())
        path = _find_file(data_dir, spec, table_mapping, problems)
        if path is None:
            continue
        files[spec.name] = path
        frame = _read_table(path, spec, table_mapping, problems)
        if frame is None:
            continue
        policy = override or table_mapping.duplicates or DuplicatePolicy.DROP
        table_report = TableReport(spec.name, path.name, rows_read=len(frame), duplicates=policy)
        table = _to_contract(frame, _Source(path, spec, table_mapping, table_report), now_ts, problems)
        del frame  # the raw file's frame is not needed past here: don't hold it while the next table loads
        if table is None:
            continue
        report.tables[spec.name] = table_report
        provided.add(spec.name)
        provided.update(f"{spec.name}.{c}" for c in table.columns)
        if table_report.return_lines:
            provided.add("transactions.returned")  # return lines are what the return features count
        frames[spec.name] = table.frame
        unique_order_ids = unique_order_ids or table.unique_order_ids
    if problems:
        raise DataValidationError(problems)

    for spec in TABLES:
        frames[spec.name] = _fill_defaults(frames.get(spec.name), spec)
    if unique_order_ids:
        frames["transactions"] = frames["transactions"].drop(columns="order_id")
    _check_references(frames, files, problems)
    if "referrals" in frames:
        frames["referrals"] = clean_referrals(frames, files, report.tables["referrals"], problems)
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
        report=report,
        referrals=frames.get("referrals"),
    )


def load_extra_table(
    data_dir: Path, spec: TableSpec, mapping_file: Path | None = None, *, now: datetime | None = None
) -> tuple[pd.DataFrame, Path] | None:
    """Read one optional table outside the :class:`Dataset` (e.g. ``campaigns``) the way the contract tables
    are read: found by name or through the column mapping, parsed and checked. Returns the frame and its
    file, None when the folder has no such file, or raises one DataValidationError listing every problem."""
    loaded = _read_extra_table(Path(data_dir), spec, mapping_file, now)
    return None if loaded is None else (_fill_defaults(loaded[0], spec), loaded[1])


def load_referrals(
    data_dir: Path,
    known: Callable[[pd.Series], pd.Series],
    source: str,
    mapping_file: Path | None = None,
    *,
    now: datetime | None = None,
) -> pd.DataFrame | None:
    """The folder's ``referrals`` table alone, read and cleaned as :func:`load_dataset` reads and cleans it
    (the same rows kept, the same refusal), for an engine that holds the other tables elsewhere (Spark).
    ``known`` answers which of the customer ids the table names the data knows, and ``source`` names
    where it looked (:func:`features.referrals.customer_source`). None when the folder has no referrals;
    a DataValidationError when the table cannot be read or holds no referral that can count."""
    loaded = _read_extra_table(Path(data_dir), REFERRALS, mapping_file, now)
    if loaded is None:
        return None
    table, path, report = loaded
    named = pd.Series(pd.concat([table["referrer_id"], table["referred_id"]]).astype(str).unique(), dtype=str)
    problems: list[DataProblem] = []
    kept = keep_usable_referrals(table, known(named), ReferralsLoad(source, str(path), report, problems))
    if problems:
        raise DataValidationError(problems)
    return kept


def _read_extra_table(
    data_dir: Path, spec: TableSpec, mapping_file: Path | None, now: datetime | None
) -> tuple[pd.DataFrame, Path, TableReport] | None:
    """One table found, parsed and checked as :func:`load_dataset` does it, with its load report."""
    if mapping_file is None and (data_dir / MAPPING_FILE).exists():
        mapping_file = data_dir / MAPPING_FILE
    table_mapping = (read_mapping(mapping_file) if mapping_file else {}).get(spec.name, TableMapping())
    problems: list[DataProblem] = []
    path = _find_file(data_dir, spec, table_mapping, problems) if data_dir.is_dir() else None
    if path is None:
        if problems:
            raise DataValidationError(problems)
        return None
    frame = _read_table(path, spec, table_mapping, problems)
    table = None
    policy = table_mapping.duplicates or DuplicatePolicy.DROP
    report = TableReport(
        spec.name, path.name, rows_read=0 if frame is None else len(frame), duplicates=policy
    )
    if frame is not None:
        now_ts = (
            pd.Timestamp(now or datetime.now(UTC)).tz_localize(None)
            if (now is None or now.tzinfo)
            else (pd.Timestamp(now))
        )
        table = _to_contract(frame, _Source(path, spec, table_mapping, report), now_ts, problems)
    if problems or table is None:
        raise DataValidationError(
            problems or [DataProblem(str(path), None, "cannot be read", "export it again")]
        )
    return table.frame, path, report


def format_load_report(dataset: Dataset) -> list[str]:
    """The load's accounting as plain text lines, warnings last (what ``churnguard validate`` prints)."""
    return dataset.report.lines()


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


@dataclass(frozen=True)
class _Source:
    """Where a table comes from and how it maps onto the contract; ``report`` is filled in as it loads."""

    path: Path
    spec: TableSpec
    mapping: TableMapping
    report: TableReport


def _to_contract(
    frame: pd.DataFrame, source: _Source, now: pd.Timestamp, problems: list[DataProblem]
) -> _ContractTable | None:
    """Rename mapped columns, skip guest rows, parse every contract column to its kind, check values,
    then apply what real exports need (see :mod:`features.exports`)."""
    where, spec, mapping, report = str(source.path), source.spec, source.mapping, source.report
    frame = _mapped(frame, source, problems)
    if frame is None:
        return None
    before = len(problems)
    frame, ids = _without_guests(frame, spec, report)
    out: dict[str, pd.Series] = {}
    present = [c for c in spec.columns if c.name in frame.columns]
    for column in present:
        raw = ids if ids is not None and column.name == "customer_id" else InputColumn(frame[column.name])
        out[column.name] = parse_column(raw, column, where, mapping, problems)
        if column.kind is Kind.ID and column.name in out:
            out[column.name], changed = exports.integral_ids(out[column.name])
            report.ids_normalised += changed
    if spec.extra_columns_are_attributes:
        for name in frame.columns:
            if name not in out:
                out[name] = parse_attribute(frame[name])
    if len(problems) > before:
        return None
    parsed = pd.DataFrame(out, copy=False)  # the parsed columns are new already: no second copy
    if mapping.derive_amount:
        parsed = _derive_amount(parsed, where, report, problems)
    parsed = parsed.drop(columns=[c.name for c in present if not c.stored])
    check_values(parsed, spec, where, now, problems)
    if len(problems) > before:
        return None
    unique_order_ids = spec.name == TRANSACTIONS.name and _never_repeats(parsed, "order_id")
    if not unique_order_ids:  # unique order ids make every row distinct: no search needed
        parsed = exports.drop_repeated_lines(parsed, frame, where, report, problems)
    del frame
    if spec.name == TRANSACTIONS.name:
        parsed = exports.mark_returns(parsed, mapping.returns, where, report, problems)
        if "order_id" in parsed.columns and not unique_order_ids:
            parsed = exports.split_orders_by_timestamp(parsed, report)
    if len(problems) > before:
        return None
    parsed = parsed.reset_index(drop=True)
    if spec.name == TRANSACTIONS.name:
        exports.count_lines(parsed, report, rows_are_orders=unique_order_ids)
    report.rows_kept = len(parsed)
    return _ContractTable(parsed, [c.name for c in present], unique_order_ids)


def _mapped(frame: pd.DataFrame, source: _Source, problems: list[DataProblem]) -> pd.DataFrame | None:
    """The frame with mapped columns renamed, or None when its header cannot be used."""
    where, spec, mapping = str(source.path), source.spec, source.mapping
    frame.columns = [str(c).strip() for c in frame.columns]
    renames = {name: target for target, name in mapping.columns.items()}
    missing_sources = [s for s in renames if s not in frame.columns]
    for name in missing_sources:
        problems.append(
            DataProblem(
                where,
                name,
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
    required = spec.required_columns
    if mapping.derive_amount:
        required = [c for c in required if c != "amount"] + ["quantity", "unit_price"]
        source.report.amount_derived = True
        if "amount" in frame.columns:
            problems.append(
                DataProblem(
                    where,
                    "amount",
                    f"is in the file, but {MAPPING_FILE} derives amount as quantity * unit_price",
                    f"remove 'amount: quantity * unit_price' from {MAPPING_FILE}, or the amount column",
                )
            )
            return None
    missing = [c for c in required if c not in frame.columns]
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
    return frame


def _without_guests(
    frame: pd.DataFrame, spec: TableSpec, report: TableReport
) -> tuple[pd.DataFrame, InputColumn | None]:
    """Events without a customer id (guest checkouts, anonymous contacts) belong to nobody: skip and count
    them. A customers row needs its id, so there a blank id stays an error. Also returns the customer id
    column, whose trimmed text the parsing reuses. Referrals name two customers and skip rows lacking
    either (:func:`features.referrals.without_blank_ids`)."""
    if spec.name == REFERRALS.name:
        return without_blank_ids(frame, report), None
    ids = InputColumn(frame["customer_id"])
    if spec.name == "customers" or not ids.blank.any():
        return frame, ids
    guests = ids.blank.to_numpy()
    report.guest_rows = int(guests.sum())
    report.warnings.append(f"{report.file}: skipped {report.guest_rows:,} rows without a customer id")
    frame = frame[~guests]
    return frame, InputColumn(frame["customer_id"])


def _derive_amount(
    parsed: pd.DataFrame, where: str, report: TableReport, problems: list[DataProblem]
) -> pd.DataFrame:
    """amount = quantity * unit_price, for exports that carry no line total."""
    amount = parsed["quantity"] * parsed["unit_price"]
    blank = amount.isna()
    if blank.any():
        problems.append(
            DataProblem(
                where,
                "amount",
                "cannot be derived as quantity * unit_price: quantity or unit_price is empty",
                "fill in quantity and unit_price on every row",
                int(blank.sum()),
            )
        )
    return parsed.assign(amount=amount)


def _never_repeats(frame: pd.DataFrame, column: str) -> bool:
    """Whether ``column`` is present and holds no value twice.

    Unique order ids make every row its own order, and no two rows can then be exact duplicates, so
    this one pass over a single column saves both the order roll-up and the whole-row duplicate search.
    """
    return column in frame.columns and not duplicated_rows(frame[[column]]).any()


def _fill_defaults(frame: pd.DataFrame | None, spec: TableSpec) -> pd.DataFrame:
    """Give every table every stored contract column (but a missing ``order_id``: see :class:`Dataset`) so the
    feature code never branches on the input's shape; text columns become categoricals."""
    if frame is None:
        frame = pd.DataFrame(index=pd.RangeIndex(0))
    frame = frame.copy(deep=False)  # columns are added or replaced, never changed in place
    for column in spec.columns:
        if column.kind is Kind.TEXT and column.name in frame.columns:
            frame[column.name] = frame[column.name].astype("category").cat.as_ordered()  # min() as for text
        if column.name in frame.columns or column.name == "order_id" or not column.stored:
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
