"""Diagnostics for code that holds the event loop: the blocking detector and nested loops.

Everything a request greenlet runs between two waits runs on the event loop
thread; while it runs, no other request on that loop makes progress.  With
the setting ``aiopyramid_ng.debug.blocking_ms`` (milliseconds), every such
uninterrupted run longer than the threshold is logged as a warning on the
``aiopyramid_ng.debug`` logger, naming the request and its view::

    request GET /report ran 240 ms on the event loop without waiting
    (view: myapp.views.report); every other request on this loop waited.

Timing costs two clock reads per switch, so leave the setting out in
production unless you are looking for such a hook.  Code that wants to hear
of each such run as well (:mod:`aiopyramid_ng.otel` turns it into a span
event) registers a function with :func:`observe_blocking`.

A view that runs on the loop thread and calls a library that starts an
event loop of its own there (``asyncio.run``, ``loop.run_until_complete``,
asgiref's ``async_to_sync``) fails with a ``RuntimeError`` that says nothing
about the fix; :func:`nested_loop_view` re-raises it as a
:class:`~aiopyramid_ng.exceptions.NestedLoopError` that does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import perf_counter
from typing import Any

from pyramid.config import Configurator
from pyramid.interfaces import IRequest
from pyramid.util import object_description

from .bridge import segment_observer, time_segments
from .exceptions import NestedLoopError, is_nested_loop_error, see
from .settings import BLOCKING_MS
from .types import Environ

__all__ = [
    "BlockingReport",
    "includeme",
    "nested_loop_view",
    "observe_blocking",
    "watched_view",
]

log = logging.getLogger("aiopyramid_ng.debug")

#: Called with the report and the run's length in seconds, in the request's
#: context, for every run the detector logs; see observe_blocking.
_observers: list[Callable[[BlockingReport, float], None]] = []


def observe_blocking(observer: Callable[[BlockingReport, float], None]) -> None:
    """Call ``observer(report, seconds)`` for every run the detector logs.  Idempotent.

    It is called in the request's context (its context variables are the
    request's), on the loop thread, right after the warning is logged; it
    must not raise.  Process-wide, like the detector's timing itself.
    """
    if observer not in _observers:
        _observers.append(observer)


class BlockingReport:
    """Logs the runs of one request's greenlet that exceed ``limit_ms``."""

    __slots__ = ("limit", "request", "view", "view_entered")

    def __init__(self, limit_ms: float, environ: Environ):
        self.limit = limit_ms / 1000
        self.request = f"{environ.get('REQUEST_METHOD', '')} {environ.get('PATH_INFO', '')}"
        self.view: str | None = None
        #: When the view was entered (perf_counter), to tell a run that
        #: blocked in the hooks before the view from one that blocked in it.
        self.view_entered = 0.0

    def __call__(self, seconds: float) -> None:
        if seconds < self.limit:
            return
        if self.view is None:
            where = "before its view was called"
        else:
            before_view = self.view_entered - (perf_counter() - seconds)
            where = f"view: {self.view}"
            if before_view >= self.limit:
                where = (
                    f"{before_view * 1000:.0f} ms of it before its view was called, in a tween, "
                    f"the root factory, traversal or the security policy; then {where}"
                )
        log.warning(
            "request %s ran %.0f ms on the event loop without waiting (%s); every other "
            "request on this loop waited. Move blocking work to the thread pool "
            "(use_executor, ExecutorMapper) or set aiopyramid_ng.pipeline = executor.",
            self.request,
            seconds * 1000,
            where,
        )
        for observer in _observers:
            observer(self, seconds)


def watched_view(view: Any, info: Any) -> Any:
    """View deriver: tell the request's :class:`BlockingReport` which view runs."""
    if BLOCKING_MS.read(info.settings) is None:
        return view
    name = object_description(info.original_view)

    def named_view(context: Any, request: IRequest) -> Any:
        report = segment_observer.get(None)
        if isinstance(report, BlockingReport):
            report.view = name
            report.view_entered = perf_counter()
        return view(context, request)

    return named_view


def nested_loop_view(view: Any, info: Any) -> Any:
    """View deriver: explain a nested event loop, naming the view and the fix."""
    name = object_description(info.original_view)

    def loop_checked_view(context: Any, request: IRequest) -> Any:
        try:
            return view(context, request)
        except NestedLoopError:
            raise
        except RuntimeError as exc:
            if not is_nested_loop_error(exc):
                raise
            raise NestedLoopError(
                f"{name} (or a library it calls) tried to start an event loop ({exc}) on the "
                "thread of the event loop serving the request. Run that blocking code in the "
                "thread pool: decorate the function with aiopyramid_ng.helpers.use_executor "
                "and await it from an async def view, or register the view with "
                "mapper=ExecutorMapper (a plain view), where a loop of its own is allowed. "
                "Better still, await the library's coroutine directly. "
                f"{see('compatibility-nested-loops')}"
            ) from exc

    return loop_checked_view


def includeme(config: Configurator) -> None:
    """Add the view derivers, and start timing if the setting asks for it."""
    config.add_view_deriver(watched_view)
    config.add_view_deriver(nested_loop_view)
    if BLOCKING_MS.read(config.get_settings()) is not None:
        time_segments()
