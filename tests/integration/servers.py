"""Real server processes for the integration and load suites.

``churnguard serve`` (uvicorn) and ``mlflow server`` run as child processes bound to 127.0.0.1 on free ports,
each in its own process group so it can be stopped whole (mlflow starts its own workers). Readiness is
waited for with bounded polling; a process that dies while starting fails the test with its log.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

import httpx

VENV_BIN = Path(sys.executable).parent
CHURNGUARD = VENV_BIN / "churnguard"
MLFLOW = VENV_BIN / "mlflow"
LOOPBACK = "127.0.0.1"
T = TypeVar("T")


def free_port() -> int:
    """A loopback port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def child_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process: this one without CHURNGUARD_*/MLFLOW_* settings, the venv's
    bin first on PATH (mlflow starts its own sub-processes), and ``home`` as CHURNGUARD_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURNGUARD_", "MLFLOW_"))}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["CHURNGUARD_HOME"] = str(home)
    env["CHURNGUARD_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env["NO_COLOR"] = "1"
    env.update(extra or {})
    return env


def bearer(key: str) -> dict[str, str]:
    """The Authorization header of an API key."""
    return {"Authorization": f"Bearer {key}"}


def wait_until(check: Callable[[], T | None], *, timeout: float, interval: float = 0.2, what: str) -> T:
    """Call ``check`` until it returns something other than None (or False), at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def run_cli(
    args: list[str], env: Mapping[str, str], *, timeout: float = 600, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``churnguard ARGS`` to completion and capture its output."""
    return subprocess.run(
        [str(CHURNGUARD), *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class ServerProcess:
    """A started server: its process (leader of its own group), port and log file."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    _log_handle: IO[bytes]

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        if not self._log_handle.closed:
            self._log_handle.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole process group (a crash, not a shutdown) and reap it."""
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15) -> None:
        """Graceful stop (SIGTERM to the group), escalating to SIGKILL after ``timeout`` seconds."""
        if self.alive():
            self._signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        self.kill()  # also catches workers the leader left behind
        self._log_handle.close()


def _spawn(name: str, argv: list[str], env: Mapping[str, str], port: int, log_path: Path) -> ServerProcess:
    handle = log_path.open("ab")
    proc = subprocess.Popen(
        argv, env=dict(env), stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )
    return ServerProcess(name, proc, port, log_path, handle)


def wait_for_http(server: ServerProcess, path: str, *, timeout: float) -> None:
    """Poll ``path`` until it answers 200; fail at once (with the log) if the process exits."""

    def answered() -> bool:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{server.log()[-4000:]}")
        try:
            return httpx.get(f"{server.base_url}{path}", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(answered, timeout=timeout, interval=0.3, what=f"{server.name} {path}")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\n{server.log()[-4000:]}") from None


def start_api(
    home: Path,
    log_path: Path,
    extra_env: Mapping[str, str] | None = None,
    *,
    timeout: float = 120,
    args: Sequence[str] = (),
) -> ServerProcess:
    """``churnguard serve [args]`` on a free loopback port with ``home`` as CHURNGUARD_HOME, ready on /health."""
    port = free_port()
    argv = [str(CHURNGUARD), "serve", "--host", LOOPBACK, "--port", str(port), *args]
    server = _spawn("churnguard serve", argv, child_env(home, extra_env), port, log_path)
    try:
        wait_for_http(server, "/health", timeout=timeout)
    except BaseException:
        server.stop()
        raise
    return server


def start_mlflow(
    backend_db: Path, artifact_root: Path, log_path: Path, *, port: int | None = None, timeout: float = 180
) -> ServerProcess:
    """``mlflow server`` with a SQLite backend store on a loopback port, ready on /health."""
    port = port or free_port()
    artifact_root.mkdir(parents=True, exist_ok=True)
    argv = [
        str(MLFLOW),
        "server",
        "--backend-store-uri",
        f"sqlite:///{backend_db}",
        "--default-artifact-root",
        str(artifact_root),
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    server = _spawn("mlflow server", argv, child_env(backend_db.parent), port, log_path)
    try:
        wait_for_http(server, "/health", timeout=timeout)
    except BaseException:
        server.stop()
        raise
    return server


def copy_home(source: Path, target: Path) -> Path:
    """A private copy of a churnguard home whose MLflow store points at the copy's own artifacts.

    The SQLite store records absolute artifact locations; they are rewritten so nothing done with the copy
    (new runs, new versions) reaches the original.
    """
    shutil.copytree(source, target)
    old, new = str(source.resolve()), str(target.resolve())
    db = target / "mlflow.db"
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            columns = [
                r[1]
                for r in con.execute(f"PRAGMA table_info('{table}')")
                if any(t in str(r[2]).upper() for t in ("CHAR", "TEXT"))
            ]
            for column in columns:
                con.execute(
                    f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) WHERE instr("{column}", ?) > 0',
                    (old, new, old),
                )
    for model_file in target.rglob("MLmodel"):  # logged models name their own location too
        model_file.write_text(model_file.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    return target


class Servers:
    """Starts servers for one test and stops every one of them at teardown."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[ServerProcess] = []

    def _log(self, name: str) -> Path:
        return self.folder / f"{name}-{len(self.started)}.log"

    def api(self, home: Path, args: Sequence[str] = (), **env: str) -> ServerProcess:
        """``churnguard serve [args]`` on ``home`` with extra CHURNGUARD_* settings, ready to answer."""
        server = start_api(home, self._log("api"), env, args=args)
        self.started.append(server)
        return server

    def mlflow(self, backend_db: Path, artifact_root: Path, port: int | None = None) -> ServerProcess:
        """``mlflow server`` on a SQLite store, ready to answer."""
        server = start_mlflow(backend_db, artifact_root, self._log("mlflow"), port=port)
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        for server in reversed(self.started):
            with contextlib.suppress(Exception):
                server.stop()
