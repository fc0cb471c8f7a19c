"""The ASGI application: scope dispatch, and the ways to build one.

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

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from pyramid.config import Configurator
from pyramid.registry import Registry
from pyramid.router import Router

from .. import threadlocal
from ..bridge import direct_call
from ..interfaces import IScopeLayer
from ..settings import MAX_BODY_SIZE
from ..types import AnyReceive, AnyScope, AnySend, Receive, Scope, Send, WSGIApp
from .http import serve_http
from .lifespan import Lifecycle
from .served import ServedApp
from .websocket import serve_websocket

__all__ = ["ASGIApplication", "find_registry", "from_ini", "make_asgi_app"]

# Attributes by which WSGI middleware commonly holds the application it wraps.
_WRAPPED_ATTRIBUTES = ("app", "application", "wrap_app", "wrapped", "__wrapped__")

S = TypeVar("S")
Serve = Callable[[ServedApp, S, Receive, Send], Awaitable[None]]


def _layered(registry: Registry | None, serve: Serve[S]) -> Serve[S]:
    """Return ``serve`` wrapped by the registry's IScopeLayer utilities, the first outermost."""
    if registry is None:
        return serve
    for _name, layer in sorted(registry.getUtilitiesFor(IScopeLayer), reverse=True):
        serve = layer(serve)
    return serve


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


class ASGIApplication:
    """An ASGI 3 application serving a WSGI application in request greenlets.

    Build it with :func:`make_asgi_app`.  ``lifecycle`` starts and stops the
    application (see :mod:`aiopyramid_ng.asgi.lifespan`).
    """

    def __init__(self, wsgi_app: WSGIApp, registry: Registry | None, max_body_size: int):
        self.wsgi_app = wsgi_app
        # The handlers see only this; direct_call saves a C frame per request.
        self._served = ServedApp(
            direct_call(wsgi_app), registry, Lifecycle(self, registry), max_body_size
        )
        # Decided once here: an application without layers pays nothing per scope.
        self._serve_http = _layered(registry, serve_http)
        self._serve_websocket = _layered(registry, serve_websocket)

    @property
    def registry(self) -> Registry | None:
        """The application's registry, or None for a pipeline without one."""
        return self._served.registry

    @property
    def max_body_size(self) -> int:
        """The largest request body accepted, in bytes."""
        return self._served.max_body_size

    @property
    def lifecycle(self) -> Lifecycle:
        """Starts and stops the application."""
        return self._served.lifecycle

    def __repr__(self) -> str:
        return f"<ASGIApplication for {self.wsgi_app!r}>"

    async def __call__(self, scope: AnyScope, receive: AnyReceive, send: AnySend) -> None:
        # Whatever the caller typed them as, these are ASGI's scope and callables.
        # (A string: a subscripted tuple[...] would be built on every call.)
        asgi_scope, asgi_receive, asgi_send = cast(
            "tuple[Scope, Receive, Send]", (scope, receive, send)
        )
        # Comparing the "type" item itself narrows the scope to its TypedDict.
        if asgi_scope["type"] == "http":
            await self._serve_http(self._served, asgi_scope, asgi_receive, asgi_send)
        elif asgi_scope["type"] == "lifespan":
            await self._served.lifecycle.serve(asgi_receive, asgi_send)
        elif asgi_scope["type"] == "websocket":
            await self._serve_websocket(self._served, asgi_scope, asgi_receive, asgi_send)
        else:
            raise RuntimeError(
                f"{self!r} cannot serve ASGI scope type {asgi_scope['type']!r}: it serves "
                "'http', 'websocket' and 'lifespan'."
            )


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
        max_body_size = MAX_BODY_SIZE.read(registry.settings if registry is not None else None)
    else:
        max_body_size = MAX_BODY_SIZE.read({MAX_BODY_SIZE.name: max_body_size})
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
    # Imported here: plaster looks its loaders up through importlib.metadata,
    # which an application built in Python never needs.
    from pyramid.paster import get_app, setup_logging

    setup_logging(path, global_conf=options)
    return make_asgi_app(get_app(path, name, options=options))
