"""Which store the API, the dashboard and the CLI use, chosen by one setting.

``CHURNGUARD_STORE_URL`` unset: the embedded SQLite store (``<home>/scores.db``), keys in
``<home>/api_keys.json``, sessions in files under the home: nothing to start, one host.
``CHURNGUARD_STORE_URL=postgresql://…``: scores, keys and dashboard sessions in PostgreSQL, shared by every
worker process and replica.

The API's hot reads go through :class:`AsyncReads`, so they never wait behind the thread pool: natively
async on PostgreSQL (:class:`~serving.pg_store.PostgresScoreStore` on an async pool); on SQLite a
primary-key read of a local file is done on the event loop itself (about 0.1 ms, less than a hop to a
worker thread), and a larger batch in a worker thread of its own limiter, so it neither blocks the loop
nor queues behind the shared pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from anyio import to_thread

from serving.keys import KeyStore
from serving.settings import ServingSettings
from serving.store import ScoreStore, SqliteScoreStore

if TYPE_CHECKING:
    from serving.dashboard.session import SharedSessions

INLINE_IDS = 20  # SQLite batches up to this many ids are read on the event loop (well under a millisecond)


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


class PostgresReads:
    def __init__(self, store: Any) -> None:
        self.store = store

    async def get_many(
        self, customer_ids: Sequence[str], with_inputs: bool = False
    ) -> dict[str, dict[str, Any]]:
        return await self.store.aget_many(customer_ids, with_inputs)  # type: ignore[no-any-return]

    async def meta(self) -> dict[str, Any]:
        return await self.store.ameta()  # type: ignore[no-any-return]


@dataclass
class Backends:
    """What one process holds for the store in force (closed with :meth:`aclose` / :meth:`close`)."""

    store: ScoreStore
    reads: AsyncReads
    keys: KeyStore
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


def open_backends(settings: ServingSettings) -> Backends:
    """The store, async reads, keys and session state the settings select (PostgreSQL: migrated first)."""
    url = settings.server_store_url
    if url is None:
        sqlite = SqliteScoreStore(settings.store_file)
        return Backends(sqlite, SqliteReads(sqlite), KeyStore(settings.keys_file))
    from serving.pg_auth import PostgresKeys, PostgresSessions
    from serving.pg_store import PostgresScoreStore

    store = PostgresScoreStore(url, async_max_size=settings.store_pool_size).open()
    return Backends(
        store, PostgresReads(store), KeyStore(backend=PostgresKeys(store)), PostgresSessions(store)
    )


def open_store(settings: ServingSettings) -> ScoreStore:
    """Just the score store (the CLI's ``score`` and demo hints)."""
    return open_backends(settings).store


def open_keys(settings: ServingSettings) -> KeyStore:
    """Just the key store (the CLI's ``keys`` commands)."""
    return open_backends(settings).keys
