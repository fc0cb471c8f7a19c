"""The open WebSocket connections of an application, closed at shutdown.

Registered as the application's
:class:`~aiopyramid_ng.interfaces.IWebsocketConnections` utility; at
``lifespan.shutdown`` each open connection is closed with 1001 ("going
away") after its view unwound.  The ``pserve`` runners of
:mod:`aiopyramid_ng.servers` call :func:`close_connections` as soon as the
server is asked to stop, before the server closes the connections itself.
"""

from __future__ import annotations

import asyncio

from pyramid.registry import Registry
from zope.interface import implementer

from ..asgi.connection import Connection
from ..events import ApplicationShutdown
from ..interfaces import IWebsocketConnections

__all__ = ["SHUTDOWN_TIMEOUT", "OpenConnections", "close_connections", "close_on_shutdown"]


#: Seconds :meth:`OpenConnections.close_all` waits for views to unwind.
SHUTDOWN_TIMEOUT = 10.0


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


async def close_connections(registry: Registry | None, timeout: float = SHUTDOWN_TIMEOUT) -> None:
    """Close the open WebSocket connections of the application of ``registry`` with 1001.

    Waits up to ``timeout`` seconds for their views to unwind (``finally``
    blocks, ``on_close``).  Does nothing for an application that tracks no
    connections (no registry, or ``aiopyramid_ng`` not included).
    """
    tracker = None if registry is None else registry.queryUtility(IWebsocketConnections)
    if tracker is not None:
        await tracker.close_all(timeout)


async def close_on_shutdown(event: ApplicationShutdown) -> None:
    """Subscriber: close the application's open connections at ``lifespan.shutdown``."""
    await close_connections(event.registry)
