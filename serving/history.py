"""Each customer's most recent purchases and interactions as JSON, for the dashboard's customer page.

Encoded to JSON inside DuckDB: building millions of small Python dicts would cost more than scoring.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from features.loading import Dataset

HISTORY_ROWS = 10

_SQL = """
SELECT customer_id,
       to_json(list(struct_pack(timestamp := strftime(timestamp, '%Y-%m-%d %H:%M'), {fields})
                    ORDER BY timestamp DESC)[1:{rows}]) AS events
FROM {table} WHERE timestamp < ? GROUP BY customer_id
"""


def recent_history(dataset: Dataset, as_of: pd.Timestamp, threads: int = 2) -> dict[str, str]:
    """customer_id -> '{"purchases": [...], "interactions": [...]}' (newest first, events before as_of)."""
    con = duckdb.connect(config={"threads": threads})
    try:
        con.register("tx", dataset.transactions)
        con.register("it", dataset.interactions)
        parts: dict[str, dict[str, str]] = {}
        for key, table, fields in (
            ("purchases", "tx", "amount, channel, returned, delivery_delay_days"),
            ("interactions", "it", "type, channel, resolved, resolution_hours, satisfaction, nps"),
        ):
            sql = _SQL.format(fields=fields, rows=HISTORY_ROWS, table=table)
            rows = con.execute(sql, [as_of.to_pydatetime()]).fetchall()
            for customer_id, events in rows:
                parts.setdefault(str(customer_id), {})[key] = events
    finally:
        con.close()
    return {
        c: f'{{"purchases": {p.get("purchases", "[]")}, "interactions": {p.get("interactions", "[]")}}}'
        for c, p in parts.items()
    }
