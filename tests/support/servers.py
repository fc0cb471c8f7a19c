"""Starting and stopping the real servers the tests talk to.

Every server listens on a free port of :data:`HOST`, the only address tests
ever target.  A server in a subprocess writes its output to a log file the
tests read, and whatever happens in the block it serves, it is stopped.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from waitress.server import create_server

T = TypeVar("T")

HOST = "127.0.0.1"
#: Upper bound for waiting on a server; reached only if something hangs.
PATIENCE = 30.0


def free_port() -> int:
    """A port of :data:`HOST` that nothing listened on a moment ago."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(fetch: Callable[[], T], what: str, condition: Callable[[T], bool] = bool) -> T:
    """Call ``fetch`` until ``condition`` holds for what it returns; return that.

    After :data:`PATIENCE` seconds, :class:`AssertionError` names ``what`` and
    shows the last value fetched.
    """
    deadline = time.monotonic() + PATIENCE
    while not condition(value := fetch()):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}; last seen:\n{value}")
        time.sleep(0.02)
    return value


def accepts_connections(port: int) -> Callable[[], bool]:
    """A readiness check: does ``port`` of :data:`HOST` accept a TCP connection now?"""

    def check() -> bool:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
        except OSError:
            return False
        return True

    return check


def stop(
    process: subprocess.Popen[bytes],
    log: Path,
    *,
    group: bool = False,
    stop_signal: signal.Signals = signal.SIGTERM,
    patience: float = PATIENCE,
) -> int:
    """Stop ``process`` and return its exit status.

    Unless it has already exited, ``stop_signal`` goes to the process (to its
    whole process group if ``group``) and it gets ``patience`` seconds to
    exit.  One that outlives them is killed (with its group) and reported with
    an :class:`AssertionError` carrying ``log``.  Calling it again is harmless.
    """
    if process.poll() is not None:
        return process.returncode
    _signal(process, stop_signal, group)
    try:
        return process.wait(timeout=patience)
    except subprocess.TimeoutExpired:
        _signal(process, signal.SIGKILL, group)
        process.wait()
        output = log.read_text(errors="replace")
        raise AssertionError(f"{process.args!r} did not stop:\n{output}") from None


def _signal(process: subprocess.Popen[bytes], sent: signal.Signals, group: bool) -> None:
    if group:
        os.killpg(process.pid, sent)
    else:
        process.send_signal(sent)


@contextmanager
def serving(
    argv: Sequence[str],
    log: Path,
    ready: Callable[[], bool],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    group: bool = False,
    stop_signal: signal.Signals = signal.SIGTERM,
    patience: float = PATIENCE,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run the server command ``argv`` for the duration of the block; yield its process.

    Its output (stdout and stderr) goes to the file ``log``; ``env`` is its
    whole environment (``None``: this one's).  The block starts once
    ``ready()`` holds (for example :func:`accepts_connections`); if the
    server exits first or ``patience`` seconds pass, :class:`RuntimeError`
    carries its log.  With ``group`` it runs in a process group of its own
    (for servers that start children, such as ``pserve --reload``).  It is
    always stopped with :func:`stop`, which the block may call first.
    """
    with log.open("wb") as output:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=group,
        )
    try:
        deadline = time.monotonic() + patience
        while not ready():
            if process.poll() is not None or time.monotonic() > deadline:
                output_text = log.read_text(errors="replace")
                raise RuntimeError(f"{list(argv)} did not start:\n{output_text}")
            time.sleep(0.05)
        yield process
    finally:
        stop(process, log, group=group, stop_signal=stop_signal, patience=patience)


@contextmanager
def uvicorn_thread(app: Any, **options: Any) -> Iterator[str]:
    """Serve the ASGI ``app`` with uvicorn in a thread of this process; yield its base URL.

    ``options`` go to :class:`uvicorn.Config` after ``log_config=None`` (the
    test's logging stays as it is) and ``lifespan="on"``.  The thread is
    named ``uvicorn``, so a test can tell the event loop's thread from
    worker threads.  The server is always stopped; :class:`AssertionError`
    if it does not start or stop within :data:`PATIENCE` seconds.
    """
    # The socket is bound here, not by uvicorn, so no other process can take the port first.
    sock = socket.socket()
    sock.bind((HOST, 0))
    port: int = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on", **options))
    thread = threading.Thread(
        target=server.run, name="uvicorn", kwargs={"sockets": [sock]}, daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + PATIENCE
        while not server.started:
            assert thread.is_alive(), "uvicorn did not start"
            assert time.monotonic() < deadline, "uvicorn did not start in time"
            time.sleep(0.02)
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        thread.join(PATIENCE)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not stop"


@contextmanager
def waitress_thread(app: Any, *, threads: int = 4) -> Iterator[str]:
    """Serve the WSGI ``app`` with waitress (``threads`` workers) in a thread; yield its base URL.

    The server is always closed, and its thread joined for a few seconds.
    """
    port = free_port()
    server = create_server(app, host=HOST, port=port, threads=threads)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.close()
        thread.join(5)
