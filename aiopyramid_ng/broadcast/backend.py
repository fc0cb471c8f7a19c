"""The contract between the process's groups and the transport that carries messages.

A backend moves each published message to every process that has members
in its group, once; the process's :class:`~aiopyramid_ng.broadcast.hub.Hub`
then queues it for each local member.  ``memory://`` is the process itself;
``redis://`` is Redis pub/sub, one channel per group.

Every method runs on the event loop of the application that owns the
backend.  Delivery is at most once: a message published while a process
cannot receive (its subscriber connection is down) is lost for that
process's members, never delivered twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

__all__ = ["Backend", "Data", "Deliver"]

#: A message: ``str`` travels as a text frame, ``bytes`` as a binary one.
Data = str | bytes

#: Called by the backend, on the loop, for each message that reaches this
#: process: ``deliver(group, message)``.  It never blocks and never raises.
Deliver = Callable[[str, Data], None]


class Backend(Protocol):
    """What the hub asks of a transport."""

    async def start(self, deliver: Deliver) -> None:
        """Connect and start calling ``deliver`` for messages of subscribed groups.

        Called once, at application startup, before any ``subscribe``.

        :raises BroadcastError: when the backend cannot be reached within its
            timeout; the application then fails to start, naming the URL.
        """

    async def subscribe(self, group: str) -> None:
        """Receive the messages of ``group`` from now on (its first local member joined).

        While the backend is down the group is remembered and subscribed again
        on reconnection; this never raises for a transient outage.
        """

    async def unsubscribe(self, group: str) -> None:
        """Stop receiving ``group`` (its last local member left)."""

    async def publish(self, group: str, message: Data) -> None:
        """Send ``message`` to every process subscribed to ``group``, this one included.

        Messages published one after the other by one caller arrive in that
        order.

        :raises BroadcastError: when the message cannot be handed to the
            transport within the backend's timeout (it is then lost).
        """

    async def close(self) -> None:
        """Stop receiving and release connections (application shutdown)."""
