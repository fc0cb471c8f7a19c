"""Waiting for an awaitable from synchronous code, wherever that code runs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from .bridge import await_ as greenlet_await
from .bridge import discard, in_bridge, request_loop
from .exceptions import ScopeError
from .executor import wait_from_worker

__all__ = ["await_", "wait_outside_bridge"]

T = TypeVar("T")


def _name(awaitable: object) -> str:
    return str(getattr(awaitable, "__qualname__", awaitable))


def wait_outside_bridge(awaitable: Awaitable[T], strict: bool) -> T | Awaitable[T]:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        # A thread with no loop of its own.  If it serves a request (it runs
        # with a copy of the request's context), the request's loop can run
        # the awaitable while this thread blocks; the loop is free to do so
        # because the request greenlet is itself waiting for this thread.
        loop = request_loop()
        if loop is not None and loop.is_running():
            return wait_from_worker(loop, awaitable)
        discard(awaitable)
        raise ScopeError(
            f"Cannot wait for {_name(awaitable)} from this thread: it has no event loop and "
            "serves no request. Call it from a request (a view, a hook, or a function run with "
            "use_executor), or start a loop for it: asyncio.run(spawn_greenlet(func, ...))."
        ) from None
    if not strict:
        return awaitable
    discard(awaitable)
    raise ScopeError(
        f"Cannot wait for {_name(awaitable)} here: the caller runs on the event loop "
        "but outside any request greenlet, so waiting would block the loop. Await it directly "
        "from a coroutine, run the calling code with `await spawn_greenlet(func, ...)`, or "
        "decorate with synchronize(strict=False) to get the coroutine back in this case."
    )


def await_(awaitable: Awaitable[T]) -> T:
    """Wait for ``awaitable`` from synchronous code and return its result.

    Works wherever functions decorated with :func:`synchronize` work: in a
    request greenlet (only that request waits) and in a worker thread serving
    a request (the request's loop runs the awaitable while the thread
    blocks).  Exceptions propagate unchanged.

    :raises ScopeError: anywhere else; the awaitable is closed first.
    """
    if in_bridge():
        return greenlet_await(awaitable)
    result: T = wait_outside_bridge(awaitable, strict=True)  # type: ignore[assignment]
    return result
