"""Score history of the PostgreSQL serving store (the monitoring half of :class:`serving.store.ScoreStore`).

The same contract and the same values as the SQLite store's history: one snapshot per batch run, the
probability in millionths and money in cents (so both stores return identical figures), the newest
``keep_runs`` runs kept, ``reference`` reports kept whatever happens to their run. Labels are stored as
text (PostgreSQL compresses repeated values well enough that SQLite's label codes buy nothing here).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pandas as pd
import psycopg
from psycopg.rows import dict_row

from serving.migrations import SCHEMA
from serving.store import KEPT_REPORTS, _history_frame, _scaled, run_row

_STORED = "h.customer_id, h.churn_ppm, h.revenue_cents, h.clv_cents, h.risk_cents, h.segment, h.action"


def _frame(rows: Sequence[Sequence[Any]]) -> pd.DataFrame:
    """History rows (customer_id, then the stored figures and labels) as ``HISTORY_COLUMNS``."""
    labels = {v: v for row in rows for v in row[-2:] if v is not None}
    return _history_frame(rows, labels)


class PostgresHistory:
    """Mixed into :class:`serving.pg_store.PostgresScoreStore`, which provides :meth:`connection`."""

    def connection(self) -> contextlib.AbstractContextManager[psycopg.Connection[Any]]:
        raise NotImplementedError

    def record_run(self, snapshot: pd.DataFrame, run: Mapping[str, Any], keep_runs: int) -> int:
        """Append one run and drop all but the newest ``keep_runs``, in one transaction; returns its id."""
        with self.connection() as conn, conn.transaction():
            row = conn.execute(
                f"INSERT INTO {SCHEMA}.runs (as_of, scored_at, model_version, model, customers, summary) "
                "VALUES (%s, %s, %s, %s, %s, %s) RETURNING run_id",
                list(run_row(run, len(snapshot))),
            ).fetchone()
            assert row is not None
            run_id = int(row[0])
            with conn.cursor().copy(f"COPY {SCHEMA}.score_history FROM STDIN") as copy:
                for values in self._history_rows(run_id, snapshot):
                    copy.write_row(values)
            old = [
                int(r[0])
                for r in conn.execute(
                    f"SELECT run_id FROM {SCHEMA}.runs ORDER BY run_id DESC OFFSET %s", [max(keep_runs, 1)]
                )
            ]
            if old:
                conn.execute(f"DELETE FROM {SCHEMA}.score_history WHERE run_id = ANY(%s)", [old])
                conn.execute(
                    f"DELETE FROM {SCHEMA}.run_reports WHERE run_id = ANY(%s) AND NOT (kind = ANY(%s))",
                    [old, list(KEPT_REPORTS)],
                )
                conn.execute(f"DELETE FROM {SCHEMA}.runs WHERE run_id = ANY(%s)", [old])
        return run_id

    @staticmethod
    def _history_rows(run_id: int, snapshot: pd.DataFrame) -> Iterator[tuple[Any, ...]]:
        def labels(column: str) -> list[str | None]:
            return [None if v is None or v != v else str(v) for v in snapshot[column].tolist()]

        return zip(
            [run_id] * len(snapshot),
            snapshot["customer_id"].astype(str).tolist(),
            _scaled(snapshot["churn_probability"], 1e6),
            _scaled(snapshot["expected_revenue"], 100.0),
            _scaled(snapshot["clv"], 100.0),
            _scaled(snapshot["value_at_risk"], 100.0),
            labels("segment"),
            labels("action_name"),
            strict=True,
        )

    def runs(self) -> list[dict[str, Any]]:
        """Every kept run, oldest first: run_id, as_of, scored_at, model_version, model, customers, summary."""
        with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                "SELECT run_id, as_of, scored_at, model_version, model, customers, summary "
                f"FROM {SCHEMA}.runs ORDER BY run_id"
            ).fetchall()
        return [
            {**r, "model": json.loads(r["model"] or "{}"), "summary": json.loads(r["summary"] or "{}")}
            for r in rows
        ]

    def snapshot(self, run_id: int) -> pd.DataFrame:
        """One run's rows (``HISTORY_COLUMNS``), by customer id; empty if unknown."""
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT {_STORED} FROM {SCHEMA}.score_history h WHERE h.run_id = %s ORDER BY h.customer_id",
                [run_id],
            ).fetchall()
        return _frame(rows)

    def history(self, customer_id: str) -> list[dict[str, Any]]:
        """The customer's score at each kept run that scored them, oldest first."""
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT r.run_id, r.as_of, r.model_version, {_STORED} FROM {SCHEMA}.runs r "
                f"JOIN {SCHEMA}.score_history h ON h.run_id = r.run_id AND h.customer_id = %s "
                "ORDER BY r.run_id",
                [customer_id],
            ).fetchall()
        frame = _frame([r[3:] for r in rows]).drop(columns="customer_id")
        runs = pd.DataFrame([r[:3] for r in rows], columns=["run_id", "as_of", "model_version"], dtype=object)
        records = pd.concat([runs, frame], axis=1).astype(object)
        return [
            {k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
            for r in records.to_dict("records")
        ]

    def save_report(self, run_id: int, kind: str, report: Mapping[str, Any]) -> None:
        """Attach (or replace) a JSON report of one kind to a run."""
        with self.connection() as conn:
            conn.execute(
                f"INSERT INTO {SCHEMA}.run_reports (run_id, kind, body) VALUES (%s, %s, %s) "
                "ON CONFLICT (run_id, kind) DO UPDATE SET body = EXCLUDED.body",
                [run_id, kind, json.dumps(report, default=str, allow_nan=False)],
            )

    def reports(self, kind: str) -> dict[int, dict[str, Any]]:
        """Every stored report of one kind, by run id."""
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT run_id, body FROM {SCHEMA}.run_reports WHERE kind = %s ORDER BY run_id", [kind]
            ).fetchall()
        return {int(r[0]): json.loads(r[1]) for r in rows}
