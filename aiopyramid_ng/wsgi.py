"""WSGI mode: the Router stays a WSGI application that runs in request greenlets.

``config.include('aiopyramid_ng')`` wraps the application's execution policy
(Pyramid's own, pyramid_retry's, or any other) in a
:class:`GreenletExecutionPolicy`.  Under an ASGI server the policy is already
called inside a request greenlet and only passes through.  Under a plain
WSGI server (WebTest, waitress) it runs the request in a request greenlet on a
persistent event loop owned by the calling thread, so coroutine views,
``synchronize`` and ``use_executor`` work there too, and a loop-bound
resource (an ``asyncio.Queue``) created in one request serves the next.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from pyramid.interfaces import IExecutionPolicy
from pyramid.router import Router, default_execution_policy
from zope.interface import implementer

from .bridge import in_bridge, spawn_greenlet
from .types import Environ

__all__ = ["GreenletExecutionPolicy", "run_sync", "thread_loop"]

P = ParamSpec("P")
T = TypeVar("T")

ExecutionPolicy = Callable[[Environ, Router], Any]

# One loop per thread, kept for the thread's life: WSGI servers reuse their
# threads, and resources bound to a loop must outlive a single request.
_loops = threading.local()


def thread_loop() -> asyncio.AbstractEventLoop:
    """Return the calling thread's persistent event loop, creating it if needed."""
    loop: asyncio.AbstractEventLoop | None = getattr(_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = _loops.loop = asyncio.new_event_loop()
    return loop


def run_sync(func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run sync ``func`` in a request greenlet on this thread's loop; return its result.

    :raises RuntimeError: when the calling thread is already running an event
        loop; blocking it to run another would freeze every coroutine on it.
    """
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return thread_loop().run_until_complete(spawn_greenlet(func, *args, **kwargs))
    raise RuntimeError(
        f"The WSGI application was called synchronously from a thread that runs the event "
        f"loop {running!r}; waiting here would freeze that loop. Serve it through "
        "aiopyramid_ng.asgi (or aiopyramid_ng.testing.TestApp in tests), or call it from "
        "another thread: `await asyncio.to_thread(app, environ, start_response)`."
    )


@implementer(IExecutionPolicy)
class GreenletExecutionPolicy:
    """Run ``policy`` (an :term:`execution policy`) in a request greenlet."""

    def __init__(self, policy: ExecutionPolicy = default_execution_policy):
        self.policy = policy

    def __call__(self, environ: Environ, router: Router) -> Any:
        if in_bridge():
            return self.policy(environ, router)
        return run_sync(self.policy, environ, router)

    def __repr__(self) -> str:
        return f"<GreenletExecutionPolicy around {self.policy!r}>"
