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

import functools
import inspect
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from typing import Any, ParamSpec, TypeVar, overload

from pyramid.exceptions import ConfigurationError
from pyramid.util import object_description

from .bridge import await_ as greenlet_await
from .bridge import in_bridge, spawn_greenlet
from .executor import current_executor, run_in_thread
from .locks import Lock
from .waiting import await_, wait_outside_bridge

__all__ = ["Lock", "await_", "spawn_greenlet", "synchronize", "use_executor"]

P = ParamSpec("P")
T = TypeVar("T")

CoroutineFunction = Callable[P, Coroutine[Any, Any, T]]


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
                "or drop the decorator (plain functions need no synchronize)."
            )

        @functools.wraps(coroutine_function)
        def synchronized(*args: Any, **kwargs: Any) -> Any:
            coroutine = coroutine_function(*args, **kwargs)
            if in_bridge():
                return greenlet_await(coroutine)
            return wait_outside_bridge(coroutine, strict)

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
