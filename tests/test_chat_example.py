"""The chat example (``examples/chat``) without a browser: in-process and over uvicorn.

``tests/servers/test_websocket_browser.py`` drives the same example in
Chromium; these tests log in over HTTP and talk to the room with
``TestApp``'s WebSocket client, and with ``websockets`` clients over uvicorn.
The application is loaded from the shipped ``development.ini``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from paste.deploy import loadapp
from websockets.asyncio.client import connect

from aiopyramid_ng.asgi import make_asgi_app
from aiopyramid_ng.exceptions import HandshakeRefused
from aiopyramid_ng.testing import TestApp
from tests.support import REPO_ROOT
from tests.support.servers import PATIENCE, uvicorn_thread

INI = REPO_ROOT / "examples" / "chat" / "development.ini"


def load_chat() -> Any:
    return loadapp(f"config:{INI}")


def login_cookie(set_cookies: list[str]) -> str:
    """The ``Cookie`` header a browser would send after the login's ``Set-Cookie`` headers."""
    return next(header.split(";")[0] for header in set_cookies if header.startswith("auth_tkt="))


def joined(user: str) -> dict[str, str]:
    return {"kind": "joined", "user": user}


def test_the_room_in_process() -> None:
    with TestApp(load_chat(), timeout=PATIENCE) as app:
        cookies = {}
        for name in ("alice", "bob"):
            response = app.post("/login", {"name": name}, status=303)
            cookies[name] = login_cookie(response.headers.getall("Set-Cookie"))
            app.reset()
        alice = app.websocket_connect("/ws", headers={"Cookie": cookies["alice"]})
        assert alice.receive_json() == joined("alice")
        bob = app.websocket_connect("/ws", headers={"Cookie": cookies["bob"]})
        for member in (alice, bob):
            assert member.receive_json() == joined("bob")
        alice.send_text("hello from alice")
        bob.send_bytes(("b" * 600).encode())
        for member in (alice, bob):
            assert member.receive_json() == {
                "kind": "message",
                "user": "alice",
                "text": "hello from alice",
            }
            assert member.receive_json() == {"kind": "message", "user": "bob", "text": "b" * 500}
        bob.close()
        assert alice.receive_json() == {"kind": "left", "user": "bob"}
        alice.close()
        with pytest.raises(HandshakeRefused) as refused:
            app.websocket_connect("/ws")
        assert refused.value.status == 403


@pytest.fixture
def server_url() -> Iterator[str]:
    with uvicorn_thread(make_asgi_app(load_chat())) as url:
        yield url


def test_the_room_over_uvicorn(server_url: str) -> None:
    names = [f"user{n}" for n in range(20)]

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=server_url, timeout=PATIENCE) as http:
            cookies = {}
            for name in names:
                response = await http.post("/login", data={"name": name})
                cookies[name] = login_cookie(response.headers.get_list("set-cookie"))
                http.cookies.clear()
        ws_url = server_url.replace("http://", "ws://") + "/ws"
        members = []
        for name in names:
            members.append(await connect(ws_url, additional_headers={"Cookie": cookies[name]}))
            for member in members:
                assert json.loads(await member.recv()) == joined(name)
        for name, member in zip(names, members, strict=True):
            await member.send(f"{name} says hi")
        for member in members:
            said = [json.loads(await member.recv()) for _ in names]
            assert sorted(event["text"] for event in said) == sorted(f"{n} says hi" for n in names)
        # They leave one after the other: each sees every earlier departure, in order.
        for number, member in enumerate(members):
            departures = [json.loads(await member.recv()) for _ in range(number)]
            assert departures == [{"kind": "left", "user": name} for name in names[:number]]
            await member.close()

    asyncio.run(asyncio.wait_for(scenario(), PATIENCE))
