"""The process's groups: which of its WebSocket connections are in which group.

A connection that joins a group becomes a *member*: it gets one bounded
queue and one sender Task that drains the queue into the connection, for
all the groups it is in.  Delivering a message only puts it in each
member's queue, so a member whose client reads slowly delays nobody else,
and each member receives the messages of one publisher in the order they
were published.  A member whose queue is full is closed with 1013 ("try
again later"), or, with ``aiopyramid_ng.broadcast.overflow = drop_oldest``,
loses its oldest waiting messages.

The hub subscribes its backend to a group while the group has members here,
and unsubscribes it once the last one left.  A member leaves all its groups
when its connection ends, however it ends: the view's wrapper
(``aiopyramid_ng.websocket.mapper``) tells the hub before the connection
closes, and a sender that finds its connection closed ends by itself.

Everything here runs on the event loop of the connections it serves.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from pyramid.registry import Registry
from zope.interface import implementer

from ..asgi.connection import Connection
from ..exceptions import BroadcastError, ConnectionClosedError, see
from ..interfaces import IBroadcastHub
from ..settings import BROADCAST_OVERFLOW, BROADCAST_QUEUE_SIZE
from .backend import Backend, Data

__all__ = [
    "MAX_GROUP_LENGTH",
    "SENDER_NAME",
    "TRY_AGAIN_LATER",
    "Hub",
    "check_group",
    "check_message",
    "hub_of",
]

logger = logging.getLogger(__name__)

#: The longest group name accepted, in characters.
MAX_GROUP_LENGTH = 200
#: RFC 6455's "try again later": the close code of a member whose queue overflowed.
TRY_AGAIN_LATER = 1013
#: The name of each member's sender Task (followed by the connection's path).
SENDER_NAME = "aiopyramid_ng.broadcast sender"
#: The name of the Task that (un)subscribes the backend to a group.
SETTLER_NAME = "aiopyramid_ng.broadcast subscription"


def check_group(group: object) -> str:
    """Return ``group`` if it is a valid group name.

    :raises TypeError: when it is not a ``str``.
    :raises ValueError: when it is empty or longer than :data:`MAX_GROUP_LENGTH`.
    """
    if not isinstance(group, str):
        raise TypeError(
            f"A group name is a str, not {type(group).__name__} ({group!r}); name groups by "
            f'what they gather, such as "room:42" or f"user:{{userid}}". {see("websocket-groups")}'
        )
    if not 0 < len(group) <= MAX_GROUP_LENGTH:
        raise ValueError(
            f"A group name has 1 to {MAX_GROUP_LENGTH} characters; {group[:40]!r} has "
            f"{len(group)}. Use a short name, such as a prefix and an id. "
            f"{see('websocket-groups')}"
        )
    return group


def check_message(message: object) -> Data:
    """Return ``message`` if it can be broadcast: ``str`` (text) or ``bytes`` (binary).

    :raises TypeError: for any other type, ``bytearray`` and ``memoryview``
        included (a waiting message must not change before it is sent).
    """
    if isinstance(message, str | bytes):
        return message
    raise TypeError(
        f"A broadcast message is str (sent as a text frame) or bytes (a binary frame), not "
        f"{type(message).__name__}; encode it first, with json.dumps() or bytes(). "
        f"{see('websocket-groups')}"
    )


def hub_of(registry: Registry) -> Hub:
    """The :class:`Hub` of the application of ``registry``.

    :raises RuntimeError: when the application did not include aiopyramid_ng.
    """
    hub: Hub | None = registry.queryUtility(IBroadcastHub)
    if hub is None:
        raise RuntimeError(
            f"The application of {registry!r} has no broadcast hub: groups and "
            "request.broadcast() come with config.include('aiopyramid_ng'). "
            f"{see('websocket-groups')}"
        )
    return hub


class _Member:
    """One connection in one group or more: its queue, and its sender running ``send(member)``."""

    __slots__ = ("connection", "dropped", "groups", "queue", "sender")

    def __init__(
        self,
        connection: Connection,
        queue_size: int,
        send: Callable[[_Member], Coroutine[Any, Any, None]],
    ):
        self.connection = connection
        self.groups: set[str] = set()
        self.queue: asyncio.Queue[Data] = asyncio.Queue(queue_size)
        #: Messages dropped since the member last had nothing waiting.
        self.dropped = 0
        # An empty context: the sender must not keep the handshake's request alive.
        self.sender = asyncio.get_running_loop().create_task(
            send(self), name=f"{SENDER_NAME} {connection.path}", context=contextvars.Context()
        )


@implementer(IBroadcastHub)
class Hub:
    """The groups of one application in this process, and the backend carrying their messages.

    :param backend_factory: makes the backend, at each start.
    :param queue_size: messages that may wait for one member.
    :param drop_oldest: drop a full queue's oldest message for the new one,
        instead of closing the member with 1013.

    The backend is started at application startup (or on first use, where
    no lifespan runs) and closed at shutdown; a hub closed by a shutdown
    refuses to work until the next startup.
    """

    def __init__(
        self,
        backend_factory: Callable[[], Backend],
        queue_size: int = BROADCAST_QUEUE_SIZE.default,
        drop_oldest: bool = False,
    ):
        self._backend_factory = backend_factory
        self.queue_size = queue_size
        self.drop_oldest = drop_oldest
        self._backend: Backend | None = None
        self._closed = False
        # Created unlocked and bound to a loop only if ever contended; replaced
        # at close, so that the application may start again on another loop.
        self._lock = asyncio.Lock()
        self._members: dict[Connection, _Member] = {}
        self._groups: dict[str, set[_Member]] = {}
        self._subscribed: set[str] = set()
        self._settlers: dict[str, asyncio.Task[None]] = {}
        #: Messages dropped for members too slow for them (``drop_oldest``), in total.
        self.dropped = 0
        #: Members closed with 1013 because their queue was full, in total.
        self.evicted = 0

    def __repr__(self) -> str:
        state = "running" if self._backend is not None else "closed" if self._closed else "new"
        return f"<Hub {state}, {len(self._members)} member(s) in {len(self._groups)} group(s)>"

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start the backend; does nothing if it runs already.

        :raises BroadcastError: when the backend cannot be reached in time.
        """
        async with self._lock:
            if self._backend is None:
                backend = self._backend_factory()
                await backend.start(self._deliver)
                self._backend, self._closed = backend, False

    async def close(self) -> None:
        """End every member's sender, then close the backend."""
        backend, self._backend = self._backend, None
        self._closed = True
        ending = {member.sender for member in self._members.values()}
        for member in list(self._members.values()):
            self._forget(member)
        ending.update(self._settlers.values())
        if ending:
            # wait() never raises what the tasks raised: they were cancelled or logged.
            await asyncio.wait(ending)
        self._subscribed.clear()
        self._lock = asyncio.Lock()
        if backend is not None:
            await backend.close()

    async def _running(self) -> Backend:
        if self._backend is None:
            if self._closed:
                raise BroadcastError(
                    "The application has shut down: its groups are closed, and nothing can "
                    f"be joined or broadcast until it starts again. {see('websocket-groups')}"
                )
            await self.start()
        assert self._backend is not None  # start() succeeded or raised
        return self._backend

    # -- membership ------------------------------------------------------------------

    async def join(self, connection: Connection, group: str) -> None:
        """Add ``connection`` to ``group``; joining a group twice is joining it once.

        Once this returns, every message broadcast to ``group`` reaches it.

        :raises ConnectionClosedError: when the connection is closed.
        """
        check_group(group)
        await self._running()
        if connection.closed:
            raise ConnectionClosedError(connection)
        member = self._members.get(connection)
        if member is None:
            member = self._members[connection] = _Member(connection, self.queue_size, self._send)
        if group in member.groups:
            return
        member.groups.add(group)
        self._groups.setdefault(group, set()).add(member)
        if group in self._subscribed:
            return
        try:
            # Shielded: a joiner cancelled while waiting leaves the subscription to go on.
            await asyncio.shield(self._settle_soon(group))
        except BaseException:
            self._remove(member, group)
            raise

    async def leave(self, connection: Connection, group: str) -> None:
        """Remove ``connection`` from ``group``; leaving a group one is not in does nothing.

        Messages of the group still waiting in its queue are dropped with it.
        """
        check_group(group)
        member = self._members.get(connection)
        if member is not None and group in member.groups:
            self._remove(member, group)

    async def leave_all(self, connection: Connection) -> None:
        """Remove ``connection`` from every group and end its sender (it is closing)."""
        member = self._members.get(connection)
        if member is not None:
            self._forget(member)

    def groups(self) -> dict[str, int]:
        """Each group that has members in this process, and how many."""
        return {group: len(members) for group, members in self._groups.items()}

    def _remove(self, member: _Member, group: str) -> None:
        member.groups.discard(group)
        self._discard(member, group)
        if not member.groups:
            self._forget(member)

    def _discard(self, member: _Member, group: str) -> None:
        members = self._groups.get(group)
        if members is not None:
            members.discard(member)
            if not members:
                del self._groups[group]
                if self._backend is not None:  # a closed backend has no subscriptions
                    self._settle_soon(group)

    def _forget(self, member: _Member) -> None:
        """Take ``member`` out of every group and end its sender; idempotent."""
        if self._members.get(member.connection) is not member:
            return
        del self._members[member.connection]
        for group in member.groups:
            self._discard(member, group)
        member.groups.clear()
        if member.sender is not asyncio.current_task():
            member.sender.cancel()
        if member.dropped:
            self._caught_up(member, "left its groups")

    # -- the backend's subscriptions -------------------------------------------------

    def _settle_soon(self, group: str) -> asyncio.Task[None]:
        """The Task making the backend's subscription to ``group`` match its members here."""
        task = self._settlers.get(group)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(
                self._settle(group),
                name=f"{SETTLER_NAME} {group}",
                context=contextvars.Context(),
            )
            self._settlers[group] = task
            task.add_done_callback(functools.partial(self._settled, group))
        return task

    async def _settle(self, group: str) -> None:
        # Members may come and go while the backend is busy: look again after each call.
        while (backend := self._backend) is not None:
            wanted = group in self._groups
            if wanted == (group in self._subscribed):
                return
            if wanted:
                await backend.subscribe(group)
                self._subscribed.add(group)
            else:
                self._subscribed.discard(group)
                await backend.unsubscribe(group)

    def _settled(self, group: str, task: asyncio.Task[None]) -> None:
        if self._settlers.get(group) is task:
            del self._settlers[group]
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.error(
                "The broadcast backend failed to (un)subscribe the group %r", group, exc_info=error
            )

    # -- messages --------------------------------------------------------------------

    async def publish(self, group: str, message: Data) -> None:
        """Send ``message`` to every member of ``group``, in this process and the others.

        A group without members is not an error: nobody receives the message.

        :raises TypeError: for a message that is neither ``str`` nor ``bytes``.
        :raises BroadcastError: when the backend does not take it in time.
        """
        check_group(group)
        check_message(message)
        backend = await self._running()
        await backend.publish(group, message)

    def _deliver(self, group: str, message: Data) -> None:
        """The backend's ``deliver``: queue ``message`` for each member of ``group`` here."""
        members = self._groups.get(group)
        if not members:
            return
        for member in tuple(members):  # a copy: an overflowing member leaves the set
            if member.connection.closed:
                self._forget(member)
                continue
            try:
                member.queue.put_nowait(message)
            except asyncio.QueueFull:
                self._overflow(member, message)

    def _overflow(self, member: _Member, message: Data) -> None:
        path = member.connection.path
        if not self.drop_oldest:
            self._forget(member)
            self.evicted += 1
            logger.warning(
                "Closing the WebSocket connection to %r with %d: its client did not read the "
                "%d broadcast messages waiting for it (%s; %s = drop_oldest drops the oldest "
                "instead)",
                path,
                TRY_AGAIN_LATER,
                self.queue_size,
                BROADCAST_QUEUE_SIZE.name,
                BROADCAST_OVERFLOW.name,
            )
            member.connection.interrupt(TRY_AGAIN_LATER, "too slow for its broadcast messages")
            return
        member.queue.get_nowait()
        member.queue.put_nowait(message)
        if not member.dropped:
            logger.warning(
                "The client of the WebSocket connection to %r reads more slowly than messages "
                "are broadcast to it: dropping its oldest waiting messages (%s = %d)",
                path,
                BROADCAST_QUEUE_SIZE.name,
                self.queue_size,
            )
        member.dropped += 1
        self.dropped += 1

    def _caught_up(self, member: _Member, how: str) -> None:
        logger.warning(
            "The WebSocket connection to %r %s; %d of its broadcast messages were dropped",
            member.connection.path,
            how,
            member.dropped,
        )
        member.dropped = 0

    async def _send(self, member: _Member) -> None:
        """The sender of ``member``: its queued messages, one after the other, to its connection."""
        connection, queue = member.connection, member.queue
        try:
            while True:
                if member.dropped and queue.empty():
                    self._caught_up(member, "caught up")
                message = await queue.get()
                await connection.send(message)
        except ConnectionClosedError:
            pass  # the peer left or the view closed: the view's end does the rest
        except Exception:
            logger.exception(
                "Sending a broadcast message to the WebSocket connection to %r failed; it "
                "leaves its groups",
                connection.path,
            )
        finally:
            self._forget(member)
