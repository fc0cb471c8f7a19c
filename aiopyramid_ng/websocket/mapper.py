"""WebSocket views: the view mapper, the class-based view and the view options.

A WebSocket view is an ordinary Pyramid view registered with
``mapper=WebsocketMapper`` (or a class whose ``__view_mapper__`` it is):
routes, traversal, predicates and ``permission=`` select and guard it as any
other view.  Only when it is reached does the mapper check the ``Origin``,
negotiate a subprotocol and accept the handshake; the view is then called
with the connection and keeps it for as long as it runs.  Whatever a view
returns or raises after accepting never reaches the client as HTTP.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from pyramid.exceptions import ConfigurationError
from pyramid.httpexceptions import HTTPForbidden
from pyramid.interfaces import IRequest
from pyramid.response import Response
from pyramid.util import object_description

from ..asgi.connection import (
    ENVIRON_KEY,
    INTERNAL_ERROR,
    NORMAL_CLOSURE,
    Connection,
    Data,
)
from ..coroutines import is_coroutine_callable
from ..exceptions import ConnectionClosedError, WebsocketClosed, see
from ..helpers import await_
from ..interfaces import IBroadcastHub
from ..limits import release as release_limits
from ..mappers import mapper_of
from .endpoints import SyncWebSocket, WebSocket
from .origins import AllowedOrigins, allowed_origins_from_settings, origin_allowed, parse_origins

__all__ = ["WebsocketConnectionView", "WebsocketMapper", "websocket_options"]

logger = logging.getLogger(__name__)

View = Any

#: The view options of WebSocket views (see ``websocket_options``).
OPTIONS = ("ws_subprotocols", "ws_allowed_origins")


def _describe(view: View, attr: str | None) -> str:
    description: str = object_description(view)
    return f"attr {attr!r} of {description}" if attr else description


def _accepts(target: Callable[..., Any], count: int) -> bool:
    try:
        inspect.signature(target).bind(*[None] * count)
    except TypeError:
        return False
    except ValueError:
        return True  # no signature to check (a builtin): let the call tell
    return True


def _no_connection_response(request: IRequest) -> Response:
    if "asgi.scope" in request.environ:
        response = Response(
            status=426,
            content_type="text/plain",
            text="This URL is a WebSocket endpoint: connect to it with a WebSocket client.",
        )
        response.headers.update({"Upgrade": "websocket", "Connection": "Upgrade"})
        return response
    return Response(
        status=501,
        content_type="text/plain",
        text=(
            "This URL is a WebSocket endpoint, and the application is served by a WSGI "
            "server, which cannot speak WebSocket. Serve it with an ASGI server (uvicorn, "
            "hypercorn or daphne) through aiopyramid_ng.asgi."
        ),
    )


class WebsocketMapper:
    """The view mapper of WebSocket views.

    A function view is called as ``view(ws)``; a class view is instantiated
    with ``(context, request)`` (or ``(request)``) and the instance called
    with ``ws`` (or its method named by ``attr``).  ``async def`` views get a
    :class:`~aiopyramid_ng.websocket.WebSocket` whose methods are awaited;
    plain views get a :class:`~aiopyramid_ng.websocket.SyncWebSocket` whose
    methods block the request greenlet.

    View options (declared by the ``websocket_options`` deriver):

    ``ws_subprotocols``
        subprotocols the view speaks; the first of the client's
        ``Sec-WebSocket-Protocol`` values that is listed is selected, none if
        no value is.
    ``ws_allowed_origins``
        origins allowed besides the request's own host, replacing the
        setting ``aiopyramid_ng.websocket.allowed_origins`` for this view;
        ``["*"]`` allows any.

    The view ends the connection by returning (close code 1000), by raising
    :class:`~aiopyramid_ng.exceptions.WebsocketClosed` (its code) or by
    raising anything else (1011, logged with its traceback, then re-raised
    so transaction managers and exception views see it).
    """

    #: Receive text messages as UTF-8 ``bytes`` (aiopyramid's ``use_str = False``).
    use_bytes: ClassVar[bool] = False

    def __init__(self, **kw: Any):
        self.attr: str | None = kw.get("attr")
        subprotocols = kw.get("ws_subprotocols")
        if subprotocols is not None and (
            isinstance(subprotocols, str)
            or not isinstance(subprotocols, Sequence)
            or not all(isinstance(name, str) for name in subprotocols)
        ):
            raise ConfigurationError(
                f"ws_subprotocols={subprotocols!r} is not a list of subprotocol names; write "
                "for example ws_subprotocols=['chat.v2', 'chat.v1']. "
                f"{see('websocket-subprotocols')}"
            )
        self.subprotocols: tuple[str, ...] = tuple(subprotocols or ())
        origins = kw.get("ws_allowed_origins")
        self.allowed_origins: AllowedOrigins | None = None
        if origins is not None:
            if isinstance(origins, str):
                raise ConfigurationError(
                    f"ws_allowed_origins={origins!r} is a string; give a list of origins, for "
                    "example ws_allowed_origins=['https://example.com'] (or ['*'] for any). "
                    f"{see('websocket-origins')}"
                )
            self.allowed_origins = parse_origins(origins, "ws_allowed_origins")

    def __call__(self, view: View) -> View:
        handler_of = self._handler_factory(view)
        endpoint = WebSocket if is_coroutine_callable(view, self.attr) else SyncWebSocket
        use_bytes = self.use_bytes

        def websocket_view(context: Any, request: IRequest) -> Any:
            connection: Connection | None = request.environ.get(ENVIRON_KEY)
            if connection is None:
                return _no_connection_response(request)
            self._check_origin(request)
            handler = handler_of(context, request)
            subprotocol = self._select_subprotocol(connection.requested_subprotocols)
            await_(connection.accept(subprotocol))
            # An accepted connection lasts as long as the view runs: the
            # application's deadline and concurrency bound were the handshake's.
            release_limits(request.environ)
            _serve(handler, endpoint(connection, request, context, use_bytes), connection)
            return request.response

        websocket_view.__text__ = _describe(view, self.attr)  # type: ignore[attr-defined]
        return websocket_view

    def _handler_factory(self, view: View) -> Callable[[Any, IRequest], Callable[[Any], Any]]:
        """Return ``(context, request) -> handler``; check the view's shape first."""
        attr = self.attr
        if inspect.isclass(view):
            with_context = _accepts(view, 2)
            if not with_context and not _accepts(view, 1):
                raise self._refuse(
                    view, "its __init__ takes neither (context, request) nor (request)"
                )
            method = getattr(view, attr or "__call__", None)
            if method is None or not _accepts(method, 2):  # unbound: self and ws
                raise self._refuse(view, f"its {attr or '__call__'} does not take (self, ws)")

            factory: Callable[..., Any] = view

            def instantiate(context: Any, request: IRequest) -> Callable[[Any], Any]:
                instance = factory(context, request) if with_context else factory(request)
                request.__view__ = instance
                handler: Callable[[Any], Any] = getattr(instance, attr or "__call__")
                return handler

            return instantiate
        target = getattr(view, attr) if attr else view
        if not _accepts(target, 1):
            raise self._refuse(view, "it does not take exactly one argument, the connection")
        return lambda context, request: target

    def _refuse(self, view: View, what: str) -> ConfigurationError:
        return ConfigurationError(
            f"{type(self).__name__} cannot map {_describe(view, self.attr)}: {what}. A WebSocket "
            "view is `async def view(ws)` (or plain `def view(ws)`), or a class such as "
            "WebsocketConnectionView built with (context, request) and called with ws. "
            f"{see('websocket-connection')}"
        )

    def _check_origin(self, request: IRequest) -> None:
        allowed = self.allowed_origins
        if allowed is None:
            allowed = allowed_origins_from_settings(request.registry.settings)
        origin = request.headers.get("Origin")
        if not origin_allowed(origin, request.headers.get("Host"), allowed):
            logger.warning(
                "Refused the WebSocket handshake to %r from origin %r: it is neither the "
                "request's host nor an allowed origin (view option ws_allowed_origins, setting "
                "aiopyramid_ng.websocket.allowed_origins).",
                request.path,
                origin,
            )
            raise HTTPForbidden(f"WebSocket connections from {origin} are not allowed.")

    def _select_subprotocol(self, requested: list[str]) -> str | None:
        return next((name for name in requested if name in self.subprotocols), None)


