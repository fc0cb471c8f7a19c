"""Deadlines under real servers: uvicorn, hypercorn and daphne serving ``deadline_server_app``.

A WebSocket handshake whose permission check (a ``synchronize``'d
``__acl__``) outlasts the view's ``timeout=`` is refused: with the
pipeline's own ``504`` where the server offers the ``websocket.http.response``
extension (uvicorn, hypercorn), with ``403`` where it does not (daphne,
which answers any handshake closed before it was accepted so).  A
connection accepted in time is no longer subject to the deadline.  Under
uvicorn, a burst of requests over their deadline leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from tests.support.deadline_server_app import TIMEOUT
from tests.support.servers import PATIENCE, wait_until
from tests.support.websocket_servers import WsServer, each_server, running

APP = "tests.support.deadline_server_app:app"

server = each_server(APP)

#: What each server answers a handshake the deadline refused.
REFUSAL = {"uvicorn": 504, "hypercorn": 504, "daphne": 403}

#: Generous bound for "on time": far below the 5 s the slow work would take.
ON_TIME = 2.0


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, PATIENCE))


def test_a_handshake_over_its_deadline_is_refused(server: WsServer) -> None:
    async def connect() -> None:
        async with server.connect("/ws"):
            raise AssertionError("/ws was accepted")

    started = time.monotonic()
    with pytest.raises(InvalidStatus) as refusal:
        run(connect())
    took = time.monotonic() - started
    response = refusal.value.response
    assert response.status_code == REFUSAL[server.name]
    if response.status_code == 504:
        assert b"longer than its 0.3 s" in response.body
    assert took < ON_TIME
    server.wait_for_log(f"GET /ws answered 504: over its deadline of {TIMEOUT:g} s")


def test_an_accepted_connection_outlives_the_deadline(server: WsServer) -> None:
    async def scenario() -> tuple[list[str], float]:
        async with server.connect("/ws?s=0") as ws:
            started = time.monotonic()
            answers = []
            for message in ("one", "two"):
                await ws.send(message)
                answers.append(await ws.recv())
            return answers, time.monotonic() - started

    answers, lasted = run(scenario())
    assert answers == ["one", "two"]
    assert lasted > 4 * TIMEOUT  # each answer came after twice the deadline


def test_requests_over_their_deadline_under_uvicorn_leave_nothing_behind(
    tmp_path: Path,
) -> None:
    with running("uvicorn", tmp_path, APP) as uvicorn:
        burst_then_normal(uvicorn.url)


def burst_then_normal(url: str) -> None:
    """50 requests over their deadline at once, then 50 normal ones: all on time."""
    with httpx.Client(base_url=url, timeout=PATIENCE) as client:
        baseline = client.get("/stats").json()
    assert "Server.serve" in baseline["tasks"]  # the stats see every task of the loop

    async def burst() -> tuple[list[int], float]:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, timeout=PATIENCE, limits=limits) as client:
            paths = ["/sleepy", "/guarded", "/blocking"]
            started = time.monotonic()
            responses = await asyncio.gather(
                *(client.get(paths[n % len(paths)]) for n in range(50))
            )
            return [r.status_code for r in responses], time.monotonic() - started

    statuses, took = run(burst())
    assert statuses == [504] * 50
    assert took < ON_TIME

    def settled(stats: dict[str, Any]) -> bool:
        return bool(stats == baseline)

    with httpx.Client(base_url=url, timeout=PATIENCE) as client:
        wait_until(lambda: client.get("/stats").json(), "the burst to leave nothing", settled)

    async def normal() -> tuple[list[str], float]:
        async with httpx.AsyncClient(base_url=url, timeout=PATIENCE) as client:
            started = time.monotonic()
            responses = await asyncio.gather(*(client.get("/fast") for _ in range(50)))
            return [r.text for r in responses], time.monotonic() - started

    texts, took = run(normal())
    assert texts == ["fast"] * 50
    assert took < ON_TIME
