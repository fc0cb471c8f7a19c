"""Several worker processes under one ``pserve`` runner (``workers = N``).

``pserve`` hands a runner the application object it loaded, not an import
string, so the servers' own supervisors, which start fresh interpreters
that import the application, cannot serve it.  The runners use the
*preload* model instead: the application is loaded once, by ``pserve`` in
the parent process; the runner binds the listening sockets there, then
:func:`supervise` forks the workers.  Each worker runs its own server,
event loop, lifespan and thread pool on the inherited sockets; the parent
serves nothing and only supervises:

* a worker that exits is logged with its exit status and replaced by a
  fresh fork of the parent; a worker that exits by itself before it served
  (a failing lifespan startup) stops them all, since every replacement
  would fail alike;
* the first ``SIGINT`` or ``SIGTERM`` to the parent stops every worker
  gracefully (the runner's own shutdown in each, WebSocket connections
  first), the second stops their waiting, a third kills them; the parent
  returns once it has reaped every worker.

The parent gives its orders through memory it shares with the workers, not
by signalling them: a worker may get the same signal itself (``Ctrl+C``
reaches the whole process group, systemd signals the whole control group),
and a second signal would make it stop waiting for its connections.  A
worker whose parent is gone (it was killed) stops on its own, so none
serves unsupervised.  Workers need ``fork``: POSIX systems only.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import multiprocessing
import os
import signal
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

import hupper  # type: ignore[import-untyped]  # pyramid's reloader, untyped

from ..exceptions import see

__all__ = ["SHUTDOWN_SIGNALS", "TICK", "Worker", "forking", "supervise"]

log = logging.getLogger(__name__)

#: How often, in seconds, a worker reads its orders and the parent looks at
#: its signals; a dead worker is noticed at once.
TICK = 0.1
#: The signals that stop the parent and, through it, every worker.
SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# The orders in byte 0 of the shared memory; each includes the one before.
_SERVE, _STOP, _FORCE = 0, 1, 2


class Worker:
    """A worker process's link to its parent: its number, its orders, its report.

    :func:`supervise` hands one to the function that serves in each worker,
    which runs :meth:`follow_orders` on its event loop.
    """

    def __init__(self, memory: mmap.mmap, number: int, parent: int):
        self._memory = memory
        #: 1 to ``workers``; a replacement takes the number of the worker it replaces.
        self.number = number
        self._parent = parent

    def _order(self) -> int:
        if os.getppid() != self._parent:
            return _STOP  # the parent is gone: stop rather than serve unsupervised
        return self._memory[0]

    async def follow_orders(
        self,
        *,
        serving: Callable[[], bool],
        stop: Callable[[], None],
        force: Callable[[], None],
    ) -> None:
        """Report when the server serves, and relay the parent's orders to it.

        ``serving`` says whether the server listens yet; ``stop`` starts its
        graceful shutdown and ``force`` makes that shutdown stop waiting.
        Each order is relayed once, within :data:`TICK` seconds.  Returns
        after ``force``; cancel it when the server stopped first.
        """
        reported = stopping = False
        while True:
            if not reported and serving():
                self._memory[self.number] = 1
                reported = True
            order = self._order()
            if order >= _STOP and not stopping:
                stopping = True
                stop()
            if order >= _FORCE:
                force()
                return
            await asyncio.sleep(TICK)


def forking(workers: int) -> bool:
    """Whether to serve in ``workers`` processes: more than one, and not under ``pserve --reload``.

    The reloader's process runs threads, which must not be forked, and the
    reloader restarts one server process; the count is then ignored with a
    warning, as uvicorn does under ``--reload``.
    """
    if workers > 1 and bool(hupper.is_active()):
        log.warning("workers = %d is ignored under pserve --reload: one process serves.", workers)
        return False
    return workers > 1


def _exit_status(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def supervise(workers: int, serve: Callable[[Worker], None]) -> None:
    """Run ``serve`` in ``workers`` forked processes until a signal stops them all.

    Call it in the main thread of the process that loaded the application,
    once the listening sockets are bound, with nothing but the main thread
    running (forking copies only the calling thread).  ``serve`` runs in
    each worker, with the signal handlers the parent had, and returns once
    its server stopped.  Returns when every worker has exited and been
    reaped, after ``SIGINT`` or ``SIGTERM``.

    :raises RuntimeError: when a worker exits, not killed by a signal, before
        it started serving; the other workers are stopped first.
    """
    context = multiprocessing.get_context("fork")
    parent = os.getpid()
    # Byte 0: the order; byte N: worker N serves.  MAP_SHARED, anonymous.
    memory = mmap.mmap(-1, 1 + workers)
    signals = 0

    def count(sig: int, frame: FrameType | None) -> None:
        nonlocal signals
        signals += 1

    previous = {sig: signal.signal(sig, count) for sig in SHUTDOWN_SIGNALS}

    def run(worker: Worker) -> None:  # in the worker
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        serve(worker)

    def start(number: int) -> BaseProcess:
        memory[number] = 0
        process = context.Process(
            target=run, args=(Worker(memory, number, parent),), name=f"worker {number}"
        )
        process.start()
        log.info("Started worker %d [%d]", number, process.pid)
        return process

    failure = ""
    try:
        running = {number: start(number) for number in range(1, workers + 1)}
        while not signals and not failure:
            wait([process.sentinel for process in running.values()], timeout=TICK)
            for number, process in running.items():
                if process.exitcode is None:
                    continue
                status = _exit_status(process.exitcode)
                # A worker killed by a signal (the OOM killer, an operator)
                # says nothing about the next one: replace it even if it
                # had not reported serving yet.
                if not memory[number] and process.exitcode >= 0:
                    failure = f"{number} [{process.pid}] {status} before it served"
                    log.error("Worker %s; stopping the other workers.", failure)
                    break
                log.error("Worker %d [%d] %s; starting another.", number, process.pid, status)
                running[number] = start(number)
        _stop(running, memory, lambda: signals)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        memory.close()
    if failure:
        raise RuntimeError(
            f"The server stopped: worker {failure}. Its output above says why; a "
            f"replacement would fail the same way. {see('runner-workers')}"
        )


def _stop(running: dict[int, BaseProcess], memory: mmap.mmap, signals: Callable[[], int]) -> None:
    """Order every worker to stop, escalating with each further signal; reap them all."""
    memory[0] = _STOP
    log.info("Stopping %d workers", sum(process.exitcode is None for process in running.values()))
    killed = False
    while alive := [process for process in running.values() if process.exitcode is None]:
        wait([process.sentinel for process in alive], timeout=TICK)
        if signals() >= 2:
            memory[0] = _FORCE
        if signals() >= 3 and not killed:
            killed = True
            for process in alive:
                process.kill()
    for number, process in running.items():
        process.join()
        assert process.exitcode is not None
        log.info("Worker %d [%d] %s", number, process.pid, _exit_status(process.exitcode))
