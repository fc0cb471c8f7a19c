"""WebSocket groups over a real Redis, across ``pserve`` workers and servers, with faults.

Each test starts Debian's ``redis-server`` (``tests/support/redis.py``) and
``pserve`` processes serving :data:`APP`, whose members join one group and
hear every broadcast, and talks to them with ``websockets`` and httpx.  A
member learns on opening which worker process serves it, so a test knows
that its members are spread over every process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.servers.test_runners import ServerProcess, two_workers, worker_pids, write_ini
from tests.support import REPO_ROOT
from tests.support.redis import running_redis
from tests.support.servers import HOST, PATIENCE, free_port, serving, wait_until

pytestmark = pytest.mark.servers

BIN = Path(sys.executable).parent

APP = """\
import os

from pyramid.config import Configurator
from pyramid.response import Response

from aiopyramid_ng.websocket import WebsocketMapper


async def member(ws):
    await ws.join("room")
    await ws.send(f"pid {os.getpid()}")
    while await ws.recv() is not None:
        pass


async def say(request):
    await request.broadcast("room", request.text)
    return Response(str(os.getpid()))


def main(global_config, **settings):
    with Configurator(settings=settings) as config:
        config.include("aiopyramid_ng")
        config.add_route("member", "/member")
        config.add_view(member, route_name="member", mapper=WebsocketMapper)
        config.add_route("say", "/say")
        config.add_view(say, route_name="say", request_method="POST")
        return config.make_wsgi_app()
"""


def says_hello(port: int) -> bool:
    try:
        return httpx.post(f"http://{HOST}:{port}/say", content="ping", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def pserve(directory: Path, redis: str, workers: int) -> Iterator[tuple[int, ServerProcess]]:
    """``pserve`` of :data:`APP` with ``workers`` workers on a free port; yield the port."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "groups_app.py").write_text(APP)
    port = free_port()
    ini = write_ini(
        directory,
        f"use = egg:aiopyramid_ng#uvicorn\nlisten = {HOST}:{port}\nworkers = {workers}",
        "call:groups_app:main",
        f"aiopyramid_ng.broadcast.url = {redis}\naiopyramid_ng.broadcast.queue_size = 256",
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": f"{directory}:{REPO_ROOT}"}
    log = directory / "pserve.log"
    with serving(
        [str(BIN / "pserve"), str(ini)],
        log,
        lambda: says_hello(port),
        env=env,
        cwd=directory,
        patience=PATIENCE,
    ) as process:
        yield port, ServerProcess(process, log)


async def member(port: int) -> tuple[int, ClientConnection]:
    """A member of the room on ``port``, and the PID of the process serving it."""
    websocket = await connect(f"ws://{HOST}:{port}/member", open_timeout=PATIENCE)
    while True:
        greeting = await asyncio.wait_for(websocket.recv(), PATIENCE)
        assert isinstance(greeting, str)
        if greeting.startswith("pid "):  # not a broadcast that arrived first
            return int(greeting.split()[1]), websocket


async def say(client: httpx.AsyncClient, port: int, text: str) -> None:
    response = await client.post(f"http://{HOST}:{port}/say", content=text)
    assert response.status_code == 200


async def heard(websocket: ClientConnection, prefix: str, count: int) -> list[str]:
    """The next ``count`` messages starting with ``prefix`` (the readiness pings aside)."""
    found: list[str] = []
    while len(found) < count:
        message = await asyncio.wait_for(websocket.recv(), PATIENCE)
        assert isinstance(message, str)
        if message.startswith(prefix):
            found.append(message)
    return found


def test_a_thousand_members_over_two_workers_and_a_second_server(tmp_path: Path) -> None:
    with ExitStack() as stack:
        redis = stack.enter_context(running_redis(tmp_path))
        first, first_server = stack.enter_context(pserve(tmp_path / "first", redis.url, 2))
        second, _ = stack.enter_context(pserve(tmp_path / "second", redis.url, 1))
        workers = two_workers(first_server.process.pid)

        async def scenario() -> None:
            gate = asyncio.Semaphore(50)

            async def joined(number: int) -> tuple[int, ClientConnection]:
                async with gate:
                    return await member(first if number % 3 else second)

            members = await asyncio.gather(*(joined(n) for n in range(1000)))
            spread = Counter(pid for pid, _ in members)
            assert workers <= set(spread), spread  # both workers of the first server
            assert len(spread) == 3, spread  # and the second server
            async with httpx.AsyncClient(timeout=PATIENCE) as client:
                for number in range(20):
                    # Alternate the servers the messages are published through.
                    await say(client, first if number % 2 else second, f"message {number}")
            expected = [f"message {n}" for n in range(20)]
            received = await asyncio.gather(*(heard(ws, "message ", 20) for _, ws in members))
            # Each member: every message exactly once, in the order published.
            assert all(messages == expected for messages in received)
            await asyncio.gather(*(ws.close() for _, ws in members))

        asyncio.run(asyncio.wait_for(scenario(), 4 * PATIENCE))


def test_a_worker_killed_leaves_the_others_hearing(tmp_path: Path) -> None:
    with ExitStack() as stack:
        redis = stack.enter_context(running_redis(tmp_path))
        port, server = stack.enter_context(pserve(tmp_path / "server", redis.url, 2))
        workers = two_workers(server.process.pid)

        async def scenario() -> None:
            members: list[tuple[int, ClientConnection]] = []
            # New members until each worker serves at least three of them.
            while not all(sum(pid == worker for pid, _ in members) >= 3 for worker in workers):
                members.append(await member(port))
                assert len(members) < 200, "the kernel kept every member on one worker"
            killed = min(workers)
            os.kill(killed, signal.SIGKILL)
            for pid, websocket in members:
                if pid == killed:
                    with pytest.raises(ConnectionClosed):
                        await asyncio.wait_for(websocket.recv(), PATIENCE)
            survivors = [ws for pid, ws in members if pid != killed]
            async with httpx.AsyncClient(timeout=PATIENCE) as client:
                started = time.monotonic()
                for number in range(5):
                    await say(client, port, f"after {number}")
                # The replacement worker joins in; every survivor heard everything.
                replacement = wait_until(
                    lambda: worker_pids(server.process.pid),
                    "a replacement worker",
                    lambda p: len(p) == 2 and killed not in p,
                )
                assert killed not in replacement
            expected = [f"after {n}" for n in range(5)]
            received = await asyncio.gather(*(heard(ws, "after ", 5) for ws in survivors))
            assert all(messages == expected for messages in received)
            assert time.monotonic() - started < PATIENCE
            await asyncio.gather(*(ws.close() for ws in survivors))

        asyncio.run(asyncio.wait_for(scenario(), 2 * PATIENCE))
        server.wait_for_output(f"[{min(workers)}] was killed by SIGKILL; starting another")
