"""The ``memory://`` backend: messages stay in the process.

A message published here goes to this process's hub, and nowhere else: with
several server processes (workers), each has groups of its own.
"""

from __future__ import annotations

import asyncio

from .backend import Data, Deliver

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """The :class:`~aiopyramid_ng.broadcast.backend.Backend` of ``memory://``."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None
        self._groups: set[str] = set()

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def subscribe(self, group: str) -> None:
        self._groups.add(group)

    async def unsubscribe(self, group: str) -> None:
        self._groups.discard(group)

    async def publish(self, group: str, message: Data) -> None:
        if self._deliver is not None and group in self._groups:
            self._deliver(group, message)
        # Yield once, as a network backend would: the members' senders, woken
        # by the message, send it before the publisher goes on.  A publisher
        # broadcasting in a loop would otherwise fill every member's queue
        # before any sender ran, and overflow the fast members with the slow.
        await asyncio.sleep(0)

    async def close(self) -> None:
        self._deliver = None
        self._groups.clear()
