"""A real Redis for the broadcast tests: Debian's ``redis-server`` on a free port of :data:`HOST`.

It keeps nothing on disk (``--save ""``, no append-only file) and runs in a
directory of its own; given a certificate, it speaks TLS only
(``rediss://``).  A test can stop it, restart it on the same port, or freeze
it (``SIGSTOP``: connections stay open, nothing answers), and it is always
stopped, by its PID, at the end.
"""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.servers import HOST, PATIENCE, free_port, stop

REDIS_SERVER = Path("/usr/bin/redis-server")


def answers_ping(port: int, tls: bool = False) -> bool:
    """Does a Redis on ``port`` of :data:`HOST` answer ``PING`` now (over TLS if ``tls``)?"""
    try:
        with socket.create_connection((HOST, port), timeout=1) as plain:
            if not tls:
                return _ping(plain)
            # Readiness only: the tests check the certificate through the client.
            unchecked = ssl.create_default_context()
            unchecked.check_hostname = False
            unchecked.verify_mode = ssl.CERT_NONE
            with unchecked.wrap_socket(plain) as connection:
                return _ping(connection)
    except OSError:
        return False


def _ping(connection: socket.socket) -> bool:
    connection.sendall(b"PING\r\n")
    return connection.recv(64).startswith(b"+PONG")


class RedisServer:
    """One ``redis-server`` process, started by :func:`running_redis`.

    ``tls`` is its certificate (chain) and key files: it then listens for
    TLS only, without asking clients for certificates.
    """

    def __init__(self, directory: Path, tls: tuple[Path, Path] | None = None):
        if not REDIS_SERVER.exists():
            # As for Chromium: .ci/run installs it and fails if it cannot,
            # so CI never skips; a bare machine runs the rest of the suite.
            pytest.skip(
                f"{REDIS_SERVER} is absent (on Debian: apt-get install redis-server); the Redis "
                "broadcast backend was not tested"
            )
        self.directory = directory
        self.log = directory / "redis-server.log"
        self.port = free_port()
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its ``redis://`` (or ``rediss://``) URL, database 0."""
        return f"{'rediss' if self.tls else 'redis'}://{HOST}:{self.port}/0"

    def start(self) -> None:
        """Start it (again, on the same port) and wait until it answers ``PING``."""
        argv = [str(REDIS_SERVER), "--bind", HOST, "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.directory)]
        if self.tls is None:
            argv += ["--port", str(self.port)]
        else:
            certificate, key = self.tls
            argv += ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            argv += ["--tls-cert-file", str(certificate), "--tls-key-file", str(key)]
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + PATIENCE
        while not answers_ping(self.port, tls=self.tls is not None):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{argv} did not start:\n{self.log.read_text()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop it by its PID (a frozen one is thawed first); harmless if it is not running."""
        if self.process is not None:
            self.resume()
            stop(self.process, self.log)
            self.process = None

    def freeze(self) -> None:
        """``SIGSTOP`` it: its connections stay open and nothing answers on them."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """``SIGCONT`` it after :meth:`freeze` (harmless otherwise)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


@contextmanager
def running_redis(directory: Path, tls: tuple[Path, Path] | None = None) -> Iterator[RedisServer]:
    """A started :class:`RedisServer` for the block, stopped after it whatever happens.

    Skips the test, saying how to install it, when ``/usr/bin/redis-server``
    is absent.
    """
    server = RedisServer(directory, tls)
    try:
        server.start()
        yield server
    finally:
        server.stop()
