"""Helpers for code on either side of the bridge.

==================  =====================================================
``synchronize``     make a coroutine function callable from sync code
``await_``          wait for one awaitable from sync code
``use_executor``    make a blocking function a coroutine run in a thread
``spawn_greenlet``  run sync code that uses the above, from any Task
``Lock``            a lock sync request code may hold across waits
==================  =====================================================
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Executor
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from pyramid.exceptions import ConfigurationError
from pyramid.util import object_description

from .bridge import await_in_greenlet, in_bridge, spawn_greenlet
from .exceptions import see
from .executor import current_executor
from .threads import run_in_thread, wait_from_thread

__all__ = ["Lock", "await_", "spawn_greenlet", "synchronize", "use_executor"]

P = ParamSpec("P")
T = TypeVar("T")

CoroutineFunction = Callable[P, Coroutine[Any, Any, T]]


def await_(awaitable: Awaitable[T]) -> T:
    """Wait for ``awaitable`` from synchronous code and return its result.

    Works wherever functions decorated with :func:`synchronize` work: in a
    request greenlet (only that request waits; the event loop keeps serving
    others) and in a worker thread serving a request (the request's loop runs
    the awaitable while the thread blocks).  An exception raised by the
    awaitable propagates unchanged, and cancelling the request's Task throws
    the cancellation into the awaitable where it waits.

    :raises ScopeError: anywhere else; the awaitable is closed first.
    """
    if in_bridge():
        return await_in_greenlet(awaitable)
    result: T = wait_from_thread(awaitable, strict=True)  # type: ignore[assignment]
    return result


@overload
def synchronize(func: CoroutineFunction[P, T], /, *, strict: bool = ...) -> Callable[P, T]: ...


@overload
def synchronize(
    func: None = ..., /, *, strict: bool = ...
) -> Callable[[CoroutineFunction[P, T]], Callable[P, T]]: ...


def synchronize(func: Any = None, /, *, strict: bool = True) -> Any:
    """Make a coroutine function callable from synchronous code.

    The decorated function, called from sync code, returns the coroutine's
    result:

    * in a request greenlet (or any greenlet below one) only that request
      waits; the event loop keeps serving others;
    * in a worker thread serving a request (an executor view, a
      ``use_executor`` function) the coroutine runs on the request's loop and
      the thread blocks until it is done;
    * on the loop thread outside any request greenlet, ``strict=True`` raises
      :class:`~aiopyramid_ng.exceptions.ScopeError`; ``strict=False`` returns
      the coroutine for the caller to await (as aiopyramid did).

    Use it bare (``@synchronize``) or with arguments
    (``@synchronize(strict=False)``), on functions, methods, ``__getitem__``,
    ``__acl__`` and under ``@property``.

    :raises ConfigurationError: when ``strict`` and ``func`` is not a
        coroutine function.  With ``strict=False`` such a function is
        returned unchanged.
    """

    def decorate(coroutine_function: Callable[..., Any]) -> Callable[..., Any]:
        if not inspect.iscoroutinefunction(coroutine_function):
            if not strict:
                return coroutine_function
            raise ConfigurationError(
                f"synchronize() needs a coroutine function, and "
                f"{object_description(coroutine_function)} is not one: declare it `async def`, "
                "or drop the decorator (plain functions need no synchronize). "
                f"{see('quickstart-synchronize')}"
            )

        @functools.wraps(coroutine_function)
        def synchronized(*args: Any, **kwargs: Any) -> Any:
            coroutine = coroutine_function(*args, **kwargs)
            if in_bridge():
                return await_in_greenlet(coroutine)
            return wait_from_thread(coroutine, strict)

        return synchronized

    if func is None:
        return decorate
    return decorate(func)


@overload
def use_executor(
    func: Callable[P, T], /, *, executor: Executor | None = ...
) -> Callable[P, Coroutine[Any, Any, T]]: ...


@overload
def use_executor(
    func: None = ..., /, *, executor: Executor | None = ...
) -> Callable[[Callable[P, T]], Callable[P, Coroutine[Any, Any, T]]]: ...


def use_executor(func: Any = None, /, *, executor: Executor | None = None) -> Any:
    """Turn a blocking function into a coroutine function that runs it in a thread.

    The thread comes from ``executor`` if given, else from the current
    application's pool (see :mod:`aiopyramid_ng.executor`).  The function
    runs with a copy of the caller's context variables, so
    ``get_current_request()`` and :func:`synchronize` work inside it.  If the
    awaiting coroutine is cancelled while the function runs, the function is
    let finish before the cancellation propagates.
    """

    def decorate(blocking: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(blocking)
        async def in_executor(*args: Any, **kwargs: Any) -> Any:
            return await run_in_thread(executor or current_executor(), blocking, *args, **kwargs)

        return in_executor

    if func is None:
        return decorate
    return decorate(func)


async def _release(lock: asyncio.Lock) -> None:
    lock.release()


class Lock:
    """Mutual exclusion for request code, usable as ``with lock:`` and ``async with lock:``.

    A ``threading.Lock`` held by one request greenlet while it waits freezes
    the event loop as soon as a second greenlet asks for it (the second one
    blocks the loop thread, so the first never resumes to release it); a
    ``threading.RLock`` lets the second greenlet straight in, since both run
    on one thread.  This lock suspends the waiting request instead.

    From a request greenlet, ``acquire()`` suspends only the calling request;
    from a worker thread serving a request, it blocks that thread while the
    request's loop waits for the lock.  Like :class:`asyncio.Lock`, it binds to
    the first event loop that waits on it; it is not reentrant.
    """

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    def locked(self) -> bool:
        """Return True when some request holds the lock."""
        return self._lock.locked()

    def acquire(self) -> bool:
        """Wait until the lock is free, then take it."""
        return await_(self._lock.acquire())

    def release(self) -> None:
        """Let the next waiter in.

        :raises RuntimeError: when the lock is not held.
        """
        if in_bridge():
            self._lock.release()
        else:
            # asyncio.Lock is not thread-safe: release it on its loop.
            await_(_release(self._lock))

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    async def __aenter__(self) -> bool:
        return await self._lock.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._lock.release()
