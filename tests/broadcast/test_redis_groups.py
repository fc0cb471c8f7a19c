"""Groups across processes through a real Redis, from a view to the members of another process.

Two applications (``tests/websocket/groups_app.py``), each served by uvicorn
in a thread of its own with its own loop and hub, stand for two worker
processes sharing ``aiopyramid_ng.broadcast.url``; their members are
``websockets`` clients.  Redis is then stopped and restarted under them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from aiopyramid_ng.asgi import make_asgi_app
from tests.support.redis import RedisServer, running_redis
from tests.support.servers import uvicorn_thread
from tests.websocket.groups_app import hub, make_app

pytestmark = pytest.mark.servers

#: Upper bound for anything to happen; reached only if something hangs.
PATIENCE = 15.0
TIMEOUT = 1.0


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path) as server:
        yield server


@contextmanager
def process(redis_url: str) -> Iterator[str]:
    """One "worker process" of the application, on Redis; yields its base URL."""
    router = make_app(
        **{"aiopyramid_ng.broadcast.url": redis_url, "aiopyramid_ng.broadcast.timeout": TIMEOUT}
    )
    with uvicorn_thread(make_asgi_app(router)) as url:
        yield url
    assert hub(router).groups() == {}


async def member(url: str) -> ClientConnection:
    client = await connect(
        url.replace("http://", "ws://") + "/ws/member?group=room", open_timeout=PATIENCE
    )
    assert await client.recv() == "joined"
    return client


def test_members_of_two_processes_receive_every_broadcast_once_and_in_order(
    redis_server: RedisServer,
) -> None:
    with process(redis_server.url) as one, process(redis_server.url) as two:

        async def scenario() -> None:
            members = [await member(url) for url in (one, two) for _ in range(5)]
            async with httpx.AsyncClient(timeout=PATIENCE) as http:
                said = await asyncio.gather(
                    http.post(f"{one}/say?group=room&prefix=one&count=30"),
                    http.post(f"{two}/say?group=room&prefix=two&count=30"),
                )
            assert [response.status_code for response in said] == [204, 204]
            for client in members:
                received = [await asyncio.wait_for(client.recv(), PATIENCE) for _ in range(60)]
                for name in ("one", "two"):
                    sent = [f"{name}{number}:" for number in range(30)]
                    assert [m for m in received if str(m).startswith(name)] == sent
            # A member's own message goes round through Redis to everyone.
            await members[0].send("from a member")
            for client in members:
                assert await asyncio.wait_for(client.recv(), PATIENCE) == "from a member"
            for client in members:
                await client.close()

        asyncio.run(scenario())


def test_while_redis_is_down_requests_and_connections_go_on_and_delivery_resumes_after(
    redis_server: RedisServer,
) -> None:
    with process(redis_server.url) as one, process(redis_server.url) as two:

        async def scenario() -> tuple[float, float]:
            here, there = await member(one), await member(two)
            loop = asyncio.get_running_loop()
            async with httpx.AsyncClient(timeout=PATIENCE) as http:
                redis_server.stop()
                began = loop.time()
                refused = await http.post(f"{two}/say?group=room&prefix=lost")
                failed_after = loop.time() - began
                assert refused.status_code == 500
                # Nothing else waits for Redis: plain requests, open connections.
                assert (await http.get(f"{one}/tasks")).status_code == 200
                await asyncio.wait_for(here.ping(), TIMEOUT)
                await asyncio.wait_for(there.ping(), TIMEOUT)
                redis_server.start()
                began = loop.time()
                # Until a process has subscribed again, its members miss what
                # is broadcast: broadcast until the members of both have one.
                reached: set[ClientConnection] = set()
                attempt = 0
                while reached != {here, there}:
                    assert loop.time() - began < PATIENCE, "delivery did not resume"
                    response = await http.post(f"{two}/say?group=room&prefix=back{attempt}")
                    attempt += 1
                    if response.status_code != 204:
                        continue
                    for client in {here, there} - reached:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(client.recv(), 0.1)
                            reached.add(client)
                resumed_after = loop.time() - began
                assert (await http.post(f"{one}/say?group=room&prefix=end")).status_code == 204
            for client in (here, there):
                async with asyncio.timeout(PATIENCE):
                    while await client.recv() != "end0:":
                        pass
                await client.close()
            return failed_after, resumed_after

        failed_after, resumed_after = asyncio.run(scenario())
    print(f"\nbroadcast refused after {failed_after:.3f} s; resumed {resumed_after:.2f} s after")
    assert failed_after < TIMEOUT + 0.5
    assert resumed_after < 5.0 + TIMEOUT + 0.5
