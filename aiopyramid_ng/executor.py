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
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from pyramid.exceptions import ConfigurationError
from pyramid.threadlocal import get_current_registry
from zope.interface import implementer

from .interfaces import IAppExecutor

__all__ = [
    "DEFAULT_MAX_WORKERS",
    "MAX_WORKERS_SETTING",
    "AppExecutor",
    "current_executor",
    "max_workers_from_settings",
    "run_in_thread",
]

P = ParamSpec("P")
T = TypeVar("T")

MAX_WORKERS_SETTING = "aiopyramid_ng.executor.max_workers"
#: The pool size when the setting is absent: the standard library's default
#: for thread pools, ``min(32, os.cpu_count() + 4)``.
DEFAULT_MAX_WORKERS = min(32, (os.cpu_count() or 1) + 4)


def max_workers_from_settings(settings: Mapping[str, Any] | None) -> int:
    """Read and check ``aiopyramid_ng.executor.max_workers``."""
    raw = (settings or {}).get(MAX_WORKERS_SETTING, DEFAULT_MAX_WORKERS)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise ConfigurationError(
            f"The setting {MAX_WORKERS_SETTING} = {raw!r} is not a positive whole number; "
            f"set it to the number of threads for blocking views (default {DEFAULT_MAX_WORKERS})."
        )
    return value


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


#: Used by code that runs outside any application configured with aiopyramid_ng.
_fallback = AppExecutor()


def current_executor() -> Executor:
    """Return the executor of the current application (or a shared fallback)."""
    holder = get_current_registry().queryUtility(IAppExecutor)
    if holder is None:
        holder = _fallback
    executor: Executor = holder.get()
    return executor


async def run_in_thread(
    executor: Executor, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
) -> T:
    """Run blocking ``func`` in ``executor`` with a copy of the caller's context.

    Cancellation never abandons a running thread: work that has not started
    is withdrawn; work that has started is let finish (its result discarded)
    before the ``CancelledError`` propagates, so whatever runs after the
    caller unwinds (Pyramid's finished callbacks, a transaction manager) never
    races the thread.
    """
    context = contextvars.copy_context()
    submitted = executor.submit(context.run, func, *args, **kwargs)
    future = asyncio.wrap_future(submitted)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if not submitted.cancel():
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
        except BaseException:  # noqa: S110 - the result of cancelled work is discarded
            break
    if not future.cancelled():
        future.exception()  # retrieved, so asyncio does not log it as lost
