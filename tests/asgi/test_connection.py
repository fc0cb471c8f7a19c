"""The ASGI side of a WebSocket connection when a send finds the peer gone.

A group's sender Task sends on a connection while the connection's view
waits in ``recv()``, or on something else: when that send fails because the
peer vanished, the view must learn it, even though the server's disconnect,
read afterwards, finds the connection closed already.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from aiopyramid_ng.asgi.connection import ABNORMAL_CLOSURE, Connection
from aiopyramid_ng.exceptions import ConnectionClosedError
from aiopyramid_ng.types import Receive, Send

SCOPE: Any = {"type": "websocket", "path": "/ws", "headers": []}


class Peer:
    """A server whose client vanished: every ``websocket.send`` raises OSError."""

    def __init__(self) -> None:
        self.inbound: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receive(self) -> dict[str, Any]:
        return await self.inbound.get()

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            raise OSError("the client went away")


async def accepted(peer: Peer) -> Connection:
    connection = Connection(SCOPE, cast(Receive, peer.receive), cast(Send, peer.send))
    await connection.accept(None)
    return connection


def test_a_failed_send_from_another_task_wakes_the_view_in_recv() -> None:
    async def scenario() -> None:
        peer = Peer()
        connection = await accepted(peer)
        view = asyncio.ensure_future(connection.receive())
        connection.task = view
        await asyncio.sleep(0)  # the view now waits in recv()
        with pytest.raises(ConnectionClosedError):
            await asyncio.ensure_future(connection.send("to a member that left"))
        assert await asyncio.wait_for(view, 1) is None
        assert connection.close_code == ABNORMAL_CLOSURE
        # The server's disconnect, read after, changes nothing.
        await peer.inbound.put({"type": "websocket.disconnect", "code": 1001})
        await connection.stop_reading()
        assert connection.close_code == ABNORMAL_CLOSURE

    asyncio.run(scenario())


def test_a_failed_send_from_another_task_interrupts_a_view_waiting_elsewhere() -> None:
    async def scenario() -> None:
        connection = await accepted(Peer())
        view = asyncio.ensure_future(asyncio.sleep(60))
        connection.task = view
        await asyncio.sleep(0)
        with pytest.raises(ConnectionClosedError):
            await asyncio.ensure_future(connection.send(b"to a member that left"))
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(view, 1)
        assert connection.interrupted
        await connection.stop_reading()

    asyncio.run(scenario())


def test_the_views_own_failed_send_raises_without_cancelling_it() -> None:
    async def scenario() -> str:
        connection = await accepted(Peer())

        async def view() -> str:
            try:
                await connection.send("hello")
            except ConnectionClosedError:
                await asyncio.sleep(0)  # cleanup that awaits is not cancelled
                return "cleaned up"
            return "sent"

        task = asyncio.ensure_future(view())
        connection.task = task
        outcome = await asyncio.wait_for(task, 1)
        assert not connection.interrupted
        await connection.stop_reading()
        return outcome

    assert asyncio.run(scenario()) == "cleaned up"
