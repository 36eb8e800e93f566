"""Dashboard sessions: signed, expiring tokens that name an API key without containing it.

A session token is ``key_id:expires:nonce:signature`` where the signature is HMAC-SHA256 over the rest
with a secret kept in ``<home>/session_secret`` (created once, mode 600). The key itself is never stored.
A token is valid while its signature matches, it has not expired, its key id still exists in the
KeyStore (revoking a key ends its sessions) and it was not signed out: signing out records the session's
nonce in :class:`EndedSessions`, a file next to the API keys that every worker process reads, so a copied
cookie is dead after sign-out, across processes and restarts. With a PostgreSQL serving store the secret
and the sign-outs live in the database instead (:class:`SharedSessions`), for replicas on several hosts. The CSRF token of a session is derived from
the session's nonce with the same secret, so it needs no server-side state.

The signature is HMAC-SHA256 (compared in constant time) rather than ``itsdangerous``: the format names the
key id in clear (the sign-in tests and the logs rely on it) and needs a per-session nonce for the CSRF
token and the sign-out list, which ``TimestampSigner`` would wrap without removing.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from serving.keys import KeyRecord, KeyStore, same_secret

COOKIE = "churnguard_session"
SIGNIN_COOKIE = "churnguard_signin"
CSRF_HEADER = "x-churnguard-csrf"
SECRET_FILE = "session_secret"
ENDED_FILE = "ended_sessions"
_VERSION = "v1"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


same = same_secret  # constant-time equality of two strings of any content


@dataclass(frozen=True)
class Session:
    """A verified session: the key it was opened with, when it ends, and its CSRF token."""

    key: KeyRecord
    expires: int
    csrf: str
    nonce: str


class EndedSessions:
    """Sessions signed out before they expired, as lines ``<expires> <sha256 of the nonce>`` in one file.

    Appends hold an exclusive lock (several worker processes may sign out at once) and the file is read
    again whenever it changes, so every process sees a sign-out at its next request. Lines of sessions
    that have expired anyway are dropped when the file is rewritten, which happens once most lines are
    such: the file holds at most the sessions signed out within one session lifetime. Mode 0600.
    """

    _COMPACT_AFTER = 200

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._seen: tuple[int, int] | None = None
        self._ended: dict[str, int] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _digest(nonce: str) -> str:
        return hashlib.sha256(nonce.encode("utf-8", "backslashreplace")).hexdigest()

    def _read(self) -> dict[str, int]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._seen, self._ended = None, {}
            return self._ended
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen != self._seen:
            ended: dict[str, int] = {}
            for line in self.path.read_text(encoding="ascii", errors="replace").splitlines():
                expires, _, digest = line.partition(" ")
                if expires.isdigit() and len(digest) == 64:
                    ended[digest] = int(expires)
            self._seen, self._ended = seen, ended
        return self._ended

    def is_ended(self, nonce: str) -> bool:
        with self._lock:
            return self._digest(nonce) in self._read()

    def end(self, nonce: str, expires: int, now: float | None = None) -> None:
        """Record a session as signed out (until ``expires``, when it would have ended anyway)."""
        now = time.time() if now is None else now
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, self._locked():
            handle = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(handle, "a", encoding="ascii") as stream:
                stream.write(f"{expires} {self._digest(nonce)}\n")
            ended = self._read()
            live = {d: e for d, e in ended.items() if e > now}
            if len(ended) > self._COMPACT_AFTER and len(live) * 2 < len(ended):
                self._rewrite(live)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock shared by every process (on a lock file: rewriting replaces the list file)."""
        handle = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            os.close(handle)  # closing releases the lock

    def _rewrite(self, live: dict[str, int]) -> None:
        handle, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            os.fchmod(handle, 0o600)
            with os.fdopen(handle, "w", encoding="ascii") as stream:
                stream.writelines(f"{e} {d}\n" for d, e in live.items())
            os.replace(tmp, self.path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        self._seen = None


class SharedSessions(Protocol):
    """Session state kept in a server store (``serving.pg_auth.PostgresSessions``) instead of files under
    the home, so a session opened on one replica is valid, and signed out, on every replica."""

    def secret(self) -> bytes:
        """The signing secret, created once for every replica."""
        ...

    def is_ended(self, nonce: str) -> bool: ...
    def end(self, nonce: str, expires: int) -> None: ...


class SessionSigner:
    """Issues and verifies session tokens with the secret in ``<home>/session_secret``, or with the
    secret and sign-out list of ``shared`` when the serving store is a server (several replicas)."""

    def __init__(
        self, home: Path, ended_file: Path | None = None, *, shared: SharedSessions | None = None
    ) -> None:
        self.path = Path(home) / SECRET_FILE
        self.shared = shared
        self.ended: EndedSessions | SharedSessions = shared or EndedSessions(
            ended_file or Path(home) / ENDED_FILE
        )
        self._secret: bytes | None = None
        self._lock = threading.Lock()

    # -- the secret -----------------------------------------------------------------------------------
    def secret(self) -> bytes:
        """The signing secret, created with 0600 permissions on first use (safe against a racing process)."""
        if self._secret is None:
            with self._lock:
                if self._secret is None:
                    self._secret = self.shared.secret() if self.shared else self._load_or_create()
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
        record = keys.find(key_id)
        if record is None or self.ended.is_ended(nonce):
            return None
        return Session(record, int(expires_text), self._mac("csrf", nonce), nonce)

    def end(self, session: Session) -> None:
        """Sign a session out for good: its token no longer verifies, in any process, even if replayed."""
        self.ended.end(session.nonce, session.expires)

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
