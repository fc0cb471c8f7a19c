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

Each connection is handed to the application's
:class:`~aiopyramid_ng.interfaces.IWebsocketConnections` utility, if it has
one, for as long as its scope lasts.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..bridge import spawn_greenlet
from ..exceptions import ClientDisconnected
from ..interfaces import IWebsocketConnections
from ..types import Receive, Send, WebSocketScope
from .connection import ENVIRON_KEY, Connection
from .environ import handshake_environ
from .responder import Responder
from .served import ServedApp

__all__ = ["serve_websocket"]

logger = logging.getLogger(__name__)


async def _fail_handshake(connection: Connection) -> None:
    try:
        await connection.respond(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                "trailers": False,
            }
        )
        await connection.respond(
            {"type": "http.response.body", "body": b"Internal Server Error", "more_body": False}
        )
    except OSError:
        pass  # the client is gone; nobody is left to tell


async def serve_websocket(
    served: ServedApp, scope: WebSocketScope, receive: Receive, send: Send
) -> None:
    """Serve one ``websocket`` scope with the application's WSGI pipeline."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return  # the client left before its handshake reached the application
    path = scope.get("path")
    connection = Connection(scope, receive, send)
    try:
        await served.lifecycle.ensure_started()
    except Exception:
        logger.exception("Application startup failed during the WebSocket handshake to %r", path)
        await _fail_handshake(connection)
        return
    task = asyncio.current_task()
    assert task is not None  # an ASGI call always runs in a Task
    connection.task = task
    environ = handshake_environ(scope)
    environ[ENVIRON_KEY] = connection
    responder = Responder(connection.respond, False, served.executor)
    registry = served.registry
    tracker: Any = None if registry is None else registry.queryUtility(IWebsocketConnections)
    if tracker is not None:
        tracker.add(connection)
    try:
        whole = await spawn_greenlet(responder.run, served.call_app, environ)
        if whole is not None:  # a response denying the handshake
            await responder.send_whole(whole)
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
    except ClientDisconnected:
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
            if not responder.started:
                await _fail_handshake(connection)
    else:
        if not connection.accepted:
            logger.info(
                "Refused the WebSocket handshake to %r with status %s", path, responder.status
            )
    finally:
        if tracker is not None:
            tracker.discard(connection)
        await connection.stop_reading()
