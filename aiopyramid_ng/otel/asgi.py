"""The server span of an ASGI scope: from the scope's start to its last message sent.

Registered as the :class:`~aiopyramid_ng.interfaces.IScopeLayer` utility
``aiopyramid_ng.otel``, it wraps the handlers of ``http`` and ``websocket``
scopes when :func:`~aiopyramid_ng.asgi.make_asgi_app` builds the
application.  The span is started before anything else happens to the
scope (before the body is read, before the application starts lazily) and
ended when the handler returns: after the response's last byte was handed
to the server, after the client left, or when the WebSocket connection
closed.  A response the add-on answers itself (400, 413, a 500 for a
failed start-up, anything a layer inside answers) is in it too; its status
is read from the messages sent.  The environ the application is called
with is handed to the span, which reads the marks the request limits left
in it (:data:`~aiopyramid_ng.limits.LIMIT_KEY`) when it ends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Any, TypeVar

from opentelemetry import propagate
from pyramid.registry import Registry
from zope.interface import implementer

from ..asgi.served import ServedApp
from ..interfaces import IScopeLayer
from ..types import Environ, HTTPScope, Receive, Send, SendEvent, WebSocketScope
from .attributes import HeadersGetter, scope_attributes
from .providers import telemetry_of
from .span import ServerSpan, current_server_span

__all__ = ["ScopeTracing"]

S = TypeVar("S", bound=HTTPScope | WebSocketScope)
Serve = Callable[[ServedApp, S, Receive, Send], Awaitable[None]]

_HEADERS = HeadersGetter()


@implementer(IScopeLayer)
class ScopeTracing:
    """Wraps a scope handler so that each scope it serves is one server span."""

    def __init__(self, registry: Registry):
        self.registry = registry

    def __call__(self, serve: Serve[S]) -> Serve[S]:
        telemetry = telemetry_of(self.registry)
        # The application gives its handler the same ServedApp for every
        # scope: wrapped once, on its first scope.
        observed: list[tuple[ServedApp, ServedApp]] = []

        def observing(served: ServedApp) -> ServedApp:
            if not observed or observed[0][0] is not served:
                observed[:] = [(served, _observing(served))]
            return observed[0][1]

        async def traced(served: ServedApp, scope: S, receive: Receive, send: Send) -> None:
            name, attributes = scope_attributes(scope)
            # The global propagator (W3C trace context and baggage unless the
            # application configured another) reads the incoming headers.
            headers: Iterable[tuple[bytes, bytes]] = scope["headers"]
            parent = propagate.extract(headers, getter=_HEADERS)
            span = ServerSpan(telemetry, name, attributes, parent, scope["type"] == "websocket")

            async def watched_send(message: SendEvent) -> None:
                await send(message)
                _sent(span, message)

            # Current in this Task's context, which the request greenlet
            # shares and every hop from it copies.
            with span.activated():
                try:
                    await serve(observing(served), scope, receive, watched_send)
                except BaseException as exc:
                    span.failed(exc)
                    raise
                finally:
                    span.end()

        return traced


def _observing(served: ServedApp) -> ServedApp:
    """``served``, calling the application after handing the environ to the request's span."""
    call_app = served.call_app

    def call(environ: Environ, start_response: Any) -> Any:
        # In the request greenlet, which shares the context the span is current in.
        span = current_server_span()
        if span is not None:
            span.serving(environ)
        return call_app(environ, start_response)

    return replace(served, call_app=call)


def _sent(span: ServerSpan, message: SendEvent) -> None:
    if (
        message["type"] == "http.response.start"
        or message["type"] == "websocket.http.response.start"
    ):
        span.responded(message["status"])
    elif message["type"] == "websocket.accept":
        span.accepted()
    elif message["type"] == "websocket.close":
        if span.status is None:
            span.responded(403)  # closed before accepting: the server answers 403
        else:
            span.closed(message.get("code", 1000))
