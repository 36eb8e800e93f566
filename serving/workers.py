"""``churnguard serve --workers N``: uvicorn's worker supervisor, each worker listening on a socket of its own.

uvicorn's own ``--workers`` binds one socket and every worker accepts from it; Linux then hands most
connections of a few long-lived clients to one worker (measured: 28 of wrk's 32 keep-alive connections on
one of two workers, so a second worker raised GET throughput by nothing and the p99 at concurrency 32 rose
from 24 to 198 ms). With ``SO_REUSEPORT`` each worker has its own listening socket on the same address and
the kernel spreads new connections across them by a hash of the client's address and port.

Everything else is uvicorn's supervisor as it is (health pings, restarts of dead workers, SIGHUP, SIGTTIN /
SIGTTOU). The parent binds each worker's socket just before starting it and closes its own copy once the
worker holds it, so a dead worker's socket leaves the group with it and no connection waits on a socket
nobody accepts from. Where ``SO_REUSEPORT`` does not exist (Windows), uvicorn's shared socket is used.
"""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from features.errors import ConfigError

logger = logging.getLogger("uvicorn.error")


def spread_over_sockets() -> bool:
    """Whether this platform can give each worker a socket of its own."""
    return hasattr(socket, "SO_REUSEPORT") and sys.platform != "win32"


def free_address(host: str, port: int) -> int:
    """The port to serve on, refused if another program already listens there: a probe binds it without
    ``SO_REUSEPORT`` (which another ``SO_REUSEPORT`` server of the same user would otherwise silently share
    traffic with). Port 0 becomes the free port the system picks."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        return int(probe.getsockname()[1])


def _listening_socket(config: uvicorn.Config) -> socket.socket:
    family = socket.AF_INET6 if config.host and ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((config.host, config.port))
    except OSError as exc:
        sock.close()
        logger.error(exc)
        sys.exit(STARTUP_FAILURE)
    sock.set_inheritable(True)
    return sock


class SpreadWorkers(Multiprocess):
    """uvicorn's :class:`~uvicorn.supervisors.Multiprocess` where every worker it starts, at start-up or
    as a replacement, gets a new socket of its own (the base class reads ``self.sockets`` for each)."""

    def __init__(self, config: uvicorn.Config) -> None:
        self._handed: list[socket.socket] = []
        super().__init__(config, sockets=[])

    @property  # type: ignore[override]
    def sockets(self) -> list[socket.socket]:
        sock = _listening_socket(self.config)
        self._handed.append(sock)
        return [sock]

    @sockets.setter
    def sockets(self, value: list[socket.socket]) -> None:  # the base class stores its shared list: none
        pass

    def _close_handed(self) -> None:
        """The started workers hold their sockets now (inherited at spawn): the parent's copies go."""
        for sock in self._handed:
            sock.close()
        self._handed.clear()

    def init_processes(self) -> None:
        super().init_processes()
        self._close_handed()

    def keep_subprocess_alive(self) -> None:
        super().keep_subprocess_alive()
        self._close_handed()

    def restart_all(self) -> None:
        super().restart_all()
        self._close_handed()

    def handle_ttin(self) -> None:
        super().handle_ttin()
        self._close_handed()


def run_workers(app: str, **options: Any) -> None:
    """Serve ``app`` (an import string) with ``options["workers"]`` processes, connections spread over
    them (see the module docstring); one worker, or a platform without ``SO_REUSEPORT``: ``uvicorn.run``."""
    if options.get("workers", 1) <= 1 or not spread_over_sockets():
        uvicorn.run(app, **options)
        return
    host, port = options.get("host", "127.0.0.1"), options.get("port", 8000)
    try:
        options["port"] = free_address(host, port)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}): another server may be using it; stop "
            "it or choose another --port"
        ) from exc
    config = uvicorn.Config(app, **options)
    logger.info(
        "Uvicorn running on http://%s:%d with %d workers, each on a socket of its own (Press CTRL+C to quit)",
        config.host,
        config.port,
        config.workers,
    )
    SpreadWorkers(config).run()
