"""Value checks of the data contract, declared as pandera schemas built from the contract's specs, and the
search for repeated rows and values, which has to stay fast on tens of millions of rows."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyarrow

from features.contract import Kind, TableSpec
from features.engine.hashing import quiet, rows_with_repeated_hash
from features.errors import DataProblem

_PYSPARK_NOISE = "PySpark does not yet fully support"
with warnings.catch_warnings():
    # with pyspark installed (the spark extra) pandera imports pyspark.pandas, which warns that pandas 3
    # is not fully supported: noise on every command, and an error where warnings are errors
    warnings.filterwarnings("ignore", message=_PYSPARK_NOISE, category=FutureWarning)
    import pandera.pandas as pa
    from pandera.errors import SchemaErrors

__all__ = ["check_values", "duplicated_rows", "quiet"]  # quiet: moved to features.engine.hashing

_EARLIEST = pd.Timestamp("1970-01-01")


def _bound(limit: float, op: str) -> pa.Check:
    if op == ">=":
        return pa.Check(lambda s: s >= limit, name=f"at least {limit:g}")
    return pa.Check(lambda s: s <= limit, name=f"at most {limit:g}")


def _column_checks(spec: TableSpec, now: pd.Timestamp) -> dict[str, pa.Column]:
    columns: dict[str, pa.Column] = {}
    for column in spec.columns:
        checks: list[pa.Check] = []
        if column.kind in (Kind.FLOAT, Kind.INT):
            checks.append(pa.Check(lambda s: ~s.isin([float("inf"), float("-inf")]), name="finite"))
            if column.minimum is not None:
                checks.append(_bound(column.minimum, ">="))
            if column.maximum is not None:
                checks.append(_bound(column.maximum, "<="))
            if column.kind is Kind.INT:
                checks.append(pa.Check(lambda s: s.isna() | (s == s.round()), name="whole number"))
        if column.kind is Kind.TIMESTAMP:
            checks.append(pa.Check(lambda s, now=now: s <= now, name="not in the future"))
            checks.append(pa.Check(lambda s: s >= _EARLIEST, name="not before 1970"))
        columns[column.name] = pa.Column(checks=checks, nullable=True, required=False)
    return columns


_HINTS = {
    "finite": "replace infinite values with real figures",
    "whole number": "use whole numbers",
    "not in the future": "events cannot lie after today: check the date format (day and month swapped?) "
    "or the clock of the export",
    "not before 1970": "check the date format or remove placeholder dates",
}


def check_values(
    frame: pd.DataFrame, spec: TableSpec, where: str, now: pd.Timestamp, problems: list[DataProblem]
) -> None:
    """Append a DataProblem for every failing value check (repeated rows are the loader's business: a
    duplicate policy decides about them, see :mod:`features.exports`)."""
    schema = pa.DataFrameSchema(_column_checks(spec, now), strict=False, coerce=False)
    try:
        with warnings.catch_warnings():  # pandera's first validation imports pyspark.pandas too
            warnings.filterwarnings("ignore", message=_PYSPARK_NOISE, category=FutureWarning)
            schema.validate(frame, lazy=True)
    except SchemaErrors as errors:
        cases = errors.failure_cases
        cases = cases[cases["column"].notna() & cases["check"].notna()]
        for (column, check), group in cases.groupby(["column", "check"], sort=False):
            check_name = str(check)
            hint = _HINTS.get(check_name, f"values must be {check_name}: correct or remove those rows")
            problems.append(
                DataProblem(
                    where,
                    str(column),
                    f"has values that break '{check_name}'",
                    hint,
                    len(group),
                    group["failure_case"].head(5).tolist(),
                )
            )


def duplicated_rows(frame: pd.DataFrame, *, pandas_below: int = 100_000) -> pd.Series:
    """Exactly ``frame.duplicated(keep="first")``, fast on tens of millions of rows.

    pandas builds one hash table per column to find repeated rows, which takes half a minute on 20M
    transactions. DuckDB hashes whole rows in parallel in a few seconds; rows that pandas counts as equal
    always hash alike, so only rows whose hash repeats (the duplicates, plus the odd collision) can be
    duplicates, and pandas decides on those few. The answer is therefore pandas' own. Frames shorter
    than ``pandas_below`` rows go to pandas directly: there, starting DuckDB costs more than it saves.
    """
    if len(frame) < pandas_below:
        return frame.duplicated(keep="first")
    candidates = _rows_with_repeated_hash(frame)
    duplicated = np.zeros(len(frame), dtype=bool)
    if len(candidates):
        duplicated[candidates] = frame.iloc[candidates].duplicated(keep="first").to_numpy()
    return pd.Series(duplicated, index=frame.index)


def _rows_with_repeated_hash(frame: pd.DataFrame) -> np.ndarray:
    """Positions, ascending, of the rows whose hash over the equality keys occurs more than once."""
    if len(frame) < 2:
        return np.arange(0)
    keys = {}
    for i, (_, column) in enumerate(frame.items()):
        key = _equality_key(column)
        if key is not None:
            keys[f"k{i}"] = key
    return rows_with_repeated_hash(keys, len(frame))


def _equality_key(column: pd.Series) -> pyarrow.Array | pyarrow.ChunkedArray | None:
    """The column as Arrow values that are equal wherever pandas' ``duplicated`` calls them equal.

    Floats are normalised so -0.0 meets 0.0 and every NaN meets every other NaN; dates become their
    integer ticks (all NaT alike). Keys may merge values pandas keeps apart (more candidates, never a
    missed duplicate). ``None`` for dtypes without such a key: the column is then left out of the hash,
    which again only widens the candidates.
    """
    dtype = column.dtype
    if isinstance(dtype, pd.StringDtype):
        return pyarrow.array(column)
    if isinstance(dtype, pd.BooleanDtype):
        return pyarrow.array(column.to_numpy(dtype="int8", na_value=2))
    if isinstance(dtype, np.dtype):
        values = column.to_numpy()
        if dtype.kind == "f":
            normal = values.astype(np.float64) + 0.0  # a new array, with -0.0 turned into 0.0
            normal[np.isnan(normal)] = np.nan
            return pyarrow.array(normal.view(np.int64))
        if dtype.kind in "mM":
            return pyarrow.array(values.view(np.int64))
        if dtype.kind in "iub":
            return pyarrow.array(values)
    return None