def _serve(handler: Callable[[Any], Any], endpoint: Any, connection: Connection) -> None:
    """Run ``handler(endpoint)`` on an accepted connection and close it as the outcome says."""
    try:
        try:
            result = handler(endpoint)
            if inspect.isawaitable(result):
                await_(result)
        finally:
            # Whatever ended the view, the connection leaves its groups before
            # it closes: a broadcast sent after the close would be refused.
            _leave_groups(endpoint.request, connection)
    except WebsocketClosed as closed:
        await_(connection.close(closed.code, closed.reason))
    except ConnectionClosedError as exc:
        if exc.connection is not connection:
            _report(connection, exc)
            raise
        # Its own peer left while the view was sending: nothing is left to do.
    except asyncio.CancelledError:
        # The server is stopping, or interrupt() stopped the view: tell the client
        # it is going away (or what interrupt() was told to say, 1013 for a member
        # too slow for its broadcasts); the cancellation goes on unwinding the request.
        await_(connection.close(*connection.interrupt_close))
        raise
    except Exception as exc:
        _report(connection, exc)
        raise
    else:
        await_(connection.close(NORMAL_CLOSURE))


def _leave_groups(request: IRequest, connection: Connection) -> None:
    hub = request.registry.queryUtility(IBroadcastHub)
    if hub is not None:  # an application that did not include aiopyramid_ng has none
        await_(hub.leave_all(connection))


