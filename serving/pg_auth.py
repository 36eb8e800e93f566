"""API keys and dashboard sessions in the PostgreSQL serving store, so every replica accepts the same keys,
the same session cookies and the same sign-outs.

Keys are checked on every request, so :class:`PostgresKeys` serves them from memory: the list is read
again in the background once it is older than ``ttl`` (one second by default), and at once when a token
matches none of the keys in memory (a key just created on another replica: it works at once everywhere).
A key revoked on one replica is refused by the others within ``ttl``; while the database is unreachable the keys last
read keep working (the reads behind them fail with 503 anyway).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time

from serving.keys import KeyRecord
from serving.migrations import SCHEMA
from serving.pg_store import PostgresScoreStore, StoreUnavailableError

log = logging.getLogger("churnguard.keys")
_SESSION_SECRET = "dashboard_session"
MISS_INTERVAL = 0.2  # seconds: an unknown token re-reads the keys at most this often


class PostgresKeys:
    """The :class:`serving.keys.KeyRecords` of the PostgreSQL store (table ``churnguard.api_keys``)."""

    def __init__(self, store: PostgresScoreStore, ttl: float = 1.0) -> None:
        self.store = store
        self.ttl = ttl
        self._records: list[KeyRecord] | None = None
        self._loaded = 0.0
        self._refreshing = False
        self._lock = threading.Lock()

    def _fetch(self) -> list[KeyRecord]:
        with self.store.connection() as conn:
            rows = conn.execute(
                f"SELECT key_id, name, sha256, created_at FROM {SCHEMA}.api_keys ORDER BY created_at, key_id"
            ).fetchall()
        return [KeyRecord(*row) for row in rows]

    def _set(self, records: list[KeyRecord]) -> list[KeyRecord]:
        with self._lock:
            self._records, self._loaded = records, time.monotonic()
        return records

    def fresh(self) -> list[KeyRecord]:
        """The keys as they are now (a token matched none in memory): read again unless the copy in
        memory is younger than ``MISS_INTERVAL`` (so invalid tokens cost at most a few reads a second)."""
        if self._records is not None and time.monotonic() - self._loaded < min(self.ttl, MISS_INTERVAL):
            return self._records
        try:
            return self._set(self._fetch())
        except StoreUnavailableError:
            if self._records is None:
                raise
            log.warning("API keys could not be read again; using the ones read %.0fs ago", self._age())
            return self._records

    def load(self) -> list[KeyRecord]:
        """The keys in memory; a copy older than ``ttl`` is refreshed in the background."""
        if self._records is None:
            return self.fresh()
        if time.monotonic() - self._loaded >= self.ttl:
            with self._lock:
                start, self._refreshing = not self._refreshing, True
            if start:
                threading.Thread(target=self._refresh, name="churnguard-keys", daemon=True).start()
        return self._records

    def _refresh(self) -> None:
        try:
            self._set(self._fetch())
        except StoreUnavailableError as exc:
            with self._lock:
                self._loaded = time.monotonic()  # try again after ttl, not on every request
            log.warning("API keys could not be read again: %s", exc)
        finally:
            with self._lock:
                self._refreshing = False

    def _age(self) -> float:
        return time.monotonic() - self._loaded

    def add(self, record: KeyRecord) -> None:
        with self.store.connection() as conn:
            conn.execute(
                f"INSERT INTO {SCHEMA}.api_keys (key_id, name, sha256, created_at) VALUES (%s, %s, %s, %s)",
                [record.key_id, record.name, record.sha256, record.created_at],
            )
        self._set(self._fetch())

    def remove(self, key_id: str) -> bool:
        with self.store.connection() as conn:
            gone = conn.execute(f"DELETE FROM {SCHEMA}.api_keys WHERE key_id = %s", [key_id]).rowcount
        self._set(self._fetch())
        return gone > 0


class PostgresSessions:
    """The dashboard's :class:`serving.dashboard.session.SharedSessions` in PostgreSQL: one signing secret
    for every replica, and signed-out sessions (hashes of their nonces) checked on each request."""

    def __init__(self, store: PostgresScoreStore) -> None:
        self.store = store

    def secret(self) -> bytes:
        """The secret, created by whichever replica asks first (the others read the same row)."""
        with self.store.connection() as conn:
            conn.execute(
                f"INSERT INTO {SCHEMA}.secrets (name, value) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
                [_SESSION_SECRET, secrets.token_hex(32)],
            )
            row = conn.execute(
                f"SELECT value FROM {SCHEMA}.secrets WHERE name = %s", [_SESSION_SECRET]
            ).fetchone()
        assert row is not None
        return str(row[0]).encode("ascii")

    @staticmethod
    def _digest(nonce: str) -> str:
        return hashlib.sha256(nonce.encode("utf-8", "backslashreplace")).hexdigest()

    def is_ended(self, nonce: str) -> bool:
        with self.store.connection() as conn:
            row = conn.execute(
                f"SELECT 1 FROM {SCHEMA}.ended_sessions WHERE digest = %s", [self._digest(nonce)]
            ).fetchone()
        return row is not None

    def end(self, nonce: str, expires: int) -> None:
        """Record a sign-out until the session would have expired anyway; drop entries past that."""
        with self.store.connection() as conn, conn.transaction():
            conn.execute(
                f"INSERT INTO {SCHEMA}.ended_sessions (digest, expires) VALUES (%s, %s) "
                "ON CONFLICT (digest) DO NOTHING",
                [self._digest(nonce), int(expires)],
            )
            conn.execute(f"DELETE FROM {SCHEMA}.ended_sessions WHERE expires < %s", [int(time.time())])
