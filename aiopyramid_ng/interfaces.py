"""Every zope interface of aiopyramid_ng: the contracts of its pluggable parts."""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = [
    "IAppExecutor",
    "IApplicationShutdown",
    "IApplicationStartup",
    "IBroadcastHub",
    "IScopeLayer",
    "IWebsocketConnections",
]


class IAppExecutor(Interface):  # type: ignore[misc]
    """Runs an application's blocking work: plain views and ``use_executor`` functions.

    Registered as a utility by ``config.include('aiopyramid_ng')``; replace it
    with ``config.set_executor()``.
    """

    owned = Attribute("True when the application created the pool and shuts it down.")

    # Zope interfaces declare methods without ``self``.
    def get() -> object:  # type: ignore[misc]
        """Return the :class:`concurrent.futures.Executor`, creating it on first use."""

    def shutdown(wait: bool = True) -> None:
        """Shut the pool down if the application owns it; later ``get()`` makes a new one."""


class IWebsocketConnections(Interface):  # type: ignore[misc]
    """The registry utility tracking an application's open WebSocket connections.

    The ASGI adapter adds each connection when its handshake starts and
    discards it when its scope ends.
    """

    def add(connection: object) -> None:
        """Track ``connection``."""

    def discard(connection: object) -> None:
        """Stop tracking ``connection``."""


class IBroadcastHub(Interface):  # type: ignore[misc]
    """The registry utility holding the process's groups of WebSocket connections.

    Registered by ``config.include('aiopyramid_ng')`` (an
    ``aiopyramid_ng.broadcast.Hub``); started at application startup and
    closed at shutdown.
    """

    async def join(connection: object, group: str) -> None:
        """Add ``connection`` to ``group``."""

    async def leave(connection: object, group: str) -> None:
        """Remove ``connection`` from ``group``."""

    async def leave_all(connection: object) -> None:
        """Remove ``connection`` from every group (it is closing)."""

    async def publish(group: str, message: object) -> None:
        """Send ``message`` to every member of ``group``, in every process."""


class IApplicationStartup(Interface):  # type: ignore[misc]
    """The server is about to route requests to the application."""

    app = Attribute("The ASGI application being started.")
    registry = Attribute("The Pyramid registry of the application.")


class IApplicationShutdown(Interface):  # type: ignore[misc]
    """The server has stopped routing requests to the application."""

    app = Attribute("The ASGI application being shut down.")
    registry = Attribute("The Pyramid registry of the application.")


class IScopeLayer(Interface):  # type: ignore[misc]
    """A named registry utility wrapping how the ASGI application serves a scope.

    Called once per handler when :func:`~aiopyramid_ng.asgi.make_asgi_app`
    builds the application, with the handler of ``http`` scopes and that of
    ``websocket`` scopes, each
    ``async serve(served, scope, receive, send)``; it returns the handler to
    use instead, which sees the whole scope, from its start to its last
    message, around everything the add-on does with it.  Layers apply in the
    order of their names, the first outermost.
    """

    def __call__(serve: object) -> object:
        """Return the handler to serve scopes with instead of ``serve``."""
