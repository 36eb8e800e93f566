"""Versioned schema of the PostgreSQL serving store: numbered SQL files, each applied once, in order.

Why not Alembic (installed with MLflow): the store talks to PostgreSQL through psycopg and a pool, with no
SQLAlchemy engine to hand Alembic; the schema is a few tables best read as plain SQL by whoever runs the
database; and MLflow's own Alembic history lives in ``public.alembic_version`` of a tracking database that
may be the same one, which a second Alembic history would have to be kept away from. So: files named
``NNNN_what.sql`` in this folder, a table ``churnguard.schema_version`` listing the versions applied, and
:func:`migrate`, which applies the missing ones in one transaction under an advisory lock, so replicas
starting together never race (the second waits, then finds nothing to do).

A database migrated by a newer churnguard than this one is refused with a message, never altered.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from features.errors import ConfigError

if TYPE_CHECKING:
    import psycopg

SCHEMA = "churnguard"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# One advisory lock key for "migrating churnguard's schema" (a stable 63-bit number from its name).
LOCK_KEY = int.from_bytes(hashlib.sha256(b"churnguard.migrations").digest()[:8], "big") >> 1


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """Every migration shipped with this version, in order (gaps and duplicates are refused)."""
    found = []
    for entry in resources.files(__package__).iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise ConfigError(f"serving/migrations: versions must run 1, 2, 3... without gaps: {found}")
    return found


def applied_versions(conn: psycopg.Connection) -> list[int]:
    """Versions recorded in the database (empty when churnguard's schema does not exist yet)."""
    exists = conn.execute("SELECT to_regclass(%s)", [f"{SCHEMA}.schema_version"]).fetchone()
    if exists is None or exists[0] is None:
        return []
    return [int(r[0]) for r in conn.execute(f"SELECT version FROM {SCHEMA}.schema_version ORDER BY version")]


def migrate(conn: psycopg.Connection) -> list[int]:
    """Bring the schema up to date; returns the versions applied now (empty when it already was).

    Runs in one transaction: a failing migration leaves the database as it was."""
    known = migrations()
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_version (version integer PRIMARY KEY, "
            "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = set(applied_versions(conn))
        newest = len(known)
        if done and max(done) > newest:
            raise ConfigError(
                f"the serving store's schema is at version {max(done)}, newer than this churnguard knows "
                f"({newest}): upgrade churnguard on this host, or point CHURNGUARD_STORE_URL elsewhere"
            )
        applied = []
        for migration in known:
            if migration.version in done:
                continue
            conn.execute(migration.sql.encode("utf-8"))  # no parameters: several statements in one go
            conn.execute(
                f"INSERT INTO {SCHEMA}.schema_version (version, name) VALUES (%s, %s)",
                [migration.version, migration.name],
            )
            applied.append(migration.version)
    return applied
