"""pyramid_debugtoolbar with requests interleaved on the event loop.

Two of the toolbar's panels assume one request per thread at a time:

* the logging panel files log records under the current thread and clears
  that thread's records when a request starts: interleaved requests would
  show (and erase) each other's records.  :class:`InterleavedLoggingPanel`
  files them under the request the logging code serves instead (see
  :func:`~aiopyramid_ng.threadlocal.outermost_request`), so a request's
  records include those logged by its executor views and its tasks;
* the performance panel's profiler, once activated in the toolbar, holds a
  process-wide ``threading.Lock`` for the whole request: a second request
  greenlet asking for it blocks the event loop thread while the first one
  waits on that loop, and the loop freezes.  cProfile also profiles a
  thread, so it would time every request interleaved with the profiled one.
  :class:`InterleavedPerformancePanel` skips profiling for requests served
  in a request greenlet, with a logged reason, and keeps the timing.  With
  ``aiopyramid_ng.pipeline = executor`` each request runs in a worker thread
  of its own, and the profiler works as on a threaded server.

:func:`install` registers both panels in place of the toolbar's own through
its public directive ``add_debugtoolbar_panel`` (a panel registered under a
bundled panel's name replaces it), when the application includes
pyramid_debugtoolbar (see :mod:`aiopyramid_ng.compat`).  The other panels
look their request up with ``get_current_request()``, which aiopyramid_ng
makes context-local, and need nothing.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

from pyramid.config import Configurator
from pyramid.interfaces import IRequest
from pyramid.registry import Registry
from pyramid_debugtoolbar.panels import logger as logging_panel
from pyramid_debugtoolbar.panels.performance import PerformanceDebugPanel
from pyramid_debugtoolbar.toolbar import IPanelMap, IToolbarWSGIApp

from ..bridge import in_bridge
from ..threadlocal import outermost_request

__all__ = [
    "InterleavedLoggingPanel",
    "InterleavedPerformancePanel",
    "RequestTrackingHandler",
    "adapted",
    "install",
]

log = logging.getLogger(__name__)

Handler = Callable[[IRequest], Any]


def _owner(key: object) -> object:
    if key is not None:
        return key
    request = outermost_request()
    return request if request is not None else threading.current_thread()


class RequestTrackingHandler(logging_panel.ThreadTrackingHandler):  # type: ignore[misc]
    """The logging panel's handler, keyed by request instead of by thread."""

    def __init__(self) -> None:
        super().__init__()
        # Records of a request that never reached the panel (an exception the
        # toolbar does not intercept) go away with the request.
        self.records: weakref.WeakKeyDictionary[Any, list[dict[str, Any]]] = (
            weakref.WeakKeyDictionary()
        )

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


#: The one handler every application's logging panel reads, on the root logger.
handler = RequestTrackingHandler()


class InterleavedLoggingPanel(logging_panel.LoggingPanel):  # type: ignore[misc]
    """The logging panel, reading :data:`handler` (records keyed by request)."""

    def __init__(self, request: IRequest):
        handler.clear_records()
        self.data: dict[str, Any] = {"records": []}

    def get_and_delete(self) -> list[dict[str, Any]]:
        records = handler.get_records()
        handler.clear_records()
        return records


class InterleavedPerformancePanel(PerformanceDebugPanel):  # type: ignore[misc]
    """The performance panel, profiling only requests that run in a thread of their own."""

    #: Set by the toolbar when the user activated the panel for the request.
    is_active: bool

    def __init__(self, request: IRequest):
        super().__init__(request)
        self.request = request

    def wrap_handler(self, handler: Handler) -> Handler:
        if self.is_active and in_bridge():
            log.warning(
                "pyramid_debugtoolbar: not profiling %s %s: it runs in a request greenlet on the "
                "event loop, where the profiler would also time every request interleaved with "
                "it, and its lock would freeze the loop. Set aiopyramid_ng.pipeline = executor "
                "to profile requests in worker threads.",
                self.request.method,
                self.request.path_qs,
            )
            # Timing only, for this request's panel.
            self.is_active = False
        wrapped: Handler = super().wrap_handler(handler)
        return wrapped


def _move_root_handler() -> None:
    # The toolbar's own handler files every record under its thread, and no
    # panel reads or clears it any more: left on the root logger, it would
    # keep the loop thread's records forever.
    root = logging.getLogger()
    if logging_panel.handler in root.handlers:
        root.removeHandler(logging_panel.handler)
    if handler not in root.handlers:
        root.addHandler(handler)


def install(registry: Registry) -> None:
    """Register the two panels in the toolbar of the application of ``registry``.

    Does nothing when the application does not include the toolbar.
    Idempotent.
    """
    toolbar_app = registry.queryUtility(IToolbarWSGIApp)
    if toolbar_app is None:
        return
    _move_root_handler()
    # The directive is the toolbar application's own; a Configurator over its
    # registry reaches it, as the toolbar's ``debugtoolbar.includes`` would.
    toolbar_config = Configurator(registry=toolbar_app.registry)
    toolbar_config.add_debugtoolbar_panel(InterleavedLoggingPanel)
    toolbar_config.add_debugtoolbar_panel(InterleavedPerformancePanel)


def adapted(registry: Registry) -> bool:
    """Return False when the application of ``registry`` has the toolbar's own panels."""
    toolbar_app = registry.queryUtility(IToolbarWSGIApp)
    if toolbar_app is None:
        return True
    panels = toolbar_app.registry.queryUtility(IPanelMap, default={})
    return InterleavedLoggingPanel in panels.values()
