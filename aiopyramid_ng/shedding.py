"""Load shedding: refusing work at once, beyond a bound, instead of queueing it.

A :class:`Gate` counts the requests in flight (for the application, or for
one view) and admits at most its limit; a request it refuses is answered
with :func:`shed_response`, ``503 Service Unavailable`` with a
``Retry-After`` header, without running what the gate guards.  A
:class:`BoundedExecutor` bounds the work waiting for a pool thread the same
way, raising :class:`~aiopyramid_ng.exceptions.ExecutorQueueFull`.  Where
the gates stand is :mod:`aiopyramid_ng.limits`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

from pyramid.response import Response

from .exceptions import ExecutorQueueFull, see
from .settings import MAX_QUEUE

__all__ = ["BoundedExecutor", "Gate", "shed_response"]

P = ParamSpec("P")
T = TypeVar("T")


class Gate:
    """Admits at most ``limit`` at once.

    Requests of one application may run in several threads (a WSGI server's,
    the pool's with ``aiopyramid_ng.pipeline = executor``): the count is
    guarded by a lock, never held across a wait.
    """

    __slots__ = ("_lock", "in_flight", "limit")

    def __init__(self, limit: int):
        self.limit = limit
        #: How many are admitted and not yet out.
        self.in_flight = 0
        self._lock = threading.Lock()

    def enter(self) -> bool:
        """Admit one more if below the limit; return whether it was admitted."""
        with self._lock:
            if self.in_flight >= self.limit:
                return False
            self.in_flight += 1
            return True

    def exit(self) -> None:
        """Let out one that :meth:`enter` admitted."""
        with self._lock:
            self.in_flight -= 1


def shed_response(retry_after: int) -> Response:
    """The answer to a request refused for load: 503, retry after ``retry_after`` seconds."""
    response = Response(
        status=503,
        content_type="text/plain",
        charset="utf-8",
        text="Service Unavailable: the server is busy; try again shortly.\n",
    )
    response.headers["Retry-After"] = str(retry_after)
    return response


class BoundedExecutor(Executor):
    """``executor``, refusing work once ``capacity`` threads are busy and ``max_queue`` wait.

    Work in flight (submitted and not finished) is counted; beyond
    ``capacity + max_queue`` of it, :meth:`submit` raises
    :class:`~aiopyramid_ng.exceptions.ExecutorQueueFull` instead of queueing.
    Counting finished work rather than started work keeps a burst of
    submissions to idle threads (which start them a moment later) from being
    refused.
    """

    def __init__(self, executor: Executor, capacity: int, max_queue: int):
        self.executor = executor
        self.capacity = capacity
        self.max_queue = max_queue
        self._limit = capacity + max_queue
        self._in_flight = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Hand ``fn(*args, **kwargs)`` to the executor, or refuse it.

        :raises ExecutorQueueFull: when the executor is full.
        """
        with self._lock:
            if self._in_flight >= self._limit:
                raise ExecutorQueueFull(
                    f"The application's thread pool is full: {self.capacity} threads busy and "
                    f"{self.max_queue} pieces of work waiting (setting {MAX_QUEUE.name}), so "
                    "this one was refused rather than queued. A request that lets this escape "
                    "is answered 503; catch ExecutorQueueFull to do without the thread, or "
                    f"raise the setting or the pool's size. {see('load-executor-queue')}"
                )
            self._in_flight += 1
        try:
            future = self.executor.submit(fn, *args, **kwargs)
        except BaseException:
            self._done(None)
            raise
        future.add_done_callback(self._done)
        return future

    def _done(self, _: object) -> None:
        with self._lock:
            self._in_flight -= 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Shut the executor down."""
        self.executor.shutdown(wait=wait, cancel_futures=cancel_futures)


def capacity_of(executor: Executor) -> int:
    """The number of threads (or processes) of ``executor``; 0 if it does not say."""
    # The standard library's pools keep their size only in this attribute.
    size: Any = getattr(executor, "_max_workers", 0)
    return size if isinstance(size, int) else 0
