"""The PostgreSQL serving store, for several API processes or hosts sharing one set of scores and keys.

Selected by ``CHURNGUARD_STORE_URL=postgresql://…``; it implements :class:`serving.store.ScoreStore` and
returns exactly what :class:`~serving.store.SqliteScoreStore` returns for the same scores (the tests hold
both to it). Tables live in the ``churnguard`` schema, created by :mod:`serving.migrations`, so the same
database may also hold MLflow's tracking tables.

- **Atomic refresh.** Each refresh writes a new *score set* (``COPY`` into ``scores`` under a new
  ``set_id``) and moves the one-row pointer ``current_set`` to it in the same transaction. Every read is
  one statement joined to that pointer (or a read-only REPEATABLE READ transaction when a page needs its
  rows and their count), so it sees the old set or the new one, never a mix; readers never wait for the
  writer (MVCC), unlike a ``TRUNCATE``. The old set is deleted after the commit.
- **Indexed dashboard queries.** ``(set_id, column)`` indexes serve the filters and sort orders; a trigram
  index serves the id search where ``pg_trgm`` is available.
- **Pools.** psycopg 3 with :mod:`psycopg_pool`: a small synchronous pool for the dashboard, the CLI, keys
  and sessions, and an asynchronous one (:meth:`PostgresScoreStore.aopen`) for the API's hot reads, which
  then never leave the event loop. A database that cannot be reached within the pool timeout raises
  :class:`StoreUnavailableError` (the API answers 503 and ``/ready`` says degraded); reads retry once on a
  connection that broke while idle (after the database came back).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any, cast

import pandas as pd
import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from features.errors import ConfigError
from serving.encoding import INPUT_COLUMNS, STORE_COLUMNS, model_json
from serving.migrations import SCHEMA, migrate
from serving.pg_history import PostgresHistory
from serving.store import SORTABLE, CustomerQuery, _record, _rows, checked_columns

log = logging.getLogger("churnguard.store")

_COLUMNS = tuple(STORE_COLUMNS)
_LIST = ", ".join(
    "COALESCE(s.model, ss.shared_model) AS model" if c == "model" else f"s.{c}"
    for c in _COLUMNS
    if c not in INPUT_COLUMNS
)
_ALL = f"{_LIST}, {', '.join(f's.{c}' for c in INPUT_COLUMNS)}, ss.feature_names"
_CURRENT = (
    f"FROM {SCHEMA}.current_set c JOIN {SCHEMA}.score_sets ss ON ss.id = c.set_id "
    f"JOIN {SCHEMA}.scores s ON s.set_id = c.set_id"
)
# Rows by id: the current set's id first (an InitPlan), so the planner always probes the primary key
# (set_id, customer_id); joined through the pointer, a store not yet analysed was read through the trigram
# index instead (12 ms a read against 0.1 ms). Still one statement: one snapshot.
_BY_IDS = (
    f"FROM {SCHEMA}.scores s JOIN {SCHEMA}.score_sets ss ON ss.id = s.set_id "
    f"WHERE s.set_id = (SELECT set_id FROM {SCHEMA}.current_set) AND s.customer_id = ANY(%s)"
)
_META = f"SELECT ss.meta FROM {SCHEMA}.current_set c JOIN {SCHEMA}.score_sets ss ON ss.id = c.set_id"
_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
_UNREACHABLE = (psycopg.OperationalError, PoolTimeout)


class StoreUnavailableError(ConfigError):
    """The PostgreSQL serving store did not answer (down, unreachable, or every connection busy).

    A :class:`ConfigError`, so the API answers 503 and keeps the cause (host and port) in its log."""


def is_postgres_url(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("postgresql://", "postgres://"))


def _unavailable(exc: BaseException) -> StoreUnavailableError:
    # psycopg's message names host and port, never the password; the API keeps it in the server log.
    reason = " ".join(str(exc).split()) or exc.__class__.__name__
    return StoreUnavailableError(
        f"the PostgreSQL serving store is unreachable ({reason}): check that the server runs and that "
        "CHURNGUARD_STORE_URL names the right host, port, database and user"
    )


def _clean(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """NaN figures are stored as NULL, as SQLite stores them, so both stores read back alike."""
    return tuple(None if isinstance(v, float) and math.isnan(v) else v for v in row)


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    return _record(cast(Any, row))


class PostgresScoreStore(PostgresHistory):
    """Scores in PostgreSQL (see the module docstring); the same contract as the SQLite store, score
    history included (:class:`~serving.pg_history.PostgresHistory`).

    ``open()`` starts the synchronous pool and applies pending migrations; ``aopen()`` (inside an event
    loop) starts the asynchronous pool used by :meth:`aget_many` and :meth:`ameta`."""

    def __init__(
        self, url: str, *, max_size: int = 4, async_max_size: int = 16, timeout: float = 3.0
    ) -> None:
        self.url = url
        self.max_size = max_size
        self.async_max_size = async_max_size
        self.timeout = timeout
        self._pool: ConnectionPool | None = None
        self._apool: AsyncConnectionPool | None = None

    # -- pools --------------------------------------------------------------------------------------
    def _kwargs(self) -> dict[str, Any]:
        return {"autocommit": True, "connect_timeout": max(1, int(self.timeout))}

    def open(self) -> PostgresScoreStore:
        """Start the synchronous pool and bring the schema up to date (idempotent)."""
        if self._pool is None:
            # One plain connection first: an unreachable server fails here with libpq's own reason,
            # not after the pool's retries.
            try:
                with psycopg.connect(self.url, **self._kwargs()) as conn:
                    applied = migrate(conn)
            except psycopg.OperationalError as exc:
                raise _unavailable(exc) from None
            if applied:
                log.info("serving store schema migrated to version %s", applied[-1])
            pool = ConnectionPool(
                self.url,
                min_size=1,
                max_size=self.max_size,
                timeout=self.timeout,
                kwargs=self._kwargs(),
                open=False,
                name="churnguard-store",
            )
            pool.open(wait=False)
            self._pool = pool
        return self

    async def aopen(self) -> None:
        """Start the asynchronous pool (call from the event loop that will use it)."""
        if self._apool is None:
            self._apool = AsyncConnectionPool(
                self.url,
                min_size=2,
                max_size=self.async_max_size,
                timeout=self.timeout,
                kwargs=self._kwargs(),
                open=False,
                name="churnguard-store-async",
            )
            await self._apool.open(wait=False)

    async def aclose(self) -> None:
        if self._apool is not None:
            await self._apool.close()
            self._apool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection (autocommit); unreachable database -> :class:`StoreUnavailableError`."""
        pool = self.open()._pool
        assert pool is not None
        try:
            with pool.connection() as conn:
                yield conn
        except _UNREACHABLE as exc:
            raise _unavailable(exc) from None

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """One read statement, retried once if the connection had broken while idle."""
        pool = self.open()._pool
        assert pool is not None
        for attempt in (1, 2):
            try:
                with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                    return cur.execute(sql, params).fetchall()
            except _UNREACHABLE as exc:
                if attempt == 2 or isinstance(exc, PoolTimeout):  # no connection came: do not wait twice
                    raise _unavailable(exc) from None
        raise AssertionError("unreachable")

    # -- writes -------------------------------------------------------------------------------------
    def replace_all(self, scores: pd.DataFrame, meta: dict[str, Any]) -> None:
        """A new score set, made current in the same transaction; older sets are deleted afterwards."""
        rows = _rows(scores, model_json(meta["model"]) if "model" in meta else None)
        shared = json.dumps(meta["model"]) if "model" in meta else None
        names = json.dumps(meta["feature_names"]) if "feature_names" in meta else None
        columns = ", ".join(("set_id", *_COLUMNS))
        with self.connection() as conn:
            with conn.transaction():
                # Serialise refreshes: the pointer row is locked until this one commits.
                conn.execute(f"SELECT set_id FROM {SCHEMA}.current_set FOR UPDATE")
                row = conn.execute(
                    f"INSERT INTO {SCHEMA}.score_sets (meta, shared_model, feature_names) "
                    "VALUES (%s, %s, %s) RETURNING id",
                    [json.dumps(meta), shared, names],
                ).fetchone()
                assert row is not None
                set_id = int(row[0])
                with conn.cursor().copy(f"COPY {SCHEMA}.scores ({columns}) FROM STDIN") as copy:
                    for values in rows:
                        copy.write_row((set_id, *_clean(values)))
                conn.execute(f"UPDATE {SCHEMA}.current_set SET set_id = %s", [set_id])
            # Readers that started before the commit still see the old rows (MVCC): deleting is safe.
            conn.execute(
                f"DELETE FROM {SCHEMA}.scores WHERE set_id <> (SELECT set_id FROM {SCHEMA}.current_set)"
            )
            conn.execute(
                f"DELETE FROM {SCHEMA}.score_sets WHERE id <> (SELECT set_id FROM {SCHEMA}.current_set)"
            )
            # Fresh statistics for the planner (the dashboard's filters): autovacuum would get there, later.
            conn.execute(f"ANALYZE {SCHEMA}.scores, {SCHEMA}.score_sets, {SCHEMA}.current_set")

    # -- reads --------------------------------------------------------------------------------------
    def get(self, customer_id: str, with_inputs: bool = True) -> dict[str, Any] | None:
        return self.get_many([customer_id], with_inputs).get(customer_id)

    @staticmethod
    def _by_ids(with_inputs: bool) -> str:
        return f"SELECT {_ALL if with_inputs else _LIST} {_BY_IDS}"

    def get_many(self, customer_ids: Sequence[str], with_inputs: bool = True) -> dict[str, dict[str, Any]]:
        """Scores by id, all from the current set (one statement)."""
        if not customer_ids:
            return {}
        rows = self._read(self._by_ids(with_inputs), [list(customer_ids)])
        return {r["customer_id"]: r for r in map(_decode, rows)}

    async def aget_many(
        self, customer_ids: Sequence[str], with_inputs: bool = False
    ) -> dict[str, dict[str, Any]]:
        """:meth:`get_many` on the asynchronous pool: the API's hot read, on the event loop."""
        if not customer_ids:
            return {}
        rows = await self._aread(self._by_ids(with_inputs), [list(customer_ids)])
        return {r["customer_id"]: r for r in map(_decode, rows)}

    async def ameta(self) -> dict[str, Any]:
        rows = await self._aread(_META)
        return json.loads(rows[0]["meta"]) if rows else {}

    async def _aread(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        if self._apool is None:
            await self.aopen()
        assert self._apool is not None
        for attempt in (1, 2):
            try:
                async with self._apool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                    await cur.execute(sql, params)
                    return await cur.fetchall()
            except _UNREACHABLE as exc:
                if attempt == 2 or isinstance(exc, PoolTimeout):
                    raise _unavailable(exc) from None
        raise AssertionError("unreachable")

    @staticmethod
    def _where(q: CustomerQuery) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("segment", q.segment), ("risk_tier", q.risk_tier), ("action_name", q.action)):
            if value:
                clauses.append(f"s.{column} = %s")
                params.append(value)
        if q.min_clv is not None:
            clauses.append("s.clv >= %s")
            params.append(q.min_clv)
        if q.search:
            # ILIKE: SQLite's LIKE ignores ASCII case, and the trigram index serves ILIKE as well.
            clauses.append("s.customer_id ILIKE %s ESCAPE '\\'")
            escaped = q.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params.append(f"%{escaped}%")
        return "".join(f" AND {c}" for c in clauses), params

    @staticmethod
    def _order(q: CustomerQuery) -> str:
        column = q.sort if q.sort in SORTABLE else "value_at_risk"
        direction = "DESC NULLS LAST" if q.descending else "ASC NULLS FIRST"  # SQLite: NULL is smallest
        return f" ORDER BY s.{column} {direction}, s.customer_id ASC"

    def query(self, q: CustomerQuery) -> tuple[list[dict[str, Any]], int]:
        """One page and the number of matching rows, both from the same snapshot."""
        where, params = self._where(q)
        with self.connection() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(_SNAPSHOT)
            total = cur.execute(f"SELECT COUNT(*) AS n {_CURRENT} WHERE true{where}", params).fetchone()
            sql = f"SELECT {_ALL} {_CURRENT} WHERE true{where}{self._order(q)} LIMIT %s OFFSET %s"
            rows = [_decode(r) for r in cur.execute(sql, [*params, q.limit, q.offset])]
        return rows, int(total["n"]) if total else 0

    def iter_query(self, q: CustomerQuery) -> Iterator[dict[str, Any]]:
        """Every matching row in order, streamed by a server-side cursor (CSV export); no inputs."""
        where, params = self._where(q)
        sql = f"SELECT {_LIST} {_CURRENT} WHERE true{where}{self._order(q)}"
        with (
            self.connection() as conn,
            conn.transaction(),
            conn.cursor(name="churnguard_export", row_factory=dict_row) as cur,
        ):
            cur.itersize = 2000
            cur.execute(sql, params)
            yield from map(_decode, cur)

    def columns(self, names: Sequence[str]) -> pd.DataFrame:
        """``names`` of every current score as stored (JSON columns as their text, nothing decoded), one row
        per customer (:meth:`serving.store.SqliteScoreStore.columns`)."""
        wanted = checked_columns(names)
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(f"SELECT {', '.join(f's.{n}' for n in wanted)} {_CURRENT}")
            rows = cur.fetchall()
        return pd.DataFrame(rows, columns=wanted)

    def summary(self) -> dict[str, Any]:
        """Totals, segments, the probability histogram and actions, from one snapshot."""
        with self.connection() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(_SNAPSHOT)
            if not cur.execute(_META).fetchall():
                return {"customers": 0, "value_at_risk": 0.0, "segments": [], "histogram": []}
            segments = cur.execute(
                "SELECT s.segment, COUNT(*) AS customers, SUM(s.value_at_risk) AS value_at_risk, "
                f"SUM(s.clv) AS clv {_CURRENT} GROUP BY s.segment ORDER BY value_at_risk DESC"
            ).fetchall()
            histogram = cur.execute(
                "SELECT LEAST(CAST(TRUNC(s.churn_probability * 10) AS integer), 9) AS bucket, "
                f"COUNT(*) AS customers {_CURRENT} GROUP BY bucket ORDER BY bucket"
            ).fetchall()
            actions = cur.execute(
                "SELECT s.action_name, COUNT(*) AS customers, "
                f"SUM(s.expected_net_value) AS expected_net_value {_CURRENT} "
                "GROUP BY s.action_name ORDER BY customers DESC"
            ).fetchall()
            total = cur.execute(
                f"SELECT COUNT(*) AS n, COALESCE(SUM(s.value_at_risk), 0) AS var {_CURRENT}"
            ).fetchone()
        assert total is not None
        return {
            "customers": int(total["n"]),
            "value_at_risk": float(total["var"]),
            "segments": [{**r, "customers": int(r["customers"])} for r in segments],
            "histogram": [{**r, "customers": int(r["customers"])} for r in histogram],
            "actions": [{**r, "customers": int(r["customers"])} for r in actions],
        }

    def meta(self) -> dict[str, Any]:
        rows = self._read(_META)
        return json.loads(rows[0]["meta"]) if rows else {}
