"""Serving an ASGI ``websocket`` scope through the application's own pipeline.

The handshake becomes a ``GET`` request that runs through the whole WSGI
call (middleware, tweens, routing, traversal, security, the view) in one
request greenlet, exactly as an HTTP request does.  A
:class:`~aiopyramid_ng.websocket.WebsocketMapper` view accepts the
connection and keeps it for as long as it runs, inside that call: Pyramid's
request context is active for the connection's whole life.  Whatever HTTP
response the pipeline produces without accepting (the forbidden view, the
not-found view, an exception view, a view that is not a WebSocket view)
refuses the handshake.

The application tracks its open connections; at ``lifespan.shutdown`` each
one is closed with 1001 ("going away") after its view unwound.
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import TYPE_CHECKING

from pyramid.registry import Registry
from zope.interface import Interface, implementer

from ..bridge import spawn_greenlet
from ..environ import build_environ
from ..events import ApplicationShutdown
from ..exchange import ClientGone, Exchange
from ..types import Environ, Receive, Scope, Send
from .connection import ENVIRON_KEY, Connection

if TYPE_CHECKING:
    from ..asgi import ASGIApplication

__all__ = [
    "SHUTDOWN_TIMEOUT",
    "IWebsocketConnections",
    "OpenConnections",
    "close_on_shutdown",
    "serve_websocket",
    "websocket_environ",
]

logger = logging.getLogger(__name__)

#: Seconds :meth:`OpenConnections.close_all` waits for views to unwind.
SHUTDOWN_TIMEOUT = 10.0


class IWebsocketConnections(Interface):  # type: ignore[misc]
    """The registry utility tracking an application's open WebSocket connections."""


@implementer(IWebsocketConnections)
class OpenConnections:
    """The open WebSocket connections of one application."""

    def __init__(self) -> None:
        self._open: set[Connection] = set()

    def add(self, connection: Connection) -> None:
        self._open.add(connection)

    def discard(self, connection: Connection) -> None:
        self._open.discard(connection)

    def __len__(self) -> int:
        return len(self._open)

    async def close_all(self, timeout: float = SHUTDOWN_TIMEOUT) -> None:
        """Stop every accepted connection and wait (up to ``timeout``) for it to end.

        Each view is cancelled where it waits, its ``finally`` blocks and
        ``on_close`` run, then the connection closes with 1001.
        """
        stopping = [c for c in self._open if c.accepted and not c.closed]
        for connection in stopping:
            connection.interrupt()
        tasks = {c.task for c in stopping if c.task is not None}
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)


async def close_on_shutdown(event: ApplicationShutdown) -> None:
    """Subscriber: close the application's open connections at ``lifespan.shutdown``."""
    tracker = event.registry.queryUtility(IWebsocketConnections)
    if tracker is not None:
        await tracker.close_all()


def websocket_environ(scope: Scope) -> Environ:
    """The WSGI environ of the handshake: a ``GET`` with the scope's headers and no body."""
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    environ = build_environ({**scope, "method": "GET", "scheme": scheme}, io.BytesIO(), 0)
    environ["asgi.scope"] = scope
    return environ


def _tracker(registry: Registry | None) -> OpenConnections | None:
    if registry is None:
        return None
    tracker: OpenConnections | None = registry.queryUtility(IWebsocketConnections)
    return tracker


async def _fail_handshake(connection: Connection) -> None:
    try:
        await connection.respond(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")],
            }
        )
        await connection.respond({"type": "http.response.body", "body": b"Internal Server Error"})
    except OSError:
        pass  # the client is gone; nobody is left to tell


async def serve_websocket(app: ASGIApplication, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one ``websocket`` scope with ``app``'s WSGI pipeline."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return  # the client left before its handshake reached the application
    path = scope.get("path")
    connection = Connection(scope, receive, send)
    try:
        await app.lifecycle.ensure_started()
    except Exception:
        logger.exception("Application startup failed during the WebSocket handshake to %r", path)
        await _fail_handshake(connection)
        return
    task = asyncio.current_task()
    assert task is not None  # an ASGI call always runs in a Task
    connection.task = task
    environ = websocket_environ(scope)
    environ[ENVIRON_KEY] = connection
    exchange = Exchange(connection.respond, False, app._executor)
    tracker = _tracker(app.registry)
    if tracker is not None:
        tracker.add(connection)
    try:
        await spawn_greenlet(exchange.run, app.call_app, environ)
    except asyncio.CancelledError:
        # Only this module's cancellation (close_all(), the peer leaving) is
        # absorbed; the server's own (it is stopping) propagates to it once
        # the view has unwound.
        if connection.interrupted and task.uncancel() == 0:
            logger.debug(
                "WebSocket connection to %r interrupted (code %s)", path, connection.close_code
            )
            return
        raise
    except ClientGone:
        logger.debug("Client left during the WebSocket handshake to %r", path)
    except Exception as exc:
        if exc is connection.reported:
            if connection.close_refused:
                raise  # the server closes with 1011 itself when the application fails
            return  # logged, and the connection closed with 1011, by the view's wrapper
        if connection.accepted:
            # The view's wrapper closed the connection before returning: this
            # came later (a response or finished callback, a tween).
            logger.exception("Error after the WebSocket view for %r ended", path)
        else:
            logger.exception("Error during the WebSocket handshake to %r", path)
            if not exchange.started:
                await _fail_handshake(connection)
    else:
        if not connection.accepted:
            logger.info(
                "Refused the WebSocket handshake to %r with status %s", path, exchange.status
            )
    finally:
        if tracker is not None:
            tracker.discard(connection)
        await connection.stop_reading()