def _report(connection: Connection, exc: BaseException) -> None:
    logger.error(
        "WebSocket view for %r failed; closing with %d",
        connection.path,
        INTERNAL_ERROR,
        exc_info=exc,
    )
    connection.reported = exc
    await_(connection.close(INTERNAL_ERROR))


class WebsocketConnectionView:
    """A WebSocket view as a class with callbacks, one instance per connection.

    ``on_open()`` runs once the handshake is accepted, ``on_message(message)``
    for each message received, ``on_close()`` once when the connection ends
    for any reason (the peer closed or left, the server is stopping, a
    callback raised).  Callbacks are coroutine functions; ``self.request``,
    ``self.context`` and ``self.ws`` are set, and :meth:`send`,
    :meth:`close`, :meth:`join` and :meth:`leave` act on the connection.
    """

    __view_mapper__: ClassVar[type[WebsocketMapper]] = WebsocketMapper

    def __init__(self, context: Any, request: IRequest):
        self.context = context
        self.request = request
        self.ws: WebSocket | None = None

    async def __call__(self, ws: WebSocket) -> None:
        self.ws = ws
        try:
            await self.on_open()
            while (message := await ws.recv()) is not None:
                await self.on_message(message)
        finally:
            await self.on_close()

    def _connected(self) -> WebSocket:
        if self.ws is None:
            raise RuntimeError(
                f"{self!r} has no connection before it is called with one: call send(), "
                "close(), join() and leave() from on_open(), on_message() or on_close(), once "
                "the view runs. "
                f"{see('websocket-class-views')}"
            )
        return self.ws

    async def send(self, message: Data) -> None:
        """Send ``message`` (``str``: text, ``bytes``: binary) to the client."""
        await self._connected().send(message)

    async def close(self, code: int = NORMAL_CLOSURE, reason: str = "") -> None:
        """Close the connection; ``on_close`` follows once the view unwinds."""
        await self._connected().close(code, reason)

    async def join(self, group: str) -> None:
        """Join ``group`` (see :meth:`WebSocket.join <aiopyramid_ng.websocket.WebSocket.join>`)."""
        await self._connected().join(group)

    async def leave(self, group: str) -> None:
        """Leave ``group``; the connection leaves every group by itself when it ends."""
        await self._connected().leave(group)

    async def on_open(self) -> None:
        """Called once the connection is accepted."""

    async def on_message(self, message: Data) -> None:
        """Called with each message: ``str`` for text, ``bytes`` for binary."""

    async def on_close(self) -> None:
        """Called once when the connection ends, whatever ended it."""


def websocket_options(view: View, info: Any) -> View:
    """View deriver declaring the view options ``ws_subprotocols`` and ``ws_allowed_origins``.

    Declaring them lets ``config.add_view`` and ``@view_config`` accept them;
    the deriver itself only checks at commit that they are given to views
    mapped by :class:`WebsocketMapper`, which reads them.
    """
    given = [name for name in OPTIONS if info.options.get(name) is not None]
    if given:
        mapper = mapper_of(info.original_view, info)
        if not (isinstance(mapper, type) and issubclass(mapper, WebsocketMapper)):
            raise ConfigurationError(
                f"The view option(s) {', '.join(given)} of "
                f"{object_description(info.original_view)} apply to WebSocket views only; "
                "register it with mapper=WebsocketMapper (or derive it from "
                f"WebsocketConnectionView), or drop the option(s). {see('websocket-subprotocols')}"
            )
    return view


websocket_options.options = OPTIONS  # type: ignore[attr-defined]
