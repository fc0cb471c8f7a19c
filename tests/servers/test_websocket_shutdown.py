"""Stopping a server with WebSocket connections open: every view unwinds, ``on_close`` runs.

What the client is told depends on the server, each checked in its source:

* uvicorn closes every connection itself with 1012 ("service restart")
  before the lifespan shutdown, and hands the application a disconnect;
* hypercorn cancels the application once its graceful timeout is over; the
  view unwinds and the connection closes with 1001 ("going away");
* daphne 4.2 means to cancel the applications before it stops, but its
  ``kill_all_applications`` fails with a ``KeyError`` on the HTTP connection a
  WebSocket was upgraded from, and the process exits with the views still
  suspended: the client sees 1006 and ``on_close`` never runs.  Pinned here so
  a fixed daphne shows up; the cancellation daphne intends is tested
  in-process (``test_server_cancelling_the_connection_closes_it_with_1001``:
  1001, which daphne would send as 1000 since it lets applications send only
  1000 and 3000-4999).

Each test stops its own server: it is started once for this module.
"""

from __future__ import annotations

import asyncio

import pytest
from websockets.exceptions import ConnectionClosed

from tests.support.servers import PATIENCE
from tests.support.websocket_servers import WsServer, each_server

CLOSE_CODES = {"uvicorn": 1012, "hypercorn": 1001, "daphne": 1006}


server = each_server()


def test_server_shutdown_closes_connections_and_runs_on_close(server: WsServer) -> None:
    async def scenario() -> list[int | None]:
        rooms = [await server.connect(f"/ws/room?id=r{n}") for n in range(3)]
        for room in rooms:
            assert await room.recv() == "welcome"
        waiting = await server.connect("/ws/waiting")
        await asyncio.to_thread(server.wait_for, lambda stats: stats["counts"].get("waiting") == 1)
        await asyncio.to_thread(server.stop)
        codes = []
        for ws in [*rooms, waiting]:
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            codes.append(ws.close_code)
        return codes

    codes = asyncio.run(asyncio.wait_for(scenario(), PATIENCE))
    assert codes == [CLOSE_CODES[server.name]] * 4
    log = server.log_text()
    if server.name == "daphne":
        assert not (server.directory / "close.log").exists()
        return
    closed = sorted((server.directory / "close.log").read_text().splitlines())
    # uvicorn's disconnect reaches on_close; with hypercorn on_close runs as
    # the view unwinds from the cancellation, before the close is sent.
    code = 1012 if server.name == "uvicorn" else None
    assert closed == [f"r{n} close {code}" for n in range(3)]
    for error in ("failed; closing", "Error after", "Error during"):
        assert error not in log  # hypercorn logs its own cancelled reader, not ours
