"""View mappers: where and how each kind of view runs, and the deriver that awaits the rest.

Every mapper accepts every view shape Pyramid's ``DefaultViewMapper`` does
(``view(request)``, ``view(context, request)``, classes with or without
``attr``, callable instances, partials) and passes through renderers,
``request.response``, returned responses and raised ``HTTPException``.
Whether a view is a coroutine is decided from the original callable (the
method named by ``attr`` for a class), never from Pyramid's wrapper.

=============================  ========================  =============================
mapper                         ``async def`` view        plain view
=============================  ========================  =============================
``CoroutineOrExecutorMapper``  awaited in the greenlet   the thread pool, then the
                                                         request greenlet once it has
                                                         shown it never waits
                                                         (:mod:`~aiopyramid_ng.adaptive`)
``CoroutineMapper``            awaited in the greenlet   ``ConfigurationError``
``ExecutorMapper``             ``ConfigurationError``    runs in the thread pool
``GreenletMapper``             awaited in the greenlet   runs in the request greenlet
=============================  ========================  =============================
"""

from __future__ import annotations

import sys
from functools import partial
from time import perf_counter, process_time
from typing import Any

from pyramid.exceptions import ConfigurationError
from pyramid.interfaces import IRequest, IViewMapperFactory
from pyramid.registry import Registry
from pyramid.util import object_description
from pyramid.viewderivers import DefaultViewMapper

from . import bridge
from .adaptive import Placement, PoolRun, Run, thread_usage
from .bridge import in_bridge
from .coroutines import is_awaitable, is_coroutine_callable
from .exceptions import is_nested_loop_error, see
from .executor import executor_of
from .helpers import await_
from .threads import run_in_thread

__all__ = [
    "BridgeMapper",
    "CoroutineMapper",
    "CoroutineOrExecutorMapper",
    "ExecutorMapper",
    "GreenletMapper",
    "awaited_view",
    "mapper_of",
    "refuse_views_derived_before",
]

View = Any


def _describe(view: View, attr: str | None) -> str:
    description: str = object_description(view)
    return f"attr {attr!r} of {description}" if attr else description


class BridgeMapper(DefaultViewMapper):  # type: ignore[misc]
    """Base of the mappers below: map a view with Pyramid's default mapper,
    then decide where it runs.  A view it maps never returns an awaitable."""

    attr: str | None

    def __call__(self, view: View) -> View:
        mapped = super().__call__(view)
        if is_coroutine_callable(view, self.attr):
            wrapper = self.map_coroutine(view, mapped)
        else:
            wrapper = self.map_plain(view, mapped)
        if wrapper is not mapped:
            wrapper.__text__ = getattr(mapped, "__text__", _describe(view, self.attr))
        return wrapper

    def map_coroutine(self, view: View, mapped: View) -> View:
        def coroutine_view(context: Any, request: IRequest) -> Any:
            return await_(mapped(context, request))

        return coroutine_view

    def map_plain(self, view: View, mapped: View) -> View:
        def executor_view(context: Any, request: IRequest) -> Any:
            if not in_bridge():
                # Already in a worker thread: the whole pipeline runs in the
                # executor (setting aiopyramid_ng.pipeline = executor).
                return mapped(context, request)
            return _in_pool(mapped, context, request)

        return executor_view

    def refuse(self, view: View, what: str, fix: str) -> ConfigurationError:
        return ConfigurationError(
            f"{type(self).__name__} cannot map {_describe(view, self.attr)}: {what}. {fix} "
            f"{see('quickstart-mappers')}"
        )


def _in_pool(call: View, context: Any, request: IRequest) -> Any:
    """Run ``call(context, request)`` in the application's pool and wait for it, in the bridge."""
    executor = executor_of(request.registry)
    handling = sys.exc_info()[1]
    if handling is not None:
        # An exception view: Pyramid calls it while handling the exception,
        # and a view may rely on that (a bare `raise`, sys.exc_info()).  That
        # state belongs to the calling thread; the worker gets it back by
        # handling the same exception.
        return await_(run_in_thread(executor, _handling, handling, call, context, request))
    return await_(run_in_thread(executor, call, context, request))


def _handling(exc: BaseException, mapped: View, context: Any, request: IRequest) -> Any:
    """Call ``mapped`` while handling ``exc``, as Pyramid calls an exception view."""
    try:
        raise exc
    except BaseException:
        return mapped(context, request)


