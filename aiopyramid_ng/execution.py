"""The execution policy that runs each request in a request greenlet; WSGI mode's loop.

``config.include('aiopyramid_ng')`` wraps the application's execution policy
(Pyramid's own, pyramid_retry's, or any other) in a
:class:`GreenletExecutionPolicy`.  Under an ASGI server the policy is already
called inside a request greenlet and only passes through.  Under a plain
WSGI server (WebTest, waitress) it runs the request in a request greenlet on a
persistent event loop owned by the calling thread, so coroutine views,
``synchronize`` and ``use_executor`` work there too, and a loop-bound
resource (an ``asyncio.Queue``) created in one request serves the next.

With the setting ``aiopyramid_ng.pipeline = executor`` the policy runs each
request's whole synchronous pipeline (tweens, root factory, traversal,
security policy, plain views) in the application's thread pool, so an
application whose hooks block behaves as it would on a threaded server;
coroutine views and synchronized coroutines still run on the event loop.

The application's request limits (a deadline, a concurrency bound, see
:mod:`aiopyramid_ng.limits`) apply in the request greenlet, around the policy.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, Literal, ParamSpec, TypeVar, cast

from pyramid.interfaces import IExecutionPolicy
from pyramid.registry import Registry
from pyramid.router import Router, default_execution_policy
from zope.interface import implementer

from .background import wsgi_response
from .bridge import await_in_greenlet, direct_call, in_bridge, segment_observer, spawn_greenlet
from .debug import BlockingReport
from .exceptions import see
from .executor import executor_of, shut_down_orphaned_pools
from .limits import RequestLimits, limits_of
from .settings import BLOCKING_MS, PIPELINE
from .threads import run_in_thread
from .types import Environ

__all__ = [
    "GreenletExecutionPolicy",
    "adopt_execution_policy",
    "run_sync",
    "thread_loop",
    "wrap_execution_policy",
]

P = ParamSpec("P")
T = TypeVar("T")

ExecutionPolicy = Callable[[Environ, Router], Any]
Pipeline = Literal["greenlet", "executor"]


class _ThreadLoop:
    """The event loop a WSGI server thread runs its requests on.

    Kept for the thread's life, since WSGI servers reuse their threads and
    resources bound to a loop must outlive a single request; closed when the
    thread ends and its thread-local data is released.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def __del__(self) -> None:
        if not self.loop.is_running():
            self.loop.close()


_local = threading.local()


def thread_loop() -> asyncio.AbstractEventLoop:
    """Return the calling thread's persistent event loop, creating it if needed."""
    holder: _ThreadLoop | None = getattr(_local, "holder", None)
    if holder is None or holder.loop.is_closed():
        holder = _local.holder = _ThreadLoop()
    return holder.loop


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
        "another thread: `await asyncio.to_thread(app, environ, start_response)`. "
        f"{see('quickstart-wsgi')}"
    )


@implementer(IExecutionPolicy)
class GreenletExecutionPolicy:
    """Run ``policy`` (an execution policy) in a request greenlet.

    :param pipeline: ``"greenlet"`` runs the policy in the request greenlet
        itself; ``"executor"`` hands it to the application's thread pool
        from there.
    :param blocking_ms: when set, runs of the request greenlet longer than
        this are logged (see :mod:`aiopyramid_ng.debug`).
    :param limits: the application's request limits, applied around the
        policy when any is set.
    """

    def __init__(
        self,
        policy: ExecutionPolicy = default_execution_policy,
        pipeline: Pipeline = "greenlet",
        blocking_ms: float | None = None,
        limits: RequestLimits | None = None,
    ):
        self.policy = policy
        self._call_policy = direct_call(policy)
        self.pipeline = pipeline
        self.blocking_ms = blocking_ms
        self.limits = limits
        #: What a plain WSGI server's call goes through (see wrap_outer).
        self._enter: ExecutionPolicy = self._run_sync

    def __call__(self, environ: Environ, router: Router) -> Any:
        if not in_bridge():
            return self._enter(environ, router)
        if self.blocking_ms is not None:
            # Left set for the rest of the request's Task, so the driver also
            # times the greenlet's last run, after this call returns.
            segment_observer.set(BlockingReport(self.blocking_ms, environ))
        limits = self.limits
        if limits is not None and limits.active:
            return limits.serve(environ, router, self._run)
        if self.pipeline == "greenlet":
            return self._call_policy(environ, router)  # _run's common case, one call less
        return self._run(environ, router)

    def _run(self, environ: Environ, router: Router) -> Any:
        if self.pipeline == "executor":
            executor = executor_of(router.registry)
            return await_in_greenlet(run_in_thread(executor, self.policy, environ, router))
        return self._call_policy(environ, router)

    def wrap_inner(self, wrap: Callable[[ExecutionPolicy], ExecutionPolicy]) -> None:
        """Replace the policy run in the request greenlet by ``wrap(policy)``.

        For a layer that must run inside the request greenlet (or the worker
        thread) but was added after this policy was installed: an
        autocommitting Configurator runs the add-on's actions in the order
        the application includes things, not in :data:`~aiopyramid_ng.orders.ORDERS`.
        """
        self.policy = wrap(self.policy)
        self._call_policy = direct_call(self.policy)

    def wrap_outer(self, wrap: Callable[[ExecutionPolicy], ExecutionPolicy]) -> None:
        """Run a plain WSGI server's call through ``wrap(enter)`` from now on.

        ``enter(environ, router)`` runs the whole request in a request
        greenlet on the calling thread's loop and returns the response; the
        layer ``wrap`` makes runs in that server thread, around all of it, and
        never under an ASGI server (where the call is already in a greenlet).
        """
        self._enter = wrap(self._enter)

    def _run_sync(self, environ: Environ, router: Router) -> Any:
        # WSGI mode, in the server's thread: a safe place to end the pools of
        # applications collected since the last request.
        shut_down_orphaned_pools()
        # Background tasks run when the server closes the response.
        return wsgi_response(environ, lambda: run_sync(self, environ, router))

    def __repr__(self) -> str:
        return f"<GreenletExecutionPolicy ({self.pipeline}) around {self.policy!r}>"


def wrap_execution_policy(registry: Registry) -> GreenletExecutionPolicy:
    """Wrap the registry's execution policy, whichever add-on set it, once; return it.

    Idempotent, so it runs both at commit and when the application is
    created: a policy set after the add-on's commit (by a later commit, or
    by an autocommitting Configurator after the include) is wrapped then.
    """
    policy = registry.queryUtility(IExecutionPolicy, default=default_execution_policy)
    if isinstance(policy, GreenletExecutionPolicy):
        return policy
    settings = registry.settings
    pipeline = cast(Pipeline, PIPELINE.read(settings))
    wrapped = GreenletExecutionPolicy(
        policy, pipeline, BLOCKING_MS.read(settings), limits_of(registry)
    )
    registry.registerUtility(wrapped, IExecutionPolicy)
    return wrapped


def adopt_execution_policy(registry: Registry, app: object) -> None:
    """Make ``app``, the Router just made, run the registry's final, wrapped execution policy.

    A Router reads the policy once, when it is made: one set between the
    add-on's commit and ``make_wsgi_app()`` would otherwise run outside any
    request greenlet.  ``app`` is what ``ApplicationCreated`` carries, which
    code other than ``make_wsgi_app()`` may set to anything.
    """
    policy = wrap_execution_policy(registry)
    if isinstance(app, Router) and app.registry is registry:
        app.execution_policy = policy
