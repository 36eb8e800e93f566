"""Locks shared by every process and host that use one tracking store.

With the embedded SQLite store, training serialises schema creation and registry writes with a file lock
in the churnguard home, which only processes on one host share. With MLflow on PostgreSQL (``mlflow
server --backend-store-uri postgresql://…``, or the URI itself) the same serialisation needs a lock every
host sees: :func:`advisory_lock`, a PostgreSQL session advisory lock in the tracking database, released
when the block ends or the connection drops (a crashed trainer never leaves it held).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from features.errors import ConfigError

_SCHEMES = ("postgresql", "postgres")


def is_postgres_uri(uri: str) -> bool:
    """True for ``postgresql://…`` and SQLAlchemy forms such as ``postgresql+psycopg2://…``."""
    return uri.split("://", 1)[0].split("+", 1)[0] in _SCHEMES


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for a lock name."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big", signed=True)


def _libpq_uri(uri: str) -> str:
    scheme, rest = uri.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


@contextmanager
def advisory_lock(
    tracking_uri: str, name: str = "churnguard.registry", timeout: float = 600.0
) -> Iterator[None]:
    """Hold a PostgreSQL advisory lock named ``name`` in the tracking database for the block.

    Waits at most ``timeout`` seconds for another holder; raises :class:`ConfigError` when the tracking
    URI is not PostgreSQL or the database cannot be reached."""
    if not is_postgres_uri(tracking_uri):
        raise ConfigError(
            f"advisory locks need a PostgreSQL tracking store, not {tracking_uri.split(':', 1)[0]}"
        )
    import psycopg

    try:
        conn = psycopg.connect(_libpq_uri(tracking_uri), autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise ConfigError(f"the tracking database is unreachable for the registry lock: {exc}") from None
    with conn:
        conn.execute(f"SET lock_timeout = {int(timeout * 1000)}")
        try:
            conn.execute("SELECT pg_advisory_lock(%s)", [lock_key(name)])
        except psycopg.errors.LockNotAvailable:
            raise ConfigError(
                f"another process held the registry lock '{name}' for more than {timeout:.0f}s: "
                "is a training run stuck? Retry when it has finished"
            ) from None
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", [lock_key(name)])
