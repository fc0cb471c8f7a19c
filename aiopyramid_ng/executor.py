"""The thread pool that runs an application's blocking views and functions.

Every application gets its own bounded :class:`~concurrent.futures.ThreadPoolExecutor`,
created on first use from the ``aiopyramid_ng.executor.max_workers`` setting
and shut down with the application (the ASGI lifespan shutdown); one whose
application is garbage-collected without being shut down, as in WSGI mode,
is shut down by the next request served in WSGI mode (see
:func:`shut_down_orphaned_pools`).  ``config.set_executor()`` replaces it.
With ``aiopyramid_ng.executor.max_queue`` the work waiting for a thread is
bounded (see :class:`~aiopyramid_ng.shedding.BoundedExecutor`).
How work crosses into a thread and back is :mod:`aiopyramid_ng.threads`.
"""

from __future__ import annotations

import threading
import weakref
from concurrent.futures import Executor, ThreadPoolExecutor

from pyramid.config import Configurator
from pyramid.registry import Registry
from pyramid.threadlocal import get_current_registry
from zope.interface import implementer

from .interfaces import IAppExecutor
from .settings import DEFAULT_MAX_WORKERS, MAX_QUEUE, MAX_WORKERS
from .shedding import BoundedExecutor, capacity_of

__all__ = [
    "AppExecutor",
    "current_executor",
    "executor_of",
    "set_executor",
    "shut_down_orphaned_pools",
]

#: The pools of applications garbage-collected without being shut down.
#: The collector only appends here: left to themselves, the pool's threads
#: would wake and exit at whatever moment the collector ran, inside any code
#: of any thread, and joining them there could wait on a lock the
#: interrupted code holds.
_orphaned_pools: list[Executor] = []


def shut_down_orphaned_pools() -> None:
    """Shut down the pools of applications collected without being shut down.

    Called by every request served in WSGI mode, from its server thread,
    before the request runs; without waiting, so that a thread still busy
    (a plain view left running past its deadline) never delays it.
    """
    while True:
        try:
            pool = _orphaned_pools.pop()
        except IndexError:  # another server thread took the last one
            return
        pool.shutdown(wait=False)


@implementer(IAppExecutor)
class AppExecutor:
    """An application's executor: created lazily, shut down with the application.

    :param max_workers: size of the pool this object creates.
    :param executor: an existing executor to use instead; the application
        does not own it, so :meth:`shutdown` leaves it running.
    :param max_queue: when set, at most this much work waits for a thread;
        beyond it :meth:`get`'s executor refuses work.
    """

    def __init__(
        self,
        max_workers: int = DEFAULT_MAX_WORKERS,
        executor: Executor | None = None,
        max_queue: int | None = None,
    ):
        self.max_workers = max_workers
        self.max_queue = max_queue
        self.owned = executor is None
        self._executor = None if executor is None else self._bounded(executor)
        # get() may race between the loop thread and WSGI server threads.
        self._lock = threading.Lock()
        #: Hands the pool this object made to shut_down_orphaned_pools once
        #: this object is collected without having shut it down.
        self._orphaned: weakref.finalize[[Executor], AppExecutor] | None = None

    def get(self) -> Executor:
        """Return the executor, creating the pool on first use."""
        executor = self._executor
        if executor is None:
            with self._lock:
                executor = self._executor
                if executor is None:
                    executor = self._executor = self._bounded(
                        ThreadPoolExecutor(self.max_workers, thread_name_prefix="aiopyramid_ng")
                    )
                    self._orphaned = weakref.finalize(self, _orphaned_pools.append, executor)
                    # At exit concurrent.futures joins every pool's threads itself.
                    self._orphaned.atexit = False
        return executor

    def _bounded(self, executor: Executor) -> Executor:
        if self.max_queue is None:
            return executor
        capacity = self.max_workers if self.owned else capacity_of(executor)
        return BoundedExecutor(executor, capacity, self.max_queue)

    def shutdown(self, wait: bool = True) -> None:
        """Shut down a pool this object created; a later :meth:`get` makes a new one."""
        if not self.owned:
            return
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            if self._orphaned is not None:
                self._orphaned.detach()
            executor.shutdown(wait=wait)


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


def register_executor(registry: Registry) -> None:
    """Register the application's own pool, sized by ``aiopyramid_ng.executor.max_workers``."""
    settings = registry.settings
    registry.registerUtility(
        AppExecutor(MAX_WORKERS.read(settings), max_queue=MAX_QUEUE.read(settings)), IAppExecutor
    )


def set_executor(config: Configurator, executor: Executor) -> None:
    """Config directive: run the application's blocking work in ``executor``.

    The application does not own an executor given this way: shutting the
    application down leaves it running.
    """

    def register() -> None:
        max_queue = MAX_QUEUE.read(config.registry.settings)
        config.registry.registerUtility(
            AppExecutor(executor=executor, max_queue=max_queue), IAppExecutor
        )

    config.action(IAppExecutor, register)
