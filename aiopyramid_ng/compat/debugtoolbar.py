"""pyramid_debugtoolbar with requests interleaved on the event loop.

Two of the toolbar's panels assume one request per thread at a time:

* the logging panel files log records under the current thread and clears
  that thread's records when a request starts: interleaved requests would
  show (and erase) each other's records.  :func:`install` files them under
  the request the logging code serves instead (see
  :func:`~aiopyramid_ng.threadlocal.outermost_request`), so a request's
  records include those logged by its executor views and its tasks;
* the performance panel's profiler, once activated in the toolbar, holds a
  process-wide ``threading.Lock`` for the whole request: a second request
  greenlet asking for it blocks the event loop thread while the first one
  waits on that loop, and the loop freezes.  cProfile also profiles a
  thread, so it would time every request interleaved with the profiled one.
  :func:`install` skips profiling for requests served in a request greenlet,
  with a logged reason, and keeps the timing.  With
  ``aiopyramid_ng.pipeline = executor`` each request runs in a worker thread
  of its own, and the profiler works as on a threaded server.

:func:`install` runs when the application includes pyramid_debugtoolbar
(see :mod:`aiopyramid_ng.compat`).  The other panels look their request up
with ``get_current_request()``, which aiopyramid_ng makes context-local, and
need nothing.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

from pyramid.interfaces import IRequest
from pyramid_debugtoolbar.panels import logger as logging_panel
from pyramid_debugtoolbar.panels.performance import PerformanceDebugPanel

from ..bridge import in_bridge
from ..threadlocal import outermost_request

__all__ = ["RequestTrackingHandler", "install"]

log = logging.getLogger(__name__)

Handler = Callable[[IRequest], Any]


def _owner(key: object) -> object:
    if key is not None:
        return key
    request = outermost_request()
    return request if request is not None else threading.current_thread()


class RequestTrackingHandler(logging_panel.ThreadTrackingHandler):  # type: ignore[misc]
    """The logging panel's handler, keyed by request instead of by thread."""

    def emit(self, record: logging.LogRecord) -> None:
        # No request panel would ever show a record logged outside requests
        # (on a threaded server each request clears its thread's first).
        if outermost_request() is not None:
            super().emit(record)

    def get_records(self, thread: object = None) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = super().get_records(_owner(thread))
        return records

    def clear_records(self, thread: object = None) -> None:
        super().clear_records(_owner(thread))


_profile_handler: Callable[[PerformanceDebugPanel, Handler], Handler] = (
    PerformanceDebugPanel._wrap_profile_handler
)


def _wrap_profile_handler(panel: PerformanceDebugPanel, handler: Handler) -> Handler:
    profiled = _profile_handler(panel, handler)
    if profiled is handler:
        return handler

    def profiled_in_threads(request: IRequest) -> Any:
        if not in_bridge():
            return profiled(request)
        log.warning(
            "pyramid_debugtoolbar: not profiling %s %s: it runs in a request greenlet on the "
            "event loop, where the profiler would also time every request interleaved with it, "
            "and its lock would freeze the loop. Set aiopyramid_ng.pipeline = executor to "
            "profile requests in worker threads.",
            request.method,
            request.path_qs,
        )
        return handler(request)

    return profiled_in_threads


def install() -> None:
    """Adapt the logging and performance panels (process-wide).  Idempotent."""
    handler = logging_panel.handler
    if not isinstance(handler, RequestTrackingHandler):
        handler.__class__ = RequestTrackingHandler
        # Records of a request that never reached the panel (an exception the
        # toolbar does not intercept) go away with the request.
        handler.records = weakref.WeakKeyDictionary(handler.records)
    PerformanceDebugPanel._wrap_profile_handler = _wrap_profile_handler
