"""Real servers for the WebSocket tests: uvicorn, hypercorn or daphne in a subprocess.

Each serves ``tests/support/websocket_server_app.py`` on a free port of 127.0.0.1;
its output goes to a file the tests read.  What happened inside the server
is read back from its ``/stats`` view.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.support import REPO_ROOT
from tests.support.servers import (
    HOST,
    PATIENCE,
    accepts_connections,
    free_port,
    serving,
    stop,
    wait_until,
)

SERVERS = ["uvicorn", "hypercorn", "daphne"]
APP = "tests.support.websocket_server_app:app"


def command(name: str, port: int, app: str = APP) -> list[str]:
    if name == "uvicorn":
        return ["-m", "uvicorn", app, "--host", HOST, "--port", str(port), "--log-level", "warning"]
    if name == "hypercorn":
        # A short grace period: open connections are cancelled 1 s after SIGTERM.
        return ["-m", "hypercorn", app, "--bind", f"{HOST}:{port}", "--graceful-timeout", "1"]
    return ["-m", "daphne", "-b", HOST, "-p", str(port), app]


def raise_fd_limit(wanted: int) -> None:
    """Raise this process's open-file limit (servers started later inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@dataclass
class WsServer:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    directory: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def ws_url(self, path: str) -> str:
        return f"ws://{HOST}:{self.port}{path}"

    def connect(self, path: str, **kwargs: Any) -> Any:
        return websockets.connect(
            self.ws_url(path), open_timeout=PATIENCE, close_timeout=PATIENCE, **kwargs
        )

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = httpx.get(self.url + "/stats", timeout=PATIENCE).json()
        return stats

    def wait_for(self, condition: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Poll ``/stats`` until ``condition(stats)`` holds."""
        return wait_until(self.stats, "a condition on the stats", condition)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, text: str) -> str:
        return wait_until(self.log_text, f"{text!r} to be logged", lambda log: text in log)

    def rss_kib(self) -> int:
        """Resident memory of the server process, in KiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS line")

    def stop(self) -> int:
        """SIGTERM the server and wait for it to exit; return its exit status."""
        return stop(self.process, self.log)


@contextmanager
def running(name: str, directory: Path, app: str = APP) -> Iterator[WsServer]:
    """Start server ``name`` serving ``app`` for the duration of the block; it is always stopped."""
    port = free_port()
    log = directory / "server.log"
    env = {"WS_TESTS_DIR": str(directory), "PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}
    argv = [sys.executable, *command(name, port, app)]
    with serving(argv, log, accepts_connections(port), env=env, cwd=REPO_ROOT) as process:
        yield WsServer(name, port, process, directory, log)


def each_server(app: str = APP) -> Any:
    """A fixture ``server``: each of :data:`SERVERS` in turn serving ``app``, once per module.

    A module assigns it to a name of its own (``server = each_server()``), so
    every module gets servers it may stop.
    """

    @pytest.fixture(scope="module", params=SERVERS, name="server")
    def started_server(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[WsServer]:
        with running(request.param, tmp_path_factory.mktemp(request.param), app) as started:
            yield started

    return started_server
