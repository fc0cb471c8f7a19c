"""The objects WebSocket views talk to their connection through.

An ``async def`` view gets a :class:`WebSocket`, whose methods are
coroutines; a plain view gets a :class:`SyncWebSocket`, whose methods block
the request greenlet (only it: the event loop keeps serving other
connections).  Both read and write the same
:class:`~aiopyramid_ng.asgi.connection.Connection`, and join and leave
groups through the application's :class:`~aiopyramid_ng.broadcast.Hub`.
"""

from __future__ import annotations

from typing import Any

from pyramid.request import Request

from ..asgi.connection import NORMAL_CLOSURE, Connection, Data
from ..broadcast.hub import Hub, hub_of
from ..helpers import await_
from ..types import Scope

__all__ = ["SyncWebSocket", "WebSocket"]


class _Endpoint:
    """What both kinds of view objects share: the connection's state and request."""

    __slots__ = ("_connection", "context", "request", "use_bytes")

    def __init__(self, connection: Connection, request: Request, context: Any, use_bytes: bool):
        self._connection = connection
        #: The Pyramid request of the handshake (headers, cookies, identity).
        self.request = request
        #: The context (traversal resource) the view was found for.
        self.context = context
        #: Text messages are received as UTF-8 ``bytes`` (``WebsocketMapper.use_bytes``).
        self.use_bytes = use_bytes

    @property
    def subprotocol(self) -> str | None:
        """The negotiated subprotocol, or None."""
        return self._connection.subprotocol

    @property
    def closed(self) -> bool:
        """True once either side closed the connection."""
        return self._connection.closed

    @property
    def close_code(self) -> int | None:
        """The close code sent or received; None while open."""
        return self._connection.close_code

    @property
    def close_reason(self) -> str:
        return self._connection.close_reason

    @property
    def scope(self) -> Scope:
        """The ASGI scope of the connection."""
        return self._connection.scope

    @property
    def _hub(self) -> Hub:
        return hub_of(self.request.registry)

    def _received(self, data: Data | None) -> Data | None:
        if self.use_bytes and isinstance(data, str):
            return data.encode("utf-8")
        return data

    def __repr__(self) -> str:
        state = f"closed {self.close_code}" if self.closed else "open"
        return f"<{type(self).__name__} {self._connection.path!r} {state}>"


class WebSocket(_Endpoint):
    """The connection as an ``async def`` WebSocket view sees it: methods are coroutines."""

    __slots__ = ()

    async def recv(self) -> Data | None:
        """Next message: ``str`` for text, ``bytes`` for binary; None once closed."""
        return self._received(await self._connection.receive())

    async def send(self, data: Data) -> None:
        """Send ``str`` as a text message or ``bytes`` as a binary one.

        :raises ConnectionClosedError: when the connection is closed.
        """
        await self._connection.send(data)

    async def close(self, code: int = NORMAL_CLOSURE, reason: str = "") -> None:
        """Close the connection; idempotent."""
        await self._connection.close(code, reason)

    async def join(self, group: str) -> None:
        """Join ``group``: from now on, every message broadcast to it is sent here too.

        Joining a group twice is joining it once.  The connection leaves
        all its groups when it closes.

        :raises ConnectionClosedError: when the connection is closed.
        :raises TypeError, ValueError: for a group name that is not a
            non-empty ``str`` of at most 200 characters.
        """
        await self._hub.join(self._connection, group)

    async def leave(self, group: str) -> None:
        """Leave ``group``; its messages still waiting to be sent here are dropped."""
        await self._hub.leave(self._connection, group)


class SyncWebSocket(_Endpoint):
    """The connection as a plain (``def``) WebSocket view sees it: methods block.

    Only the request greenlet waits (the view runs in it); the calls also
    work from a worker thread serving the request (a ``use_executor``
    function).
    """

    __slots__ = ()

    def recv(self) -> Data | None:
        """Next message: ``str`` for text, ``bytes`` for binary; None once closed."""
        return self._received(await_(self._connection.receive()))

    def send(self, data: Data) -> None:
        """Send ``str`` as a text message or ``bytes`` as a binary one.

        :raises ConnectionClosedError: when the connection is closed.
        """
        await_(self._connection.send(data))

    def close(self, code: int = NORMAL_CLOSURE, reason: str = "") -> None:
        """Close the connection; idempotent."""
        await_(self._connection.close(code, reason))

    def join(self, group: str) -> None:
        """Join ``group``, as :meth:`WebSocket.join` does."""
        await_(self._hub.join(self._connection, group))

    def leave(self, group: str) -> None:
        """Leave ``group``, as :meth:`WebSocket.leave` does."""
        await_(self._hub.leave(self._connection, group))
