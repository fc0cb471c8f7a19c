"""The blocking detector: find the code that keeps the event loop from other requests.

Everything a request greenlet runs between two waits runs on the event loop
thread; while it runs, no other request on that loop makes progress.  With
the setting ``aiopyramid_ng.debug.blocking_ms`` (milliseconds), every such
uninterrupted run longer than the threshold is logged as a warning on the
``aiopyramid_ng.debug`` logger, naming the request and its view::

    request GET /report ran 240 ms on the event loop without waiting
    (view: myapp.views.report); every other request on this loop waited.

Timing costs two clock reads per switch, so leave the setting out in
production unless you are looking for such a hook.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from time import perf_counter
from typing import Any

from pyramid.config import Configurator
from pyramid.interfaces import IRequest
from pyramid.util import object_description

from .bridge import segment_observer, time_segments
from .settings import positive_setting
from .types import Environ

__all__ = ["BLOCKING_SETTING", "BlockingReport", "blocking_ms_from_settings", "includeme"]

BLOCKING_SETTING = "aiopyramid_ng.debug.blocking_ms"

log = logging.getLogger("aiopyramid_ng.debug")


def blocking_ms_from_settings(settings: Mapping[str, Any] | None) -> float | None:
    """Read and check ``aiopyramid_ng.debug.blocking_ms``; None when it is unset."""
    raw = (settings or {}).get(BLOCKING_SETTING)
    if raw is None or str(raw).strip() == "":
        return None
    return positive_setting(
        settings,
        BLOCKING_SETTING,
        0.0,
        float,
        "set it to the longest run on the event loop to tolerate, in milliseconds (say 100), "
        "or remove it to turn the blocking detector off.",
    )


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


def watched_view(view: Any, info: Any) -> Any:
    """View deriver: tell the request's :class:`BlockingReport` which view runs."""
    if blocking_ms_from_settings(info.settings) is None:
        return view
    name = object_description(info.original_view)

    def named_view(context: Any, request: IRequest) -> Any:
        report = segment_observer.get(None)
        if isinstance(report, BlockingReport):
            report.view = name
            report.view_entered = perf_counter()
        return view(context, request)

    return named_view


def includeme(config: Configurator) -> None:
    """Add the view deriver, and start timing if the setting asks for it."""
    config.add_view_deriver(watched_view)
    if blocking_ms_from_settings(config.get_settings()) is not None:
        time_segments()
