"""The thread pool that runs an application's blocking views and functions.

Every application gets its own bounded :class:`~concurrent.futures.ThreadPoolExecutor`,
created on first use from the ``aiopyramid_ng.executor.max_workers`` setting
and shut down with the application.  Work submitted through
:func:`run_in_thread` runs with a copy of the caller's context variables, so
``get_current_request()`` and :func:`~aiopyramid_ng.helpers.synchronize` work
in the thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import queue
import threading
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from pyramid.registry import Registry
from pyramid.threadlocal import get_current_registry
from zope.interface import implementer

from .bridge import await_, bind_loop, spawn_greenlet
from .interfaces import IAppExecutor
from .settings import positive_setting

__all__ = [
    "DEFAULT_MAX_WORKERS",
    "MAX_WORKERS_SETTING",
    "AppExecutor",
    "current_executor",
    "executor_of",
    "max_workers_from_settings",
    "run_in_thread",
    "wait_from_worker",
]

P = ParamSpec("P")
T = TypeVar("T")

MAX_WORKERS_SETTING = "aiopyramid_ng.executor.max_workers"
#: The pool size when the setting is absent: the standard library's default
#: for thread pools, ``min(32, os.cpu_count() + 4)``.
DEFAULT_MAX_WORKERS = min(32, (os.cpu_count() or 1) + 4)


def max_workers_from_settings(settings: Mapping[str, Any] | None) -> int:
    """Read and check ``aiopyramid_ng.executor.max_workers``."""
    return positive_setting(
        settings,
        MAX_WORKERS_SETTING,
        DEFAULT_MAX_WORKERS,
        int,
        f"set it to the number of threads for blocking views (default {DEFAULT_MAX_WORKERS}).",
    )


@implementer(IAppExecutor)
class AppExecutor:
    """An application's executor: created lazily, shut down with the application.

    :param max_workers: size of the pool this object creates.
    :param executor: an existing executor to use instead; the application
        does not own it, so :meth:`shutdown` leaves it running.
    """

    def __init__(self, max_workers: int = DEFAULT_MAX_WORKERS, executor: Executor | None = None):
        self.max_workers = max_workers
        self.owned = executor is None
        self._executor = executor
        # get() may race between the loop thread and WSGI server threads.
        self._lock = threading.Lock()

    def get(self) -> Executor:
        executor = self._executor
        if executor is None:
            with self._lock:
                executor = self._executor
                if executor is None:
                    executor = self._executor = ThreadPoolExecutor(
                        self.max_workers, thread_name_prefix="aiopyramid_ng"
                    )
        return executor

    def shutdown(self, wait: bool = True) -> None:
        if not self.owned:
            return
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=wait)


_Work = tuple["Future[Any]", contextvars.Context, Callable[[], Any]]


class _WaitingWorker:
    """A worker thread blocked until a coroutine it started on the loop is done."""

    def __init__(self) -> None:
        self.inbox: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        # Only read and written on the loop thread, so it needs no lock.
        self.waiting = True

    def stop_waiting(self) -> None:
        self.waiting = False
        self.inbox.put(None)


#: Set in the context of a coroutine that a worker thread is blocked waiting
#: for (see wait_from_worker).  Blocking work that coroutine hands to an
#: executor runs in the waiting thread instead: otherwise a pool whose threads
#: all wait this way (a one-thread pool, say) could never run it.
_waiting_worker: contextvars.ContextVar[_WaitingWorker] = contextvars.ContextVar(
    "aiopyramid_ng.waiting_worker"
)


class _ThreadCall:
    """The coroutines a thread started by run_in_thread waits for on the loop.

    Only touched on the loop thread, so it needs no lock.
    """

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.cancelled = False

    def track(self, task: asyncio.Task[Any]) -> None:
        if self.cancelled:
            task.cancel()
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def cancel(self) -> None:
        self.cancelled = True
        for task in self.tasks:
            task.cancel()


#: Set in the context of every run_in_thread call, so that cancelling the
#: caller also cancels what the thread waits for on the loop.
_thread_call: contextvars.ContextVar[_ThreadCall] = contextvars.ContextVar(
    "aiopyramid_ng.thread_call"
)

#: Used by code that runs outside any application configured with aiopyramid_ng.
_fallback = AppExecutor()


def executor_of(registry: Registry | None) -> Executor:
    """Return the executor of the application ``registry`` belongs to.

    A registry without one (an application that did not include
    aiopyramid_ng), or no registry at all, gets a shared fallback pool.
    """
    holder = registry.queryUtility(IAppExecutor) if registry is not None else None
    if holder is None:
        holder = _fallback
    executor: Executor = holder.get()
    return executor


def current_executor() -> Executor:
    """Return the executor of the current application (or a shared fallback)."""
    return executor_of(get_current_registry())


async def run_in_thread(
    executor: Executor, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
) -> T:
    """Run blocking ``func`` in ``executor`` with a copy of the caller's context.

    Cancellation never abandons a running thread: work that has not started
    is withdrawn; work that has started is let finish (its result discarded)
    before the ``CancelledError`` propagates, so whatever runs after the
    caller unwinds (Pyramid's finished callbacks, a transaction manager) never
    races the thread.  Coroutines the thread is waiting for on the loop are
    cancelled with the caller, so the thread sees ``CancelledError`` there
    and can unwind early.
    """
    context = contextvars.copy_context()
    # The thread may wait on coroutines (synchronize, await_): they go to this loop.
    context.run(bind_loop, asyncio.get_running_loop())
    thread_call = _ThreadCall()
    context.run(_thread_call.set, thread_call)
    call = functools.partial(func, *args, **kwargs)
    worker = _waiting_worker.get(None)
    submitted: Future[T]
    if worker is None or not worker.waiting:
        submitted = executor.submit(context.run, call)
    else:
        submitted = Future()
        worker.inbox.put((submitted, context, call))
    future = asyncio.wrap_future(submitted)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if not submitted.cancel():
            thread_call.cancel()
            await _finish_despite_cancellation(future)
        raise


async def _finish_despite_cancellation(future: asyncio.Future[Any]) -> None:
    while not future.done():
        # A cancellation repeated while the thread runs changes nothing: the
        # caller is already unwinding and re-raises once the thread is done.
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            continue
        except BaseException:
            break
    if not future.cancelled():
        future.exception()  # retrieved, so asyncio does not log it as lost


def wait_from_worker(loop: asyncio.AbstractEventLoop, awaitable: Awaitable[T]) -> T:
    """Wait for ``awaitable`` on ``loop`` from a worker thread, blocking the thread.

    The awaitable is awaited in a bridged greenlet (so synchronous code it
    calls may wait too), in a Task with a copy of this thread's context.
    Meanwhile this thread executes any blocking work the awaitable sends to
    an executor.  If the request that started this thread is cancelled, the
    Task is cancelled and this raises :class:`asyncio.CancelledError` once the
    Task has finished unwinding.
    """
    worker = _WaitingWorker()
    thread_call = _thread_call.get(None)
    outcome: Future[T] = Future()
    context = contextvars.copy_context()
    context.run(_waiting_worker.set, worker)

    def start() -> None:
        # On the loop thread.
        task = loop.create_task(spawn_greenlet(await_, awaitable), context=context)
        task.add_done_callback(lambda _: _copy_outcome(task, outcome))
        task.add_done_callback(lambda _: worker.stop_waiting())
        if thread_call is not None:
            thread_call.track(task)

    loop.call_soon_threadsafe(start)
    while (work := worker.inbox.get()) is not None:
        submitted, work_context, call = work
        if submitted.set_running_or_notify_cancel():
            try:
                submitted.set_result(work_context.run(call))
            except BaseException as exc:
                submitted.set_exception(exc)
    if outcome.cancelled():
        raise asyncio.CancelledError()
    return outcome.result()


def _copy_outcome(task: asyncio.Task[T], outcome: Future[T]) -> None:
    if task.cancelled():
        outcome.cancel()
    elif (exc := task.exception()) is not None:
        outcome.set_exception(exc)
    else:
        outcome.set_result(task.result())
