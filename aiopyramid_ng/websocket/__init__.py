"""WebSocket endpoints as ordinary Pyramid views, served on ASGI ``websocket`` scopes.

::

    from aiopyramid_ng.websocket import WebsocketMapper, WebsocketConnectionView

    config.add_route("echo", "/ws/echo")

    @view_config(route_name="echo", mapper=WebsocketMapper, permission="chat")
    async def echo(ws):
        while (message := await ws.recv()) is not None:
            await ws.send(message)

Routes, traversal, predicates and permissions select and guard WebSocket
views like any other; the handshake is accepted only once the view is
reached, after an ``Origin`` check.  See ``docs/websockets.rst``.

This package is the view API (``endpoints``, ``mapper``, ``origins``,
``tracking``); the ASGI side of a connection is
``aiopyramid_ng.asgi.connection`` and ``aiopyramid_ng.asgi.websocket``.
"""

from __future__ import annotations

from pyramid.config import Configurator

from ..events import ApplicationShutdown
from ..exceptions import ConnectionClosedError, WebsocketClosed
from ..interfaces import IWebsocketConnections
from .endpoints import SyncWebSocket, WebSocket
from .mapper import WebsocketConnectionView, WebsocketMapper, websocket_options
from .origins import allowed_origins_from_settings
from .tracking import OpenConnections, close_on_shutdown

__all__ = [
    "ConnectionClosedError",
    "SyncWebSocket",
    "WebSocket",
    "WebsocketClosed",
    "WebsocketConnectionView",
    "WebsocketMapper",
    "includeme",
]


def includeme(config: Configurator) -> None:
    """Set up WebSocket views (included by ``config.include('aiopyramid_ng')``).

    * declares the view options ``ws_subprotocols`` and ``ws_allowed_origins``;
    * checks the setting ``aiopyramid_ng.websocket.allowed_origins`` at commit;
    * tracks open connections, and closes them with 1001 at ``lifespan.shutdown``.
    """
    config.add_view_deriver(websocket_options)
    registry = config.registry

    def register() -> None:
        allowed_origins_from_settings(registry.settings)
        registry.registerUtility(OpenConnections(), IWebsocketConnections)

    config.action(IWebsocketConnections, register)
    config.add_subscriber(close_on_shutdown, ApplicationShutdown)
