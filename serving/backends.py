"""Which store the API, the dashboard and the CLI use, chosen by one setting.

``CHURNGUARD_STORE_URL`` unset: the embedded SQLite store (``<home>/scores.db``), keys in
``<home>/api_keys.json``, sessions in files under the home: nothing to start, one host.
``CHURNGUARD_STORE_URL=postgresql://…``: scores, keys, dashboard sessions and campaigns in PostgreSQL,
shared by every worker process and replica. Campaigns (:mod:`serving.campaign_store`) always live in the
store the scores live in.

The API's hot reads go through :class:`AsyncReads`, so they never wait behind the thread pool: natively
async on PostgreSQL (:class:`~serving.pg_store.PostgresScoreStore` on an async pool); on SQLite a
primary-key read of a local file is done on the event loop itself (about 0.1 ms, less than a hop to a
worker thread), and a larger batch in a worker thread of its own limiter, so it neither blocks the loop
nor queues behind the shared pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from anyio import to_thread

from serving.campaign_store import CampaignStore, SqliteCampaigns
from serving.keys import KeyStore
from serving.settings import ServingSettings
from serving.store import ScoreStore, SqliteScoreStore

if TYPE_CHECKING:
    from serving.dashboard.session import SharedSessions

INLINE_IDS = 20  # SQLite batches up to this many ids are read on the event loop (well under a millisecond)
COALESCED_IDS = 20  # PostgreSQL reads of up to this many ids share a statement with concurrent ones
MAX_COALESCED = 500  # ids in one shared statement at most


class AsyncReads(Protocol):
    """The API's reads of the serving store, awaitable."""

    async def get_many(
        self, customer_ids: Sequence[str], with_inputs: bool = False
    ) -> dict[str, dict[str, Any]]: ...
    async def meta(self) -> dict[str, Any]: ...


class SqliteReads:
    """SQLite reads for async routes: small ones inline, big ones in a worker thread of their own limiter."""

    def __init__(self, store: SqliteScoreStore, threads: int = 16) -> None:
        self.store = store
        self._threads = threads
        self._limiter: anyio.CapacityLimiter | None = None

    def _limit(self) -> anyio.CapacityLimiter:
        if self._limiter is None:  # created in the event loop that uses it
            self._limiter = anyio.CapacityLimiter(self._threads)
        return self._limiter

    async def get_many(
        self, customer_ids: Sequence[str], with_inputs: bool = False
    ) -> dict[str, dict[str, Any]]:
        if len(customer_ids) <= INLINE_IDS:
            return self.store.get_many(customer_ids, with_inputs)
        return await to_thread.run_sync(self.store.get_many, customer_ids, with_inputs, limiter=self._limit())

    async def meta(self) -> dict[str, Any]:
        return self.store.meta()


@dataclass
class _Batch:
    """The ids requests asked for during one turn of the event loop, and the one read that answers them."""

    ids: dict[str, None]
    done: asyncio.Future[dict[str, dict[str, Any]]]


class PostgresReads:
    """PostgreSQL reads for async routes, coalesced: the ids that requests ask for during one turn of the
    event loop go to the server as one statement.

    A read costs about 0.2 ms of this process's CPU and a round trip to the server however few rows it
    returns, and some 0.03 ms more per row (measured on the async pool), so under concurrency one statement
    for many requests leaves the cores to the requests. Each request still gets its rows from one statement,
    so one response never mixes score sets; a request alone (or asking for more than ``COALESCED_IDS`` ids,
    or for the model inputs) is read as before. A failed read fails every request of its batch the same way."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._batch: _Batch | None = None
        self._reading: set[asyncio.Task[None]] = set()

    async def get_many(
        self, customer_ids: Sequence[str], with_inputs: bool = False
    ) -> dict[str, dict[str, Any]]:
        if with_inputs or len(customer_ids) > COALESCED_IDS:
            return await self.store.aget_many(customer_ids, with_inputs)  # type: ignore[no-any-return]
        batch = self._batch
        if batch is None or len(batch.ids) >= MAX_COALESCED:
            loop = asyncio.get_running_loop()
            batch = self._batch = _Batch({}, loop.create_future())
            batch.done.add_done_callback(_retrieve)
            loop.call_soon(self._send, batch)  # after the requests already waiting to run this turn
        batch.ids.update(dict.fromkeys(customer_ids))
        found = await asyncio.shield(batch.done)  # one request cancelled does not cancel the others' read
        return {c: found[c] for c in customer_ids if c in found}

    def _send(self, batch: _Batch) -> None:
        if self._batch is batch:
            self._batch = None
        task = asyncio.get_running_loop().create_task(self._read(batch))
        self._reading.add(task)
        task.add_done_callback(self._reading.discard)

    async def _read(self, batch: _Batch) -> None:
        try:
            found = await self.store.aget_many(list(batch.ids), False)
        except asyncio.CancelledError:  # the server is shutting down
            batch.done.cancel()
            raise
        except Exception as exc:
            batch.done.set_exception(exc)
        else:
            batch.done.set_result(found)

    async def meta(self) -> dict[str, Any]:
        return await self.store.ameta()  # type: ignore[no-any-return]


@dataclass
class Backends:
    """What one process holds for the store in force (closed with :meth:`aclose` / :meth:`close`)."""

    store: ScoreStore
    reads: AsyncReads
    keys: KeyStore
    campaigns: CampaignStore
    sessions: SharedSessions | None = None

    async def aopen(self) -> None:
        """Start what needs the event loop (the PostgreSQL store's async pool)."""
        aopen = getattr(self.store, "aopen", None)
        if aopen is not None:
            await aopen()

    async def aclose(self) -> None:
        aclose = getattr(self.store, "aclose", None)
        if aclose is not None:
            await aclose()
        self.close()

    def close(self) -> None:
        close = getattr(self.store, "close", None)
        if close is not None:
            close()


def _retrieve(done: asyncio.Future[Any]) -> None:
    """Mark a shared read's failure as seen (every request that waited for it has it already)."""
    if not done.cancelled():
        done.exception()


def open_backends(settings: ServingSettings) -> Backends:
    """The store, async reads, keys, campaigns and session state the settings select (PostgreSQL:
    migrated first)."""
    url = settings.server_store_url
    if url is None:
        sqlite = SqliteScoreStore(settings.store_file)
        return Backends(sqlite, SqliteReads(sqlite), KeyStore(settings.keys_file), SqliteCampaigns(sqlite))
    from serving.pg_auth import PostgresKeys, PostgresSessions
    from serving.pg_campaigns import PostgresCampaigns
    from serving.pg_store import PostgresScoreStore

    store = PostgresScoreStore(url, async_max_size=settings.store_pool_size).open()
    return Backends(
        store,
        PostgresReads(store),
        KeyStore(backend=PostgresKeys(store)),
        PostgresCampaigns(store),
        PostgresSessions(store),
    )


def open_store(settings: ServingSettings) -> ScoreStore:
    """Just the score store (the CLI's ``score`` and demo hints)."""
    return open_backends(settings).store


def open_keys(settings: ServingSettings) -> KeyStore:
    """Just the key store (the CLI's ``keys`` commands)."""
    return open_backends(settings).keys
