"""The serving store: the latest score of every customer, read by the API and the dashboard.

:class:`ScoreStore` is the interface; :class:`SqliteScoreStore` is the embedded default (a file under the
churnguard home, nothing to start). A server-backed store for several API instances implements the same
methods. A refresh replaces all scores in one transaction: readers see the old set or the new one, never a
mix, and a crash mid-refresh leaves the old set in place.

Stored compactly (a refresh writes every customer, so its bytes are its time): what every row shares is
kept once in ``meta`` and put back on read, and repeated keys are left out: a row's ``model`` is NULL when
it is ``meta["model"]``; its ``features`` may be a JSON array of values in the order of
``meta["feature_names"]``; its reasons may be arrays (``stored_reasons``) and its history column-wise.
The columns and these forms live in :mod:`serving.encoding`. Reads return the full shapes.

History: besides the latest set, every batch run keeps a dated snapshot per customer in ``score_history``
(:data:`HISTORY_COLUMNS`), keyed (run_id, customer_id) so a run appends at the end of the table and a
customer's history is one key lookup per kept run. Only what trends need is kept, as integers: the
probability in millionths, money (revenue forecast, lifetime value, value at risk) in cents, segment and
action as codes of ``history_labels``. A ``runs`` table holds each run's date, model and summary,
``run_reports`` its drift and realised-performance reports (JSON). Retention keeps the newest ``keep_runs``
runs; a model version's drift reference (kind ``reference``) outlives its run.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from serving.encoding import (
    FIGURE_COLUMNS,
    INPUT_COLUMNS,
    STORE_COLUMNS,
    STORE_JSON_COLUMNS,
    expand_history,
    expand_inputs,
    expand_reasons,
    model_json,
)

_COLUMNS = tuple(STORE_COLUMNS)
_SHARED = "(SELECT value FROM meta WHERE key = '{}')"


def _select_lists(present: frozenset[str]) -> tuple[str, str]:
    """(list columns, all columns) to SELECT from a scores table holding ``present`` columns.

    A store written by an earlier version lacks newer columns: they read as NULL until the next refresh.
    Before the lifetime-value fields its ``clv`` was the spend forecast over the horizon, so it is read
    as ``expected_revenue_90d`` and the lifetime ``clv`` is unknown (NULL), never mislabelled."""
    before_value = "expected_revenue_90d" not in present

    def expression(column: str) -> str:
        if column == "model":
            return f"COALESCE(model, {_SHARED.format('model')}) AS model"
        if before_value and column == "expected_revenue_90d" and "clv" in present:
            return "clv AS expected_revenue_90d"
        if before_value and column == "clv":
            return "NULL AS clv"
        return column if column in present else f"NULL AS {column}"

    listed = ", ".join(expression(c) for c in _COLUMNS if c not in INPUT_COLUMNS)
    inputs = ", ".join(expression(c) for c in INPUT_COLUMNS)
    return listed, f"{listed}, {inputs}, {_SHARED.format('feature_names')} AS feature_names"


_LIST_COLUMNS, _ALL_COLUMNS = _select_lists(frozenset(_COLUMNS))
_CREATE_SCORES = f"CREATE TABLE scores ({', '.join(f'{c} {t}' for c, t in STORE_COLUMNS.items())})"
_INDEXED = ("value_at_risk", "churn_probability", "clv", "segment", "risk_tier", "action_name")
_PAGE_SIZE = 16384  # for a new store: rows of a few KiB fill big pages well
_LOCK_WAIT_SECONDS = 30  # how long a writer waits for another to finish before giving up
_BULK_CACHE_KIB = 65536  # page cache while a refresh writes (SQLite's default is 2 MiB)
SORTABLE = ("value_at_risk", "churn_probability", "clv", "customer_id", "expected_net_value")

# What a run keeps per customer (the snapshot's columns, as :meth:`SqliteScoreStore.snapshot` returns them).
HISTORY_COLUMNS = (
    "customer_id",
    "churn_probability",
    "expected_revenue",  # spend expected over the model's horizon (what realised performance checks)
    "clv",  # lifetime value, when the model has a value model (else null)
    "value_at_risk",
    "segment",
    "action_name",
)
_HISTORY_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS runs (run_id INTEGER PRIMARY KEY, as_of TEXT NOT NULL, scored_at TEXT, "
    "model_version TEXT, model TEXT, customers INTEGER, summary TEXT)",
    "CREATE TABLE IF NOT EXISTS score_history (run_id INTEGER NOT NULL, customer_id TEXT NOT NULL, "
    "churn_ppm INTEGER, revenue_cents INTEGER, clv_cents INTEGER, risk_cents INTEGER, segment INTEGER, "
    "action INTEGER, "
    "PRIMARY KEY (run_id, customer_id)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS history_labels (code INTEGER PRIMARY KEY, label TEXT UNIQUE NOT NULL)",
    "CREATE TABLE IF NOT EXISTS run_reports (run_id INTEGER NOT NULL, kind TEXT NOT NULL, body TEXT, "
    "PRIMARY KEY (run_id, kind))",
)
KEPT_REPORTS = ("reference",)  # report kinds retention never deletes


@dataclass(frozen=True)
class CustomerQuery:
    """Filters, sort and page for the ranked customer list."""

    segment: str | None = None
    risk_tier: str | None = None
    action: str | None = None
    min_clv: float | None = None
    search: str | None = None
    sort: str = "value_at_risk"
    descending: bool = True
    limit: int = 50
    offset: int = 0


class ScoreStore(Protocol):
    def replace_all(self, scores: pd.DataFrame, meta: dict[str, Any]) -> None: ...
    def get(self, customer_id: str, with_inputs: bool = True) -> dict[str, Any] | None: ...
    def get_many(
        self, customer_ids: Sequence[str], with_inputs: bool = True
    ) -> dict[str, dict[str, Any]]: ...
    def query(self, q: CustomerQuery) -> tuple[list[dict[str, Any]], int]: ...
    def iter_query(self, q: CustomerQuery) -> Iterator[dict[str, Any]]: ...
    def columns(self, names: Sequence[str]) -> pd.DataFrame: ...
    def summary(self) -> dict[str, Any]: ...
    def meta(self) -> dict[str, Any]: ...
    # Score history (see "History" below): one compact snapshot per batch run, the newest ``keep_runs`` kept.
    def record_run(self, snapshot: pd.DataFrame, run: Mapping[str, Any], keep_runs: int) -> int: ...
    def runs(self) -> list[dict[str, Any]]: ...
    def snapshot(self, run_id: int) -> pd.DataFrame: ...
    def history(self, customer_id: str) -> list[dict[str, Any]]: ...
    def save_report(self, run_id: int, kind: str, report: Mapping[str, Any]) -> None: ...
    def reports(self, kind: str) -> dict[int, dict[str, Any]]: ...


def _use_wal(con: sqlite3.Connection) -> None:
    """Put the store file in WAL mode (kept in the file). Switching needs the file to itself, and SQLite
    refuses at once ('database is locked') instead of waiting when another connection is creating the same
    new store (two planners, or the API and a batch run, starting on no file): retried until that one has
    switched it, within the store's usual lock wait. A file system without WAL keeps its own journal."""
    deadline = time.monotonic() + _LOCK_WAIT_SECONDS
    while True:
        try:
            if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class SqliteScoreStore:
    """Scores in one SQLite file (WAL mode: readers never block the writer)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()

    def _connect(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # A new store is private (0600, like the key file); SQLite gives its -wal and -shm the same mode.
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            con = sqlite3.connect(
                self.path, timeout=_LOCK_WAIT_SECONDS, isolation_level=None, check_same_thread=False
            )
            con.row_factory = sqlite3.Row
            con.execute(f"PRAGMA page_size={_PAGE_SIZE}")  # no effect on an existing store
            _use_wal(con)
            con.execute("PRAGMA synchronous=NORMAL")
            # Builds of SQLite that default to secure_delete=ON (Debian's among them) zero every page a refresh
            # frees: the old set written again, through the log, before the new one overwrites it. FAST zeroes
            # only what costs no extra I/O (a 1M refresh: 103 -> 47 s).
            con.execute("PRAGMA secure_delete=FAST")
            self._local.con = con
        return con

    def connection(self) -> sqlite3.Connection:
        """This thread's connection to the store file (autocommit), for tables kept beside the scores
        (:mod:`serving.campaign_store`): the same file mode, journal and settings."""
        return self._connect()

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction on :meth:`connection` (``BEGIN IMMEDIATE``: writers queue, readers go on)."""
        return self._transaction()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        con = self._connect()
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def _select(self, con: sqlite3.Connection) -> tuple[str, str]:
        """The SELECT lists for the scores table as it is now (it changes only at a refresh)."""
        present = frozenset(r[1] for r in con.execute("PRAGMA table_info(scores)"))
        if present == frozenset(_COLUMNS):
            return _LIST_COLUMNS, _ALL_COLUMNS
        return _select_lists(present)

    def _has_scores(self, con: sqlite3.Connection) -> bool:
        row = con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='scores'").fetchone()
        return row is not None

    def replace_all(self, scores: pd.DataFrame, meta: dict[str, Any]) -> None:
        rows = _rows(scores, model_json(meta["model"]) if "model" in meta else None)
        con = self._connect()
        cache = con.execute("PRAGMA cache_size").fetchone()[0]
        con.execute(f"PRAGMA cache_size=-{_BULK_CACHE_KIB}")
        try:
            with self._transaction():
                # Dropped first, the old set's pages hold the new one; readers still see the old set
                # until the commit, and a crash before it rolls everything back.
                con.execute("DROP TABLE IF EXISTS scores_new")  # left by versions that built it aside
                con.execute("DROP TABLE IF EXISTS scores")
                con.execute(_CREATE_SCORES)
                con.executemany(f"INSERT INTO scores VALUES ({','.join('?' * len(_COLUMNS))})", rows)
                for column in _INDEXED:
                    con.execute(f"CREATE INDEX scores_{column} ON scores({column})")
                con.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
                con.execute("DELETE FROM meta")
                con.executemany(
                    "INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()]
                )
        finally:
            con.execute(f"PRAGMA cache_size={cache}")
        self._shrink_log(con)

    @staticmethod
    def _shrink_log(con: sqlite3.Connection) -> None:
        """Copy the refresh from the write-ahead log into the file and empty the log, unless readers keep
        it busy for more than a moment (the scores are committed either way)."""
        con.execute("PRAGMA busy_timeout=1000")
        try:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            con.execute(f"PRAGMA busy_timeout={_LOCK_WAIT_SECONDS * 1000}")

    def get(self, customer_id: str, with_inputs: bool = True) -> dict[str, Any] | None:
        return self.get_many([customer_id], with_inputs).get(customer_id)

    def get_many(self, customer_ids: Sequence[str], with_inputs: bool = True) -> dict[str, dict[str, Any]]:
        """Scores by id; ``with_inputs=False`` skips the model inputs and history (the API's fast read).

        The hot path reads a table of today's columns straight away (checking the table first cost more
        than the read itself); no table yet, or one an earlier version wrote, fails that statement and is
        read the careful way."""
        if not customer_ids:
            return {}
        con = self._connect()
        try:
            return self._get_many(con, customer_ids, _ALL_COLUMNS if with_inputs else _LIST_COLUMNS)
        except sqlite3.OperationalError:
            if not self._has_scores(con):
                return {}
            listed, every = self._select(con)
            return self._get_many(con, customer_ids, every if with_inputs else listed)

    @staticmethod
    def _get_many(
        con: sqlite3.Connection, customer_ids: Sequence[str], columns: str
    ) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(customer_ids), 500):
            chunk = list(customer_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for row in con.execute(f"SELECT {columns} FROM scores WHERE customer_id IN ({marks})", chunk):
                record = _record(row)
                found[record["customer_id"]] = record
        return found

    def _where(self, q: CustomerQuery) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[object] = []
        for column, value in (("segment", q.segment), ("risk_tier", q.risk_tier), ("action_name", q.action)):
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        if q.min_clv is not None:
            clauses.append("clv >= ?")
            params.append(q.min_clv)
        if q.search:
            clauses.append("customer_id LIKE ? ESCAPE '\\'")
            escaped = q.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params.append(f"%{escaped}%")
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def _order(self, q: CustomerQuery) -> str:
        column = q.sort if q.sort in SORTABLE else "value_at_risk"
        return f" ORDER BY {column} {'DESC' if q.descending else 'ASC'}, customer_id ASC"

    def query(self, q: CustomerQuery) -> tuple[list[dict[str, Any]], int]:
        con = self._connect()
        if not self._has_scores(con):
            return [], 0
        where, params = self._where(q)
        total = con.execute(f"SELECT COUNT(*) FROM scores{where}", params).fetchone()[0]
        sql = f"SELECT {self._select(con)[1]} FROM scores{where}{self._order(q)} LIMIT ? OFFSET ?"
        rows = [_record(r) for r in con.execute(sql, [*params, q.limit, q.offset])]
        return rows, int(total)

    def iter_query(self, q: CustomerQuery) -> Iterator[dict[str, Any]]:
        """Every row matching the filters, in order, streamed (for CSV export); without inputs and history."""
        con = self._connect()
        if not self._has_scores(con):
            return
        where, params = self._where(q)
        sql = f"SELECT {self._select(con)[0]} FROM scores{where}{self._order(q)}"
        yield from (_record(r) for r in con.execute(sql, params))

    def columns(self, names: Sequence[str]) -> pd.DataFrame:
        """``names`` of every current score as stored (JSON columns as their text, nothing decoded), one row
        per customer: for jobs that read a few columns of the whole set (campaign planning). A column an
        earlier version's table lacks is null."""
        wanted = checked_columns(names)
        con = self._connect()
        if not self._has_scores(con):
            return pd.DataFrame(columns=wanted)
        present = {r[1] for r in con.execute("PRAGMA table_info(scores)")}
        found = [n for n in wanted if n in present]
        rows = con.execute(f"SELECT {', '.join(found)} FROM scores").fetchall()
        return pd.DataFrame([tuple(r) for r in rows], columns=found).reindex(columns=wanted)

    def summary(self) -> dict[str, Any]:
        con = self._connect()
        if not self._has_scores(con):
            return {"customers": 0, "value_at_risk": 0.0, "segments": [], "histogram": []}
        segments = [
            dict(r)
            for r in con.execute(
                "SELECT segment, COUNT(*) AS customers, SUM(value_at_risk) AS value_at_risk, SUM(clv) AS clv "
                "FROM scores GROUP BY segment ORDER BY value_at_risk DESC"
            )
        ]
        histogram = [
            dict(r)
            for r in con.execute(
                "SELECT MIN(CAST(churn_probability * 10 AS INTEGER), 9) AS bucket, COUNT(*) AS customers "
                "FROM scores GROUP BY bucket ORDER BY bucket"
            )
        ]
        actions = [
            dict(r)
            for r in con.execute(
                "SELECT action_name, COUNT(*) AS customers, SUM(expected_net_value) AS expected_net_value "
                "FROM scores GROUP BY action_name ORDER BY customers DESC"
            )
        ]
        total = con.execute("SELECT COUNT(*), COALESCE(SUM(value_at_risk), 0) FROM scores").fetchone()
        return {
            "customers": total[0],
            "value_at_risk": total[1],
            "segments": segments,
            "histogram": histogram,
            "actions": actions,
        }

    def meta(self) -> dict[str, Any]:
        con = self._connect()
        exists = con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        if not exists:
            return {}
        return {r["key"]: json.loads(r["value"]) for r in con.execute("SELECT key, value FROM meta")}

    # -- history -----------------------------------------------------------------------------------------
    def _has_history(self, con: sqlite3.Connection) -> bool:
        row = con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='runs'").fetchone()
        return row is not None

    def record_run(self, snapshot: pd.DataFrame, run: Mapping[str, Any], keep_runs: int) -> int:
        """Append one run (``snapshot``: :data:`HISTORY_COLUMNS`; ``run``: ``as_of``, ``scored_at``,
        ``model`` (a dict with ``version``), ``summary``) and drop all but the newest ``keep_runs`` runs, in
        one transaction. Returns the new run's id (increasing)."""
        con = self._connect()
        with self._transaction():
            for statement in _HISTORY_SCHEMA:
                con.execute(statement)
            cursor = con.execute(
                "INSERT INTO runs (as_of, scored_at, model_version, model, customers, summary) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                run_row(run, len(snapshot)),
            )
            run_id = int(cursor.lastrowid or 0)
            codes = _label_codes(con, [*snapshot["segment"].unique(), *snapshot["action_name"].unique()])
            rows = zip(
                [run_id] * len(snapshot),
                snapshot["customer_id"].astype(str).tolist(),
                _scaled(snapshot["churn_probability"], 1e6),
                _scaled(snapshot["expected_revenue"], 100.0),
                _scaled(snapshot["clv"], 100.0),
                _scaled(snapshot["value_at_risk"], 100.0),
                snapshot["segment"].map(codes).tolist(),
                snapshot["action_name"].map(codes).tolist(),
                strict=True,
            )
            con.executemany("INSERT INTO score_history VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            old = [
                r[0]
                for r in con.execute(
                    "SELECT run_id FROM runs ORDER BY run_id DESC LIMIT -1 OFFSET ?", (max(keep_runs, 1),)
                )
            ]
            for old_id in old:
                con.execute("DELETE FROM score_history WHERE run_id = ?", (old_id,))
                kept = ",".join("?" * len(KEPT_REPORTS))
                con.execute(
                    f"DELETE FROM run_reports WHERE run_id = ? AND kind NOT IN ({kept})",
                    (old_id, *KEPT_REPORTS),
                )
                con.execute("DELETE FROM runs WHERE run_id = ?", (old_id,))
        self._shrink_log(con)
        return run_id

    def runs(self) -> list[dict[str, Any]]:
        """Every kept run, oldest first: run_id, as_of, scored_at, model_version, model, customers, summary."""
        con = self._connect()
        if not self._has_history(con):
            return []
        out = []
        for row in con.execute("SELECT * FROM runs ORDER BY run_id"):
            record = dict(row)
            record["model"] = json.loads(record["model"] or "{}")
            record["summary"] = json.loads(record["summary"] or "{}")
            out.append(record)
        return out

    def snapshot(self, run_id: int) -> pd.DataFrame:
        """One run's rows (:data:`HISTORY_COLUMNS`), by customer id; empty if unknown."""
        con = self._connect()
        if not self._has_history(con):
            return _history_frame([], {})
        rows = con.execute(
            f"SELECT customer_id, {_STORED} FROM score_history WHERE run_id = ? ORDER BY customer_id",
            (run_id,),
        ).fetchall()
        return _history_frame(rows, _labels(con))

    def history(self, customer_id: str) -> list[dict[str, Any]]:
        """The customer's score at each kept run that scored them, oldest first (one key lookup per run)."""
        con = self._connect()
        if not self._has_history(con):
            return []
        rows = con.execute(
            f"SELECT r.run_id, r.as_of, r.model_version, h.customer_id, {_STORED} FROM runs r "
            "JOIN score_history h ON h.run_id = r.run_id AND h.customer_id = ? ORDER BY r.run_id",
            (customer_id,),
        ).fetchall()
        frame = _history_frame([r[3:] for r in rows], _labels(con)).drop(columns="customer_id")
        runs = pd.DataFrame([r[:3] for r in rows], columns=["run_id", "as_of", "model_version"], dtype=object)
        records = pd.concat([runs, frame], axis=1).astype(object)
        return [
            {k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
            for r in records.to_dict("records")
        ]

    def save_report(self, run_id: int, kind: str, report: Mapping[str, Any]) -> None:
        """Attach (or replace) a JSON report of one kind (``drift``, ``performance``, ``reference``) to a run."""
        con = self._connect()
        with self._transaction():
            for statement in _HISTORY_SCHEMA:
                con.execute(statement)
            con.execute(
                "INSERT OR REPLACE INTO run_reports VALUES (?, ?, ?)",
                (run_id, kind, json.dumps(report, default=str, allow_nan=False)),
            )

    def reports(self, kind: str) -> dict[int, dict[str, Any]]:
        """Every stored report of one kind, by run id."""
        con = self._connect()
        if not self._has_history(con):
            return {}
        rows = con.execute("SELECT run_id, body FROM run_reports WHERE kind = ? ORDER BY run_id", (kind,))
        return {int(r[0]): json.loads(r[1]) for r in rows}


def _scaled(values: pd.Series, scale: float) -> list[int | None]:
    """Numbers as integers in ``1/scale`` units (None for unknown): a varint is 2-4 bytes, a REAL 8."""
    scaled = (pd.to_numeric(values, errors="coerce") * scale).round()
    return [None if v != v else int(v) for v in scaled.tolist()]


def _label_codes(con: sqlite3.Connection, labels: Sequence[Any]) -> dict[Any, int]:
    """Each label's code in ``history_labels``, adding the new ones."""
    known = {label: code for code, label in con.execute("SELECT code, label FROM history_labels")}
    for label in labels:
        text = str(label)
        if text not in known:
            cursor = con.execute("INSERT INTO history_labels (label) VALUES (?)", (text,))
            known[text] = int(cursor.lastrowid or 0)
    return {label: known[str(label)] for label in labels}


def _labels(con: sqlite3.Connection) -> dict[int, str]:
    return {int(code): str(label) for code, label in con.execute("SELECT code, label FROM history_labels")}


_STORED = "churn_ppm, revenue_cents, clv_cents, risk_cents, segment, action"


def _history_frame(rows: Sequence[Sequence[Any]], labels: Mapping[int, str]) -> pd.DataFrame:
    """Stored history rows (customer_id then :data:`_STORED`) as :data:`HISTORY_COLUMNS`."""
    frame = pd.DataFrame(rows, columns=["customer_id", *_STORED.split(", ")])

    def scaled(column: str, scale: float) -> pd.Series:
        return pd.to_numeric(frame[column], errors="coerce").astype(float) / scale

    return pd.DataFrame(
        {
            "customer_id": frame["customer_id"].astype(str),
            "churn_probability": scaled("churn_ppm", 1e6),
            "expected_revenue": scaled("revenue_cents", 100.0),
            "clv": scaled("clv_cents", 100.0),
            "value_at_risk": scaled("risk_cents", 100.0),
            "segment": frame["segment"].map(labels).astype(object),
            "action_name": frame["action"].map(labels).astype(object),
        }
    )


def _rows(scores: pd.DataFrame, shared_model: str | None) -> Iterator[tuple[Any, ...]]:
    """Table rows from scores; JSON columns may hold text (kept as is) or values (encoded here)."""
    n = len(scores)

    def column(name: str) -> list[Any]:
        return scores[name].tolist() if name in scores.columns else ["{}"] * n

    def figure(name: str) -> list[Any]:  # a figure the scores lack is unknown: NULL, never text
        return scores[name].tolist() if name in scores.columns else [None] * n

    action = column("action")
    if "action_name" in scores.columns and "expected_net_value" in scores.columns:
        action_name, expected = column("action_name"), column("expected_net_value")
    else:  # actions given as dicts
        action_name = [a["name"] for a in action]
        expected = [a["expected_net_value"] for a in action]
    model = [None if m == shared_model else m for m in _texts(column("model"))]
    values = {
        c: _json_or_null(column(c)) if c in STORE_JSON_COLUMNS else figure(c) for c in FIGURE_COLUMNS
    } | {
        "as_of": scores["as_of"].astype(str).tolist(),
        "action_name": action_name,
        "expected_net_value": expected,
        "reasons": _texts(column("stored_reasons" if "stored_reasons" in scores.columns else "reasons")),
        "action": _texts(action),
        "model": model,
        **{c: _texts(column(c)) for c in INPUT_COLUMNS},
    }
    return zip(*(values[c] for c in STORE_COLUMNS), strict=True)


def run_row(run: Mapping[str, Any], customers: int) -> tuple[Any, ...]:
    """The ``runs`` table's values for one scoring run (as_of, scored_at, model_version, model, customers,
    summary): one definition for the SQLite and PostgreSQL stores."""
    model = dict(run.get("model") or {})
    return (
        str(run["as_of"]),
        run.get("scored_at"),
        None if model.get("version") is None else str(model["version"]),
        json.dumps(model, default=str),
        customers,
        json.dumps(run.get("summary") or {}, default=str),
    )


def _json_or_null(values: list[Any]) -> list[str | None]:
    """A JSON figure column (``clv_detail``): text kept, values encoded, missing stays NULL."""
    return [
        None if v is None else v if isinstance(v, str) else json.dumps(v, default=_json_default)
        for v in values
    ]


def _texts(values: list[Any]) -> list[str]:
    return [v if isinstance(v, str) else json.dumps(v, default=_json_default) for v in values]


def _json_default(value: object) -> object:
    if isinstance(value, float):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()  # type: ignore[union-attr]
    if hasattr(value, "item"):
        return value.item()  # type: ignore[union-attr]
    return str(value)


def checked_columns(names: Sequence[str]) -> list[str]:
    """``names`` as a list, each a column of the store (:data:`~serving.encoding.STORE_COLUMNS`): the
    stores put them into SQL."""
    unknown = [n for n in names if n not in STORE_COLUMNS]
    if unknown:
        raise ValueError(f"not columns of the serving store: {unknown}")
    return list(names)


def _record(row: sqlite3.Row) -> dict[str, Any]:
    record = dict(row)
    names = record.pop("feature_names", None)
    for column in STORE_JSON_COLUMNS:
        record[column] = json.loads(record[column]) if record.get(column) else None
    if record.get("features") is not None:
        record["features"] = expand_inputs(record["features"], json.loads(names) if names else None)
    if record.get("reasons") is not None:
        record["reasons"] = expand_reasons(record["reasons"])
    if record.get("history") is not None:
        record["history"] = expand_history(record["history"])
    return record
