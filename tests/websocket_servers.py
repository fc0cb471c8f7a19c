"""Real servers for the WebSocket tests: uvicorn, hypercorn or daphne in a subprocess.

Each serves ``tests/websocket_server_app.py`` on a free port of 127.0.0.1;
its output goes to a file the tests read.  What happened inside the server
is read back from its ``/stats`` view.
"""

from __future__ import annotations

import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import websockets

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
SERVERS = ["uvicorn", "hypercorn", "daphne"]
#: Upper bound for waiting on the server; reached only if something hangs.
PATIENCE = 30.0
APP = "tests.websocket_server_app:app"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def command(name: str, port: int) -> list[str]:
    if name == "uvicorn":
        return ["-m", "uvicorn", APP, "--host", HOST, "--port", str(port), "--log-level", "warning"]
    if name == "hypercorn":
        # A short grace period: open connections are cancelled 1 s after SIGTERM.
        return ["-m", "hypercorn", APP, "--bind", f"{HOST}:{port}", "--graceful-timeout", "1"]
    return ["-m", "daphne", "-b", HOST, "-p", str(port), APP]


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
        deadline = time.monotonic() + PATIENCE
        while True:
            stats = self.stats()
            if condition(stats):
                return stats
            if time.monotonic() > deadline:
                raise AssertionError(f"condition never held; stats: {stats}")
            time.sleep(0.02)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, text: str) -> str:
        deadline = time.monotonic() + PATIENCE
        while text not in (log := self.log_text()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never logged:\n{log}")
            time.sleep(0.02)
        return log

    def rss_kib(self) -> int:
        """Resident memory of the server process, in KiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS line")

    def stop(self) -> int:
        """SIGTERM the server and wait for it to exit; return its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=PATIENCE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"{self.name} did not stop:\n{self.log_text()}") from None


@contextmanager
def running(name: str, directory: Path) -> Iterator[WsServer]:
    """Start server ``name`` for the duration of the block; it is always stopped."""
    port = free_port()
    log = directory / "server.log"
    env = {"WS_TESTS_DIR": str(directory), "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, *command(name, port)],
            cwd=REPO,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    server = WsServer(name, port, process, directory, log)
    try:
        deadline = time.monotonic() + PATIENCE
        while True:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start:\n{log.read_text()}") from None
                time.sleep(0.05)
        yield server
    finally:
        server.stop()