class CoroutineOrExecutorMapper(BridgeMapper):
    """The default mapper: coroutine views are awaited in the request greenlet,
    plain views run in the application's thread pool until they have shown
    that they never wait, then in the request greenlet.

    With ``aiopyramid_ng.plain_views = executor``, plain views always run in
    the pool.  Where a plain view runs, and why, is decided by its
    :class:`~aiopyramid_ng.adaptive.Placement`.
    """

    def map_plain(self, view: View, mapped: View) -> View:
        placement = Placement(_describe(view, self.attr))

        def measured(pool_run: PoolRun, context: Any, request: IRequest) -> Any:
            # In the worker thread: its own clocks tell computing from waiting.
            started = perf_counter()
            start = thread_usage()
            process = process_time()
            try:
                return mapped(context, request)
            finally:
                pool_run.run = Run(perf_counter() - started, start, process)

        def pool_view(context: Any, request: IRequest) -> Any:
            if not in_bridge():
                return mapped(context, request)  # aiopyramid_ng.pipeline = executor
            if not placement.configured:
                placement.configure(request.registry)
            if not placement.probation:
                return _in_pool(mapped, context, request)
            pool_run = PoolRun()
            try:
                return _in_pool(partial(measured, pool_run), context, request)
            finally:
                placement.record(pool_run)

        def adaptive_view(context: Any, request: IRequest) -> Any:
            if not placement.inline:
                return pool_view(context, request)
            # Promoted: called right here, in the request greenlet, timed.
            # Reached from a worker thread instead (a subrequest of a view in
            # the pool), it runs there just the same, unjudged.
            suspended = bridge.suspensions
            started = perf_counter()
            start = thread_usage()
            process = process_time()
            try:
                return mapped(context, request)
            except RuntimeError as exc:
                if is_nested_loop_error(exc):
                    placement.started_a_loop(exc)
                raise
            finally:
                wall = perf_counter() - started
                if wall > placement.fast:
                    if bridge.suspensions == suspended and in_bridge():
                        placement.judge(Run(wall, start, process))
                elif placement.strikes:
                    placement.strikes = 0

        return adaptive_view


class CoroutineMapper(BridgeMapper):
    """Coroutine views only, awaited in the request greenlet."""

    def map_plain(self, view: View, mapped: View) -> View:
        raise self.refuse(
            view,
            "it is not a coroutine function",
            "Declare it `async def`, or register it with mapper=CoroutineOrExecutorMapper "
            "(runs it in the thread pool) or mapper=GreenletMapper.",
        )


class ExecutorMapper(BridgeMapper):
    """Plain views only, run in the application's thread pool."""

    def map_coroutine(self, view: View, mapped: View) -> View:
        raise self.refuse(
            view,
            "it is a coroutine function, which a thread pool cannot await",
            "Register it with mapper=CoroutineMapper or CoroutineOrExecutorMapper.",
        )


class GreenletMapper(BridgeMapper):
    """Plain views run in the request greenlet itself, with no thread hop.

    For views that do their I/O through :func:`~aiopyramid_ng.helpers.synchronize`
    or :func:`~aiopyramid_ng.helpers.await_`: a blocking call in such a view
    blocks the event loop.  Coroutine views are awaited as usual.
    """

    def map_plain(self, view: View, mapped: View) -> View:
        return mapped


def mapper_of(view: Any, info: Any) -> Any:
    """Return the mapper Pyramid maps ``view`` with, given the deriver's ``info``."""
    # The order in which Pyramid's own mapped_view deriver picks a mapper.
    return (
        info.options.get("mapper")
        or getattr(view, "__view_mapper__", None)
        or info.registry.queryUtility(IViewMapperFactory)
    )


def awaited_view(view: Any, info: Any) -> Any:
    """Await the result of a view whose mapper returned an awaitable.

    Sits between ``mapped_view`` and ``rendered_view``, so it sees the raw
    result of any mapper (another add-on's, a class view's, a
    ``functools.partial`` of an ``async def``) before the renderer does.
    Views mapped by aiopyramid_ng's own mappers are left unwrapped.
    """
    mapper = mapper_of(info.original_view, info)
    if isinstance(mapper, type) and issubclass(mapper, BridgeMapper):
        return view

    def awaiting_view(context: Any, request: IRequest) -> Any:
        result = view(context, request)
        if is_awaitable(result):
            result = await_(result)
        return result

    return awaiting_view


def _views_in(registry: Registry) -> list[Any]:
    introspector = getattr(registry, "introspector", None)
    return list(introspector.get_category("views", ())) if introspector is not None else []


def views_derived_so_far(registry: Registry) -> set[int]:
    """Return the ids of the views ``registry`` has built so far."""
    return {id(entry["introspectable"]) for entry in _views_in(registry)}


def refuse_views_derived_before(registry: Registry, before: set[int]) -> None:
    """Refuse an ``async def`` view that was built before the add-on was included.

    Pyramid builds a view when the commit that adds it runs, with the mapper
    and derivers configured by then: a coroutine view committed before
    ``config.include('aiopyramid_ng')`` would return an unawaited coroutine
    on every request.

    :raises ConfigurationError: naming the first such view and the fix.
    """
    for entry in _views_in(registry):
        view = entry["introspectable"]
        if id(view) in before and is_coroutine_callable(view["callable"], view["attr"]):
            raise ConfigurationError(
                f"The coroutine view {object_description(view['callable'])} was added by a "
                "commit that ran before config.include('aiopyramid_ng'), so it was built "
                "without the add-on and would never be awaited. Include aiopyramid_ng before "
                "the commit that adds it (first thing in main() or in the includeme that adds "
                f"it). {see('include-first')}"
            )
