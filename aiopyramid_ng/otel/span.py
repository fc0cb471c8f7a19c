"""One request's server span, and the context variable that makes it the request's.

A :class:`ServerSpan` is made where the add-on first sees a request (the
ASGI scope, or a plain WSGI server's call) and ended where it last sees it.
:meth:`ServerSpan.activated` makes it current in the calling context: the
OpenTelemetry context (so ``trace.get_current_span()`` and every child span
find it) and :func:`current_server_span` (so the add-on's hooks find the
record to update).  Everything the request runs later shares or copies that
context: its request greenlet shares the ASGI Task's ``Context`` object,
``run_in_thread`` (plain views, ``use_executor``) copies it into the worker
thread, a coroutine a worker waits for gets a copy of the worker's, and a
task started with a copy of the request's context (a background task)
keeps it.  So no hop needs telling.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from time import perf_counter

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from pyramid.interfaces import IRequest

from ..limits import LIMIT_KEY
from ..threads import thread_observer
from ..types import Environ
from .attributes import (
    BLOCKING_CALLABLE,
    BLOCKING_DURATION,
    BLOCKING_EVENT,
    LIMIT,
    POOL_CALLS,
    POOL_RUN,
    POOL_WAIT,
    VIEW,
    WEBSOCKET_ACCEPT_EVENT,
    WEBSOCKET_CLOSE_CODE,
    Attributes,
)
from .providers import Telemetry

__all__ = ["ServerSpan", "current_server_span"]

_current: ContextVar[ServerSpan] = ContextVar("aiopyramid_ng.otel.server_span")

#: The close code of a WebSocket connection ended by a server error.
INTERNAL_ERROR = 1011


def current_server_span() -> ServerSpan | None:
    """Return the server span of the request the caller serves, or None."""
    return _current.get(None)


class ServerSpan:
    """The SERVER span of one HTTP request or WebSocket connection, and its measurement.

    :param name: the span's name until the route is known: the method.
    :param parent: the context extracted from the request's headers.
    :param websocket: a WebSocket connection: not measured by the request
        duration histogram, whose latencies a connection's life would skew.
    """

    def __init__(
        self,
        telemetry: Telemetry,
        name: str,
        attributes: Attributes,
        parent: Context,
        websocket: bool = False,
    ):
        self.telemetry = telemetry
        self.method = name
        self.websocket = websocket
        self.span = telemetry.tracer.start_span(name, parent, SpanKind.SERVER, attributes)
        self.context = trace.set_span_in_context(self.span, parent)
        self.started = perf_counter()
        self.measured: Attributes = {
            "http.request.method": attributes["http.request.method"],
            "url.scheme": attributes["url.scheme"],
        }
        self.status: int | None = None
        self.error: BaseException | None = None
        self.view_named = False
        self.ended = False
        #: The WSGI environ the application was called with, read at the end.
        self.environ: Environ | None = None
        #: (wait, run) of each hop to the pool; list.append is atomic, so
        #: worker threads need no lock to add theirs.
        self.hops: list[tuple[float, float]] = []

    @contextmanager
    def activated(self) -> Iterator[None]:
        """Make this the current span, and the current request's record, in this context."""
        otel_token = otel_context.attach(self.context)
        token = _current.set(self)
        thread_token = thread_observer.set(self.pooled)
        try:
            yield
        finally:
            thread_observer.reset(thread_token)
            _current.reset(token)
            otel_context.detach(otel_token)

    def serving(self, environ: Environ) -> None:
        """Record the environ the application is called with, to read its marks at the end."""
        self.environ = environ

    def routed(self, request: IRequest) -> None:
        """Name the span by the route ``request`` matched, if any."""
        route = getattr(request, "matched_route", None)
        if route is None or self.ended:
            return
        self.span.update_name(f"{self.method} {route.pattern}")
        self.span.set_attribute("http.route", route.pattern)
        self.measured["http.route"] = route.pattern

    def called_view(self, name: str) -> None:
        """Record the first view Pyramid called for the request."""
        if not self.view_named and not self.ended:
            self.view_named = True
            self.span.set_attribute(VIEW, name)

    def responded(self, status: int) -> None:
        """Record the status of the response sent."""
        self.status = status

    def accepted(self) -> None:
        """Record that the WebSocket handshake was accepted."""
        self.status = 101
        self.span.add_event(WEBSOCKET_ACCEPT_EVENT)

    def closed(self, code: int) -> None:
        """Record the code the application closed the WebSocket connection with."""
        self.span.set_attribute(WEBSOCKET_CLOSE_CODE, code)
        if code == INTERNAL_ERROR:
            self.span.set_status(Status(StatusCode.ERROR))

    def failed(self, exc: BaseException) -> None:
        """Record ``exc`` (once, however many layers it passes)."""
        if exc is self.error or self.ended:
            return
        self.error = exc
        self.span.record_exception(exc)

    def blocked(self, where: str, seconds: float) -> None:
        """Record a run of the request greenlet that held the loop ``seconds``."""
        if not self.ended:
            self.span.add_event(
                BLOCKING_EVENT, {BLOCKING_CALLABLE: where, BLOCKING_DURATION: seconds}
            )

    def pooled(self, wait: float, run: float) -> None:
        """Record one hop to the thread pool (called in the worker thread)."""
        self.hops.append((wait, run))

    def end(self) -> None:
        """End the span and measure the request.

        What runs later with a copy of the request's context (a background
        task, a thread still running) finds the span ended and leaves it alone.
        """
        self.ended = True
        span, measured = self.span, self.measured
        environ, self.environ = self.environ, None
        if environ is not None and (limit := environ.get(LIMIT_KEY)) is not None:
            # A deadline's 504 or a 503 for load, answered outside the tweens.
            span.set_attribute(LIMIT, limit)
        if self.status is not None:
            span.set_attribute("http.response.status_code", self.status)
            measured["http.response.status_code"] = self.status
        # Server spans are errors for 5xx only (a 404 is the client's).  With
        # no response at all, an exception that prevented it is the error.
        error_type: str | None = None
        if self.status is not None and self.status >= 500:
            error_type = str(self.status)
        elif self.status is None and self.error is not None:
            error_type = f"{type(self.error).__module__}.{type(self.error).__qualname__}"
        if error_type is not None:
            span.set_attribute("error.type", error_type)
            measured["error.type"] = error_type
            span.set_status(Status(StatusCode.ERROR))
        if hops := self.hops:
            span.set_attributes(
                {
                    POOL_WAIT: sum(wait for wait, _run in hops),
                    POOL_RUN: sum(run for _wait, run in hops),
                    POOL_CALLS: len(hops),
                }
            )
        span.end()
        if not self.websocket:
            self.telemetry.duration.record(perf_counter() - self.started, measured)
