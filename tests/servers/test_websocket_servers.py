"""WebSocket views under real servers: uvicorn, hypercorn and daphne, with the websockets client.

Each server is started once for this module (see ``websocket_servers.py``).
daphne offers no ``websocket.http.response`` extension: every refused
handshake is a 403 there, where the others send the pipeline's own status.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.servers import HOST, PATIENCE
from tests.support.websocket_servers import WsServer, each_server

server = each_server()


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, PATIENCE))


def refused_status(server: WsServer, path: str, **kwargs: Any) -> int:
    async def connect() -> None:
        async with server.connect(path, **kwargs):
            raise AssertionError(f"{path} was accepted")

    with pytest.raises(InvalidStatus) as refusal:
        run(connect())
    status: int = refusal.value.response.status_code
    return status


def close_code_after(server: WsServer, path: str, text: str) -> int | None:
    """Connect to ``path``, send ``text``, expect the server to close; return its close code."""

    async def scenario() -> int | None:
        async with server.connect(path) as ws:
            await ws.send(text)
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            code: int | None = ws.close_code
            return code

    result: int | None = run(scenario())
    return result


@pytest.mark.parametrize("path", ["/ws/open", "/ws/sync"])
def test_echo_text_and_binary(server: WsServer, path: str) -> None:
    async def scenario() -> list[Any]:
        async with server.connect(path) as ws:
            answers = []
            # No empty text message: daphne drops them.
            for message in ["h\u00e9llo", b"\x00\xff" * 1000, b"last"]:
                await ws.send(message)
                answers.append(await ws.recv())
            return answers

    assert run(scenario()) == ["h\u00e9llo", b"\x00\xff" * 1000, b"last"]


def test_interleaved_connections(server: WsServer) -> None:
    async def one(number: int) -> list[Any]:
        async with server.connect("/ws/sync" if number % 2 else "/ws/open") as ws:
            answers = []
            for turn in range(5):
                await ws.send(f"{number}:{turn}")
                answers.append(await ws.recv())
                await asyncio.sleep(0)
            return answers

    async def scenario() -> list[list[Any]]:
        return await asyncio.gather(*(one(n) for n in range(100)))

    assert run(scenario()) == [[f"{n}:{turn}" for turn in range(5)] for n in range(100)]


def test_subprotocol_negotiation(server: WsServer) -> None:
    async def scenario(offered: list[str]) -> tuple[str | None, Any]:
        async with server.connect("/ws/proto", subprotocols=offered) as ws:
            return ws.subprotocol, await ws.recv()

    assert run(scenario(["x", "v1", "v2"])) == ("v1", "v1")
    assert run(scenario(["x"])) == (None, "none")


def test_permission(server: WsServer) -> None:
    assert refused_status(server, "/ws/echo") == 403

    async def scenario() -> Any:
        async with server.connect("/ws/echo", additional_headers={"X-User": "alice"}) as ws:
            await ws.send("granted")
            return await ws.recv()

    assert run(scenario()) == "granted"


def test_cross_site_origin_is_refused(server: WsServer) -> None:
    assert refused_status(server, "/ws/open", origin="http://evil.example") == 403
    server.wait_for_log("from origin 'http://evil.example'")

    async def same_site() -> Any:
        async with server.connect("/ws/open", origin=f"http://{HOST}:{server.port}") as ws:
            await ws.send("same site")
            return await ws.recv()

    assert run(same_site()) == "same site"


def test_unrouted_path_is_refused(server: WsServer) -> None:
    assert refused_status(server, "/nowhere") == (403 if server.name == "daphne" else 404)


def test_exception_closes_with_1011_and_is_logged(server: WsServer) -> None:
    assert close_code_after(server, "/ws/failing", "x") == 1011
    log = server.wait_for_log("ValueError: boom x")
    assert "Traceback" in log


def test_websocket_closed_closes_with_its_code(server: WsServer) -> None:
    assert close_code_after(server, "/ws/closer", "stop") == 4001


def test_class_view_callbacks_in_order(server: WsServer) -> None:
    key = f"order-{server.name}"

    async def scenario() -> list[Any]:
        async with server.connect(f"/ws/room?id={key}") as ws:
            answers = [await ws.recv()]
            for message in ("a", b"b"):
                await ws.send(message)
                answers.append(await ws.recv())
            return answers

    assert run(scenario()) == ["welcome", "room 'a'", "room b'b'"]
    stats = server.wait_for(lambda stats: len(stats["calls"].get(key, [])) == 4)
    # hypercorn reports every close the client starts as 1006, whatever its code.
    code = 1006 if server.name == "hypercorn" else 1000
    assert stats["calls"][key] == ["open", "message 'a'", "message b'b'", f"close {code}"]


def test_peer_disconnect_unwinds_the_views(server: WsServer) -> None:
    baseline = server.stats()
    before = baseline["counts"]

    async def scenario() -> None:
        echoing = [await server.connect("/ws/open") for _ in range(10)]
        waiting = [await server.connect("/ws/waiting") for _ in range(5)]
        for ws in echoing:
            await ws.send("ping")
            assert await ws.recv() == "ping"
        await asyncio.to_thread(
            server.wait_for,
            lambda stats: stats["counts"].get("waiting", 0) == before.get("waiting", 0) + 5,
        )
        for number, ws in enumerate(echoing + waiting):
            if number % 2:
                ws.transport.abort()  # the peer vanishes without a closing handshake
            else:
                await ws.close()

    run(scenario())

    def unwound(stats: dict[str, Any]) -> bool:
        counts = stats["counts"]
        return bool(
            counts.get("echo finally", 0) >= before.get("echo finally", 0) + 10
            and counts.get("waiting finally", 0) == before.get("waiting finally", 0) + 5
            and stats["open"] == 0
        )

    stats = server.wait_for(unwound)
    assert stats["greenlets"] == baseline["greenlets"]
