"""DuckDB's parallel row hashing, for the loader's search for repeated rows (see
:func:`features.validation.duplicated_rows`, which keeps the pandas semantics)."""

from __future__ import annotations

import contextlib

import duckdb
import numpy as np
import pyarrow

__all__ = ["quiet", "rows_with_repeated_hash"]


def quiet(con: duckdb.DuckDBPyConnection) -> None:
    """No DuckDB progress bar: it would write over the command's own. Inside Jupyter DuckDB draws it as a
    widget and refuses the setting when ipywidgets is missing; the bar is harmless there, so leave it."""
    with contextlib.suppress(duckdb.Error):
        con.execute("SET enable_progress_bar = false")


def rows_with_repeated_hash(keys: dict[str, pyarrow.Array | pyarrow.ChunkedArray], rows: int) -> np.ndarray:
    """Positions, ascending, of the rows whose hash over ``keys`` (equal-length columns) occurs more than
    once; every row when there are no keys.

    Two passes: the first finds the repeated hashes, and in clean data (none) is the only one run.
    """
    if not keys:
        return np.arange(rows)
    table = pyarrow.table(keys)
    row_hash = f"hash({', '.join(keys)})"
    con = duckdb.connect()
    quiet(con)
    try:
        con.register("keys", table)
        con.execute(
            f"create temp table repeated as select {row_hash} as h from keys group by all having count(*) > 1"
        )
        if not con.execute("select count(*) from repeated").fetchall()[0][0]:
            return np.arange(0)
        con.register("numbered", table.append_column("pos", pyarrow.array(np.arange(rows))))
        found = con.sql(f"select pos from numbered where {row_hash} in (select h from repeated) order by pos")
        return np.asarray(found.fetchnumpy()["pos"], dtype=np.int64)
    finally:
        con.close()
