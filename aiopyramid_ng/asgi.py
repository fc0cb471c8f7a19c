"""Serve a Pyramid application (or any WSGI pipeline) over ASGI.

::

    # myapp/asgi.py -- uvicorn myapp.asgi:app --workers 4
    from aiopyramid_ng.asgi import from_ini
    app = from_ini("production.ini")

Each HTTP request runs the whole WSGI call, middleware included, in one
request greenlet on the server's event loop (no thread per request): the
body is received first, the response is streamed as produced, a client that
disconnects cancels its request, and the ASGI lifespan notifies
:mod:`aiopyramid_ng.events`.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from typing import Any

from pyramid.config import Configurator
from pyramid.paster import get_app, setup_logging
from pyramid.registry import Registry
from pyramid.router import Router

from . import threadlocal
from .body import (
    MAX_BODY_SIZE_SETTING,
    BodyTooLarge,
    ClientDisconnected,
    max_body_size_from_settings,
    read_body,
)
from .bridge import direct_call, spawn_greenlet_watched
from .disconnect import DisconnectWatch
from .environ import build_environ
from .exchange import ClientGone, Exchange
from .executor import executor_of
from .lifespan import Lifecycle
from .types import Receive, Scope, Send, WSGIApp
from .websocket.serving import serve_websocket

__all__ = ["ASGIApplication", "find_registry", "from_ini", "make_asgi_app"]

logger = logging.getLogger(__name__)

# Attributes by which WSGI middleware commonly holds the application it wraps.
_WRAPPED_ATTRIBUTES = ("app", "application", "wrap_app", "wrapped", "__wrapped__")


def find_registry(app: Any) -> Registry | None:
    """Return the Pyramid registry of ``app``, a Router or a pipeline around one.

    Middleware is looked through by its ``registry`` attribute or the
    attribute holding the application it wraps; None if no registry is found.
    """
    seen: set[int] = set()
    node = app
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if isinstance(node, Router):
            registry: Registry = node.registry
            return registry
        candidate = getattr(node, "registry", None)
        if isinstance(candidate, Registry):
            return candidate
        node = next((getattr(node, a) for a in _WRAPPED_ATTRIBUTES if hasattr(node, a)), None)
    return None


async def _send_plain(send: Send, status: int, text: str) -> None:
    """Send a complete text response that the application did not produce."""
    body = text.encode("utf-8")
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(body)),
    ]
    try:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
    except OSError:
        pass  # the client is gone; nobody is left to tell


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value)  # ValueError: a malformed request
    return None


class ASGIApplication:
    """An ASGI 3 application serving a WSGI application in request greenlets.

    Build it with :func:`make_asgi_app`.  ``lifecycle`` starts and stops the
    application (see :mod:`aiopyramid_ng.lifespan`).
    """

    def __init__(self, wsgi_app: WSGIApp, registry: Registry | None, max_body_size: int):
        self.wsgi_app = wsgi_app
        #: Calls ``wsgi_app`` (see :func:`~aiopyramid_ng.bridge.direct_call`).
        self.call_app = direct_call(wsgi_app)
        self.registry = registry
        self.max_body_size = max_body_size
        self.lifecycle = Lifecycle(self, registry)

    def __repr__(self) -> str:
        return f"<ASGIApplication for {self.wsgi_app!r}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._serve_http(scope, receive, send)
        elif kind == "lifespan":
            await self.lifecycle.serve(receive, send)
        elif kind == "websocket":
            await serve_websocket(self, scope, receive, send)
        else:
            raise RuntimeError(
                f"{self!r} cannot serve ASGI scope type {kind!r}: it serves 'http', "
                "'websocket' and 'lifespan'."
            )

    def _executor(self) -> Executor:
        return executor_of(self.registry)

    async def _serve_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None  # an ASGI call always runs in a Task
        exchange = Exchange(send, scope["method"] == "HEAD", self._executor)
        try:
            await self._handle(scope, receive, exchange, task)
        except asyncio.CancelledError:
            # The watcher cancelled this Task because the client left.  Only
            # that one cancellation is absorbed: if the server cancelled too,
            # uncancel() stays above zero and the error propagates to it.
            if exchange.cancelled_on_disconnect and task.uncancel() == 0:
                logger.debug("Client disconnected from %s %r", scope["method"], scope.get("path"))
                return
            raise

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        exchange: Exchange,
        task: asyncio.Task[Any],
    ) -> None:
        send = exchange.send
        try:
            declared = _declared_length(scope)
        except ValueError:
            await _send_plain(send, 400, "Malformed Content-Length header.")
            return
        if declared is not None and declared > self.max_body_size:
            await _send_plain(send, 413, f"Request body larger than {self.max_body_size} bytes.")
            return
        try:
            if not self.lifecycle.started:  # saves a coroutine per request once started
                await self.lifecycle.ensure_started()
        except Exception:
            logger.exception(
                "Application startup failed during %s %r", scope["method"], scope.get("path")
            )
            await _send_plain(send, 500, "Internal Server Error")
            return
        try:
            body, length = await read_body(receive, self.max_body_size)
        except BodyTooLarge:
            await _send_plain(send, 413, f"Request body larger than {self.max_body_size} bytes.")
            return
        except ClientDisconnected:
            return  # the application never ran: nothing to undo
        with body:
            environ = build_environ(scope, body, length)
            watch: DisconnectWatch | None = None

            def on_disconnect() -> None:
                if not exchange.complete:
                    exchange.disconnected = exchange.cancelled_on_disconnect = True
                    task.cancel()

            def start_watching() -> None:
                # From the request's first wait on, a disconnect cancels this
                # very Task, so the request greenlet stops at its await point
                # and its `finally` blocks (and Pyramid's finished callbacks)
                # run before the Task ends.  A request that never waits ends
                # before the loop could deliver a disconnect: it needs no
                # watch.
                nonlocal watch
                watch = DisconnectWatch(receive, on_disconnect)

            try:
                await spawn_greenlet_watched(start_watching, exchange.run, self.call_app, environ)
            except ClientGone:
                logger.debug("Client disconnected from %s %r", scope["method"], scope.get("path"))
            except Exception:
                if exchange.started:
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
                await _send_plain(send, 500, "Internal Server Error")
            finally:
                if watch is not None:
                    watch.stop()


def make_asgi_app(
    app: WSGIApp, registry: Registry | None = None, *, max_body_size: int | None = None
) -> ASGIApplication:
    """Wrap a WSGI application or pipeline as an ASGI 3 application.

    :param app: a Pyramid Router, or any WSGI middleware pipeline; it runs in
        request greenlets (include ``aiopyramid_ng`` in the Pyramid
        application for coroutine views).
    :param registry: the application's registry; found by
        :func:`find_registry` when omitted.  It provides the settings and is
        notified of lifespan events; a pipeline without one works without them.
    :param max_body_size: largest request body in bytes; defaults to the
        setting ``aiopyramid_ng.max_body_size`` (10 MiB when unset).
    :raises pyramid.exceptions.ConfigurationError: for an invalid body size.
    """
    # Any Pyramid code served here interleaves on one thread, so the request
    # stack must be context-local even if the app never included aiopyramid_ng.
    threadlocal.install()
    if registry is None:
        registry = find_registry(app)
    if max_body_size is None:
        settings = registry.settings if registry is not None else None
        max_body_size = max_body_size_from_settings(settings)
    else:
        max_body_size = max_body_size_from_settings({MAX_BODY_SIZE_SETTING: max_body_size})
    return ASGIApplication(app, registry, max_body_size)


def make_asgi_app_directive(
    config: Configurator, *, max_body_size: int | None = None
) -> ASGIApplication:
    """Config directive ``config.make_asgi_app()``: commit, then wrap ``config.make_wsgi_app()``."""
    return make_asgi_app(config.make_wsgi_app(), config.registry, max_body_size=max_body_size)


def from_ini(
    path: str, name: str = "main", options: dict[str, str] | None = None
) -> ASGIApplication:
    """Load the PasteDeploy application ``name`` from ``path`` and wrap it.

    Configures logging from the same file first, as ``pserve`` does.
    ``options`` fill ``%(var)s`` placeholders in the file.
    """
    setup_logging(path, global_conf=options)
    return make_asgi_app(get_app(path, name, options=options))
