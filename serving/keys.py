"""API keys: created once and shown once, stored only as SHA-256 hashes, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from features.errors import ConfigError

PREFIX = "cg_"


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    name: str
    sha256: str
    created_at: str


def same_secret(a: str, b: str) -> bool:
    """Constant-time equality of two strings of any content (client input may be non-ASCII)."""
    return hmac.compare_digest(a.encode("utf-8", "backslashreplace"), b.encode("utf-8", "backslashreplace"))


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "backslashreplace")).hexdigest()  # any text: no 500


class KeyRecords(Protocol):
    """Where key records are kept: a JSON file (:class:`KeyFile`) or the PostgreSQL store
    (:class:`serving.pg_auth.PostgresKeys`), chosen by the store URL."""

    def load(self) -> list[KeyRecord]:
        """The records as last seen (may be a moment old: it is called on every request)."""
        ...

    def fresh(self) -> list[KeyRecord]:
        """The records as they are now (called when a token matched none of :meth:`load`'s)."""
        ...

    def add(self, record: KeyRecord) -> None: ...
    def remove(self, key_id: str) -> bool: ...


class KeyFile:
    """Key hashes in a JSON file (mode 600). Reloaded when the file changes, so new keys work at once."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._records: list[KeyRecord] = []
        self._mtime: float | None = None

    def load(self) -> list[KeyRecord]:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._records, self._mtime = [], None
            return self._records
        if mtime != self._mtime:
            try:
                raw = json.loads(self.path.read_text(encoding="utf-8"))
                self._records = [KeyRecord(**r) for r in raw.get("keys", [])]
            except (ValueError, TypeError) as exc:
                raise ConfigError(
                    f"{self.path}: the API key file is corrupt ({exc.__class__.__name__}); "
                    "restore it or delete it and create new keys"
                ) from exc
            self._mtime = mtime
        return self._records

    fresh = load  # the file's modification time is checked on every load

    def add(self, record: KeyRecord) -> None:
        self._write([*self.load(), record])

    def remove(self, key_id: str) -> bool:
        records = self.load()
        kept = [r for r in records if r.key_id != key_id]
        if len(kept) == len(records):
            return False
        self._write(kept)
        return True

    def _write(self, records: list[KeyRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".keys.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump({"keys": [asdict(r) for r in records]}, stream, indent=2)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        self._mtime = None


class KeyStore:
    """API keys: created once and shown once, kept as hashes in a file (``KeyStore(path)``) or in the
    PostgreSQL store (``KeyStore(backend=PostgresKeys(...))``: every replica accepts the same keys)."""

    def __init__(self, path: Path | None = None, *, backend: KeyRecords | None = None) -> None:
        if backend is None:
            if path is None:
                raise ValueError("KeyStore needs a key file path or a backend")
            backend = KeyFile(path)
        self.backend = backend

    def records(self) -> list[KeyRecord]:
        return list(self.backend.load())

    def create(self, name: str) -> tuple[KeyRecord, str]:
        """A new key; the plain token is returned here and never stored."""
        key_id = secrets.token_hex(4)
        token = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        record = KeyRecord(key_id, name, _hash(token), datetime.now(UTC).replace(microsecond=0).isoformat())
        self.backend.add(record)
        return record, token

    def revoke(self, key_id: str) -> bool:
        return self.backend.remove(key_id)

    def find(self, key_id: str) -> KeyRecord | None:
        """The record of a key id (read again once when it is not among the records in memory)."""
        seen = self.backend.load()
        match = next((r for r in seen if r.key_id == key_id), None)
        if match is None and (now := self.backend.fresh()) is not seen:
            match = next((r for r in now if r.key_id == key_id), None)
        return match

    def verify(self, token: str | None) -> KeyRecord | None:
        """The key's record if the token is valid. Every stored hash is compared, in constant time; a
        token matching none is checked once more against the records as they are now."""
        if not token:
            return None
        digest = _hash(token)
        seen = self.backend.load()
        match = _match(digest, seen)
        if match is None:
            now = self.backend.fresh()
            if now is not seen:
                match = _match(digest, now)
        return match


def _match(digest: str, records: list[KeyRecord]) -> KeyRecord | None:
    match = None
    for record in records:
        if hmac.compare_digest(digest, record.sha256):
            match = record
    return match
