"""Groups of WebSocket connections, and broadcasting to them from any request.

::

    @view_config(route_name="room", mapper=WebsocketMapper)
    async def room(ws):
        await ws.join("room")
        while (message := await ws.recv()) is not None:
            await ws.request.broadcast("room", message)

    @view_config(route_name="announce", request_method="POST")
    async def announce(request):
        await request.broadcast("room", request.text)

This package is ``backend`` (what a transport does), ``hub`` (the process's
groups and each member's queue and sender) and ``memory`` (the ``memory://``
backend); ``redis`` is the Redis backend.  The setting
``aiopyramid_ng.broadcast.url`` chooses the backend.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pyramid.config import Configurator
from pyramid.interfaces import IRequest

from ..events import ApplicationShutdown, ApplicationStartup
from ..exceptions import BroadcastError, see
from ..interfaces import IBroadcastHub
from ..requestmethods import WeakRequestMethod
from ..settings import BROADCAST_OVERFLOW, BROADCAST_QUEUE_SIZE, BROADCAST_TIMEOUT, BROADCAST_URL
from .backend import Backend, Data, Deliver
from .hub import MAX_GROUP_LENGTH, TRY_AGAIN_LATER, Hub, hub_of
from .memory import MemoryBackend

__all__ = [
    "MAX_GROUP_LENGTH",
    "TRY_AGAIN_LATER",
    "Backend",
    "BroadcastError",
    "Data",
    "Deliver",
    "Hub",
    "MemoryBackend",
    "broadcast",
    "hub_of",
    "includeme",
    "make_backend",
]


def make_backend(url: str, timeout: float) -> Backend:
    """The backend of ``url`` (a checked ``aiopyramid_ng.broadcast.url``).

    ``redis://`` and ``rediss://`` import the Redis backend only when chosen,
    so that an application broadcasting in memory does not need the Redis client.
    """
    if urlsplit(url).scheme == "memory":
        return MemoryBackend()
    from .redis import RedisBackend

    return RedisBackend(url, timeout)


async def broadcast(request: IRequest, group: str, message: Data) -> None:
    """``await request.broadcast(group, message)``: send ``message`` to every member of ``group``.

    ``str`` goes out as a text message, ``bytes`` as a binary one.  Every
    member of the group, in this process or (with Redis) in any other,
    receives it once; a group without members is not an error.  Plain code
    calls it as ``aiopyramid_ng.helpers.await_(request.broadcast(group, message))``.

    :raises TypeError: for a group name that is not a ``str``, or a message
        that is neither ``str`` nor ``bytes``.
    :raises ValueError: for an empty or overlong group name.
    :raises BroadcastError: when the backend does not take the message in
        time (``aiopyramid_ng.broadcast.timeout``); the message is lost.
    """
    await hub_of(request.registry).publish(group, message)


async def _start(event: ApplicationStartup) -> None:
    await hub_of(event.registry).start()


async def _close(event: ApplicationShutdown) -> None:
    await hub_of(event.registry).close()


def includeme(config: Configurator) -> None:
    """Set up groups and broadcast (included by ``config.include('aiopyramid_ng')``).

    * registers the application's :class:`Hub` as its
      :class:`~aiopyramid_ng.interfaces.IBroadcastHub` utility, with the
      backend and queue of the settings ``aiopyramid_ng.broadcast.*``;
    * adds ``request.broadcast(group, message)`` to every request;
    * starts the backend at :class:`~aiopyramid_ng.events.ApplicationStartup`
      and closes it at :class:`~aiopyramid_ng.events.ApplicationShutdown`,
      after the WebSocket connections were closed.
    """
    registry = config.registry

    def register() -> None:
        settings = registry.settings
        url, timeout = BROADCAST_URL.read(settings), BROADCAST_TIMEOUT.read(settings)
        hub = Hub(
            lambda: make_backend(url, timeout),
            queue_size=BROADCAST_QUEUE_SIZE.read(settings),
            drop_oldest=BROADCAST_OVERFLOW.read(settings) == "drop_oldest",
        )
        registry.registerUtility(hub, IBroadcastHub)

    config.action(IBroadcastHub, register)
    config.add_request_method(WeakRequestMethod(broadcast, see("websocket-groups")), "broadcast")
    config.add_subscriber(_start, ApplicationStartup)
    config.add_subscriber(_close, ApplicationShutdown)
