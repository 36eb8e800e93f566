"""Input columns to contract types: ids, dates, numbers, flags and customer attributes, each parsed in one
vectorised pass, with every value that does not parse counted and shown in a :class:`DataProblem`."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from features.contract import MAPPING_FILE, ColumnSpec, Kind, TableMapping
from features.errors import DataProblem

_TRUE = {"true", "t", "yes", "y", "1", "1.0"}
_FALSE = {"false", "f", "no", "n", "0", "0.0"}


def examples(values: pd.Series, mask: pd.Series | np.ndarray) -> list[object]:
    return [v for v in values[mask].head(5).tolist()]


class InputColumn:
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


def _empty(where: str, column: ColumnSpec, what: str, blank: pd.Series) -> DataProblem:
    """A required column with blank values."""
    return DataProblem(where, column.name, f"has empty {what}", "fill in every row", int(blank.sum()), [])


def parse_column(
    source: InputColumn, column: ColumnSpec, where: str, mapping: TableMapping, problems: list[DataProblem]
) -> pd.Series:
    raw, blank = source.raw, source.blank
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
                    examples(raw, bad),
                )
            )
        if column.required and blank.any():
            problems.append(_empty(where, column, "values", blank))
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
                    examples(raw, bad),
                )
            )
        return values
    return source.trimmed.str.lower().fillna("unknown").astype(str)


def _parse_timestamp(
    source: InputColumn, column: ColumnSpec, where: str, mapping: TableMapping, problems: list[DataProblem]
) -> pd.Series:
    raw, blank = source.raw, source.blank
    if pd.api.types.is_datetime64_any_dtype(raw):
        if column.required and blank.any():
            problems.append(_empty(where, column, "dates", blank))
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
                examples(raw, bad),
            )
        )
    if column.required and blank.any():
        problems.append(_empty(where, column, "dates", blank))
    return values.astype("datetime64[us]")


def parse_attribute(raw: pd.Series) -> pd.Series:
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
