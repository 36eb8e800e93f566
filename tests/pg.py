"""The PostgreSQL server of the project's machines and CI (127.0.0.1:5432, trust auth), for server-store tests.

Each test session gets fresh databases named ``churnguard_test_<random>``, dropped at the end. Where no
server answers, the tests that need one are skipped with the reason in the summary (``-ra``) and a
warning, never silently; ``CHURNGUARD_TEST_PG`` points them at another server.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from serving.pg_store import PostgresScoreStore

ADMIN_URL = os.environ.get("CHURNGUARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin_connect():  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)


def require_postgres() -> None:
    """Skip (loudly) when the PostgreSQL server is unreachable."""
    import psycopg

    try:
        with _admin_connect():
            pass
    except psycopg.OperationalError as exc:
        message = (
            f"PostgreSQL unreachable at {ADMIN_URL.rsplit('@', 1)[-1]}: server-store tests skipped ({exc})"
        )
        warnings.warn(message, stacklevel=2)
        pytest.skip(message)


def database_url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


@contextlib.contextmanager
def fresh_database(prefix: str = "churnguard_test") -> Iterator[str]:
    """A new empty database; yields its URL and drops it (closing any connection left) afterwards."""
    require_postgres()
    name = f"{prefix}_{secrets.token_hex(4)}"
    with _admin_connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(name)
    finally:
        with _admin_connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def opened_store(url: str) -> Iterator[PostgresScoreStore]:
    """A server store on ``url``, its pools open for the block and closed after it (as a replica holds one)."""
    from serving.pg_store import PostgresScoreStore

    store = PostgresScoreStore(url).open()
    try:
        yield store
    finally:
        store.close()
