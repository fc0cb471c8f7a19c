"""2,000 WebSocket connections open at once on one uvicorn process, each echoing.

Also measures the server's resident memory per idle open connection (the
view waiting in ``recv()``), reported as the test's ``rss_kib_per_connection``
property (``pytest --junitxml``) and on stdout (``pytest -s``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.servers import PATIENCE
from tests.support.websocket_servers import WsServer, raise_fd_limit, running

TOTAL = 2000
#: Handshakes in flight at once, well under the listen backlog.
BATCH = 200


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WsServer]:
    # Client and server each hold TOTAL sockets; the server inherits the limit.
    raise_fd_limit(2 * TOTAL + 1000)
    with running("uvicorn", tmp_path_factory.mktemp("uvicorn")) as started:
        yield started


def test_2000_concurrent_connections(
    server: WsServer, record_property: Callable[[str, object], None]
) -> None:
    async def echo(ws: Any, number: int) -> Any:
        await ws.send(f"message {number}")
        return await ws.recv()

    async def scenario() -> tuple[list[Any], float]:
        # Warm up (imports, first-request work) before measuring.
        for _ in range(3):
            async with server.connect("/ws/open") as ws:
                await echo(ws, -1)
        await asyncio.to_thread(server.wait_for, lambda stats: stats["open"] == 0)
        before = server.rss_kib()
        connections: list[Any] = []
        for start in range(0, TOTAL, BATCH):
            connections += await asyncio.gather(
                *(server.connect("/ws/open") for _ in range(start, min(start + BATCH, TOTAL)))
            )
        await asyncio.to_thread(server.wait_for, lambda stats: stats["open"] == TOTAL)
        per_connection = (server.rss_kib() - before) / TOTAL
        answers = await asyncio.gather(*(echo(ws, n) for n, ws in enumerate(connections)))
        await asyncio.gather(*(ws.close() for ws in connections))
        return answers, per_connection

    answers, per_connection = asyncio.run(asyncio.wait_for(scenario(), 10 * PATIENCE))
    assert answers == [f"message {n}" for n in range(TOTAL)]
    record_property("rss_kib_per_connection", round(per_connection, 1))
    print(f"\nserver RSS per idle WebSocket connection: {per_connection:.1f} KiB")
    stats = server.wait_for(lambda stats: stats["open"] == 0)
    assert stats["counts"]["echo finally"] == stats["counts"]["echo open"]
