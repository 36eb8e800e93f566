"""Each customer's most recent purchases and interactions, for the dashboard's customer page.

Kept column-wise, with the field names once per customer::

    {"purchases": {"timestamp": [newest, ...], "amount": [...], ...}, "interactions": {...}}

and built without per-event Python work: the events are chosen with one sort (numpy), their values
written as JSON by DuckDB, and each customer's lists joined by Arrow (the form is
:mod:`serving.encoding`'s). :func:`expand_history` turns the stored form back into the page's shape, one
dict per event.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.loading import Dataset
from features.validation import quiet
from serving.encoding import columnwise_objects, expand_history, history_objects

__all__ = ["HISTORY_ROWS", "expand_history", "recent_history"]

HISTORY_ROWS = 10
_KINDS = {  # kind -> (table, fields besides the timestamp)
    "purchases": ("transactions", ("amount", "channel", "returned", "delivery_delay_days")),
    "interactions": (
        "interactions",
        ("type", "channel", "resolved", "resolution_hours", "satisfaction", "nps"),
    ),
}
_MINUTE = "%Y-%m-%d %H:%M"


def _newest(frame: pd.DataFrame, scored: pa.Array, as_of: pd.Timestamp) -> tuple[np.ndarray, np.ndarray]:
    """(rows, customer): the frame's rows of each scored customer's newest HISTORY_ROWS events before
    ``as_of``, grouped by the customer's position in ``scored`` and newest first (ties in frame order)."""
    ids = pc.cast(pa.array(frame["customer_id"]), pa.string())
    customer = pc.index_in(ids, value_set=scored).fill_null(-1).to_numpy(zero_copy_only=False)
    stamp = frame["timestamp"].to_numpy("datetime64[us]")
    candidates = np.flatnonzero((customer >= 0) & (stamp < as_of.to_datetime64()))
    micros = stamp[candidates].view(np.int64)
    order = candidates[np.lexsort((-micros, customer[candidates]))]  # a stable sort: ties keep frame order
    grouped = customer[order]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    newest = rank < HISTORY_ROWS
    return order[newest], grouped[newest]


def _kind_json(
    con: duckdb.DuckDBPyConnection,
    frame: pd.DataFrame,
    fields: Sequence[str],
    scored: pa.Array,
    as_of: pd.Timestamp,
) -> pa.Array:
    """Per scored customer, the column-wise JSON object of its newest events of one kind ('{}' if none)."""
    rows, customer = _newest(frame, scored, as_of)
    events = pa.Table.from_pandas(frame[["timestamp", *fields]], preserve_index=False).take(pa.array(rows))
    con.register("events", events)
    values = ", ".join(
        [f"coalesce(to_json(strftime(timestamp, '{_MINUTE}'))::VARCHAR, 'null')"]
        + [f"coalesce(to_json({field})::VARCHAR, 'null')" for field in fields]
    )
    written = con.sql(f"SELECT {values} FROM events").fetch_arrow_table()  # in the events' order
    con.unregister("events")
    counts = np.bincount(customer, minlength=len(scored))
    texts = {name: written.column(i).combine_chunks() for i, name in enumerate(["timestamp", *fields])}
    return columnwise_objects(texts, counts)


def recent_history(
    dataset: Dataset, as_of: pd.Timestamp, customer_ids: Sequence[str], threads: int = 2
) -> list[str]:
    """The stored history JSON of each customer in ``customer_ids`` (same order); events before as_of."""
    scored = pa.array(list(customer_ids), type=pa.string())
    con = duckdb.connect(config={"threads": threads})
    quiet(con)  # its progress bar would write over `churnguard score`'s own
    try:
        kinds = {
            kind: _kind_json(con, getattr(dataset, table), fields, scored, as_of)
            for kind, (table, fields) in _KINDS.items()
        }
    finally:
        con.close()
    return history_objects(kinds)
