"""Serving one ASGI ``http`` scope with a WSGI application in a request greenlet.

The body is received completely first (see :mod:`.body`), then the whole
WSGI call, body iteration included, runs in one request greenlet (see
:mod:`.responder`); a body of one chunk is sent by the request's Task.
From the request's first wait on, a client that disconnects cancels the
request's Task (see :mod:`.disconnect`).
"""

from __future__ import annotations

import asyncio
import logging

from ..background import SERVED
from ..bridge import drive_greenlet
from ..exceptions import ClientDisconnected
from ..types import HTTPScope, Receive, ResponseSend, Send
from .body import BodyTooLarge, read_body
from .disconnect import DisconnectWatch
from .environ import build_environ
from .responder import Responder
from .served import ServedApp

__all__ = ["send_plain", "serve_http"]

logger = logging.getLogger(__name__)


async def send_plain(send: ResponseSend, status: int, text: str) -> None:
    """Send a complete text response that the application did not produce."""
    body = text.encode("utf-8")
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(body)),
    ]
    try:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": headers,
                "trailers": False,
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})
    except OSError:
        pass  # the client is gone; nobody is left to tell


def _declared_length(scope: HTTPScope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value)  # ValueError: a malformed request
    return None


async def serve_http(served: ServedApp, scope: HTTPScope, receive: Receive, send: Send) -> None:
    """Serve one ``http`` scope: read the body, run the WSGI call, stream the response."""
    task = asyncio.current_task()
    assert task is not None  # an ASGI call always runs in a Task
    responder = Responder(send, scope["method"] == "HEAD", served.executor)
    try:
        if scope.get("headers"):
            try:
                declared = _declared_length(scope)
            except ValueError:
                await send_plain(send, 400, "Malformed Content-Length header.")
                return
            if declared is not None and declared > served.max_body_size:
                await send_plain(
                    send, 413, f"Request body larger than {served.max_body_size} bytes."
                )
                return
        lifecycle = served.lifecycle
        if not lifecycle.started:  # saves a coroutine per request once started
            try:
                await lifecycle.ensure_started()
            except Exception:
                logger.exception(
                    "Application startup failed during %s %r", scope["method"], scope.get("path")
                )
                await send_plain(send, 500, "Internal Server Error")
                return
        try:
            body, length = await read_body(receive, served.max_body_size)
        except BodyTooLarge:
            await send_plain(send, 413, f"Request body larger than {served.max_body_size} bytes.")
            return
        except ClientDisconnected:
            return  # the application never ran: nothing to undo
        with body:
            environ = build_environ(scope, body, length)
            background = environ[SERVED] = lifecycle.background
            watch: DisconnectWatch | None = None

            def on_disconnect() -> None:
                if not responder.complete:
                    responder.disconnected = responder.cancelled_on_disconnect = True
                    task.cancel()

            def start_watching() -> None:
                # From the request's first wait on, a disconnect cancels this
                # very Task, so the request greenlet stops at its await point
                # and its `finally` blocks (and Pyramid's finished callbacks)
                # run before the Task ends.  A request that never waits ends
                # before the loop could deliver a disconnect: it needs no
                # watch.
                nonlocal watch
                if watch is None:
                    watch = DisconnectWatch(receive, on_disconnect)

            try:
                whole = await drive_greenlet(
                    task, start_watching, responder.run, served.call_app, environ
                )
                if whole is not None:
                    await responder.send_whole(whole, start_watching)
            except ClientDisconnected:
                logger.debug("Client disconnected from %s %r", scope["method"], scope.get("path"))
            except Exception:
                if responder.started:
                    # Too late for an error response: propagating makes the
                    # server abort the connection, so the client sees a
                    # truncated response rather than a complete-looking one.
                    logger.exception(
                        "Error while streaming the response to %s %r",
                        scope["method"],
                        scope.get("path"),
                    )
                    raise
                logger.exception("Error while serving %s %r", scope["method"], scope.get("path"))
                await send_plain(send, 500, "Internal Server Error")
            else:
                # The final body message was sent: the client has the whole response.
                background.start(environ)
            finally:
                if watch is not None:
                    watch.stop()
    except asyncio.CancelledError:
        # The watcher cancelled this Task because the client left.  Only
        # that one cancellation is absorbed: if the server cancelled too,
        # uncancel() stays above zero and the error propagates to it.
        if responder.cancelled_on_disconnect and task.uncancel() == 0:
            logger.debug("Client disconnected from %s %r", scope["method"], scope.get("path"))
            return
        raise
