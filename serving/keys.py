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


class KeyStore:
    """Key hashes in a JSON file (mode 600). Reloaded when the file changes, so new keys work at once."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._records: list[KeyRecord] = []
        self._mtime: float | None = None

    def _load(self) -> list[KeyRecord]:
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

    def records(self) -> list[KeyRecord]:
        return list(self._load())

    def create(self, name: str) -> tuple[KeyRecord, str]:
        """A new key; the plain token is returned here and never stored."""
        key_id = secrets.token_hex(4)
        token = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        record = KeyRecord(key_id, name, _hash(token), datetime.now(UTC).replace(microsecond=0).isoformat())
        self._write([*self._load(), record])
        return record, token

    def revoke(self, key_id: str) -> bool:
        records = self._load()
        kept = [r for r in records if r.key_id != key_id]
        if len(kept) == len(records):
            return False
        self._write(kept)
        return True

    def verify(self, token: str | None) -> KeyRecord | None:
        """The key's record if the token is valid. Every stored hash is compared, in constant time."""
        if not token:
            return None
        digest = _hash(token)
        match = None
        for record in self._load():
            if hmac.compare_digest(digest, record.sha256):
                match = record
        return match

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
