"""Dashboard sessions: signed, expiring tokens that name an API key without containing it.

A session token is ``key_id:expires:nonce:signature`` where the signature is HMAC-SHA256 over the rest
with a secret kept in ``<home>/session_secret`` (created once, mode 600). The key itself is never stored.
A token is valid while its signature matches, it has not expired and its key id still exists in the
KeyStore (revoking a key ends its sessions). The CSRF token of a session is derived from the session's
nonce with the same secret, so it needs no server-side state either.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from serving.keys import KeyRecord, KeyStore

COOKIE = "churnguard_session"
SIGNIN_COOKIE = "churnguard_signin"
CSRF_HEADER = "x-churnguard-csrf"
SECRET_FILE = "session_secret"
_VERSION = "v1"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def same(a: str, b: str) -> bool:
    """Constant-time equality of two strings of any content (client input may be non-ASCII)."""
    return hmac.compare_digest(a.encode("utf-8", "backslashreplace"), b.encode("utf-8", "backslashreplace"))


@dataclass(frozen=True)
class Session:
    """A verified session: the key it was opened with, when it ends, and its CSRF token."""

    key: KeyRecord
    expires: int
    csrf: str


class SessionSigner:
    """Issues and verifies session tokens with the secret in ``<home>/session_secret``."""

    def __init__(self, home: Path) -> None:
        self.path = Path(home) / SECRET_FILE
        self._secret: bytes | None = None
        self._lock = threading.Lock()

    # -- the secret -----------------------------------------------------------------------------------
    def secret(self) -> bytes:
        """The signing secret, created with 0600 permissions on first use (safe against a racing process)."""
        if self._secret is None:
            with self._lock:
                if self._secret is None:
                    self._secret = self._load_or_create()
        return self._secret

    def _load_or_create(self) -> bytes:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".session_secret.")
            try:
                os.fchmod(handle, 0o600)
                os.write(handle, secrets.token_hex(32).encode("ascii"))
                os.close(handle)
                with contextlib.suppress(FileExistsError):  # atomic, exclusive: a concurrent creator wins
                    os.link(tmp, self.path)
            finally:
                Path(tmp).unlink(missing_ok=True)
        text = self.path.read_text(encoding="ascii").strip()
        if len(text) < 32:
            raise ValueError(f"{self.path} is too short to be a session secret: delete it to make a new one")
        return text.encode("ascii")

    def _mac(self, purpose: str, message: str) -> str:
        return _b64(hmac.new(self.secret(), f"{purpose}:{message}".encode(), hashlib.sha256).digest())

    # -- session tokens -------------------------------------------------------------------------------
    def issue(self, key: KeyRecord, lifetime_seconds: float, now: float | None = None) -> str:
        """A new session token for ``key`` that expires ``lifetime_seconds`` from now."""
        expires = int((now if now is not None else time.time()) + lifetime_seconds)
        body = f"{key.key_id}:{expires}:{secrets.token_urlsafe(16)}"
        return f"{body}:{self._mac(_VERSION, body)}"

    def verify(self, token: str | None, keys: KeyStore, now: float | None = None) -> Session | None:
        """The session behind a token, or None when it is malformed, forged, expired or its key is revoked."""
        if not token or len(token) > 300:
            return None
        parts = token.split(":")
        if len(parts) != 4:
            return None
        key_id, expires_text, nonce, signature = parts
        body = f"{key_id}:{expires_text}:{nonce}"
        if not same(signature, self._mac(_VERSION, body)):
            return None
        if not expires_text.isdigit() or int(expires_text) <= (now if now is not None else time.time()):
            return None
        record = next((r for r in keys.records() if r.key_id == key_id), None)
        if record is None:
            return None
        return Session(record, int(expires_text), self._mac("csrf", nonce))

    # -- the sign-in form's token (double submit: a random cookie and its MAC in the form) ----------
    @staticmethod
    def new_signin_nonce() -> str:
        return secrets.token_urlsafe(16)

    def signin_token(self, nonce: str) -> str:
        return self._mac("signin", nonce)

    def check_signin_token(self, nonce: str | None, token: str | None) -> bool:
        if not nonce or not token or len(nonce) > 100:
            return False
        return same(token, self.signin_token(nonce))


def valid_csrf(session: Session | None, token: str | None) -> bool:
    """True when ``token`` is the CSRF token of ``session`` (constant-time comparison)."""
    return session is not None and bool(token) and same(session.csrf, str(token))
