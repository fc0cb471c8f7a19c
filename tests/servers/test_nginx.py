"""nginx in front of ``pserve`` on a unix socket with two workers, as the deployment docs show.

The site configuration is ``docs/deploy/nginx-site.conf``, the very file the
docs include, with its socket path and ``listen`` line replaced by the
test's socket and a free port of 127.0.0.1.  A minimal main configuration
around it keeps nginx (Debian's ``nginx`` package) in the test's directory:
its pid file, logs and temporary files, no root paths.  The examples are
served unchanged: ``hello`` (JSON, a plain view, server-sent events, a
WebSocket echo) and ``chat`` (its room over Redis, so that members on both
workers hear each other).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.servers.test_runner_deployment import answers_on, exit_status, running
from tests.servers.test_runners import BIN, ServerProcess, two_workers, write_ini
from tests.support import REPO_ROOT
from tests.support.redis import running_redis
from tests.support.servers import HOST, PATIENCE, free_port, serving, wait_until

pytestmark = pytest.mark.servers

NGINX = Path("/usr/sbin/nginx")
SITE = REPO_ROOT / "docs" / "deploy" / "nginx-site.conf"
#: What the test replaces in the site configuration.
SITE_SOCKET = "unix:/run/hello/app.sock"
SITE_LISTEN = "listen 80;"

MAIN = """\
{user}
daemon off;
worker_processes 1;
pid {here}/nginx.pid;
error_log {here}/error.log info;
events {{
    worker_connections 512;
}}
http {{
    access_log off;
    client_body_temp_path {here}/client_body;
    proxy_temp_path {here}/proxy;
    fastcgi_temp_path {here}/fastcgi;
    uwsgi_temp_path {here}/uwsgi;
    scgi_temp_path {here}/scgi;
    include {here}/site.conf;
}}
"""


def nginx_configuration(directory: Path, socket: Path, port: int) -> Path:
    """Write the docs' site configuration, pointed at ``socket`` and ``port``, and a main one."""
    site = SITE.read_text()
    assert SITE_SOCKET in site and SITE_LISTEN in site, "the docs' site configuration changed"
    site = site.replace(SITE_SOCKET, f"unix:{socket}")
    site = site.replace(SITE_LISTEN, f"listen {HOST}:{port};")
    (directory / "site.conf").write_text(site)
    # As root, nginx's workers would switch to "nobody", who cannot enter
    # the test's private directory to reach the socket.
    user = "user root;" if os.geteuid() == 0 else ""
    main = directory / "nginx.conf"
    main.write_text(MAIN.format(user=user, here=directory))
    return main


def port_answers(port: int) -> bool:
    try:
        return httpx.get(f"http://{HOST}:{port}/", timeout=5).status_code < 500
    except httpx.TransportError:
        return False


@contextmanager
def deployed(directory: Path, app: str, settings: str = "") -> Iterator[tuple[str, ServerProcess]]:
    """Serve example ``app`` with ``pserve`` on a unix socket, 2 workers, behind nginx.

    Yields nginx's URL and the ``pserve`` process.
    """
    if not NGINX.exists():
        # As for Chromium: .ci/run installs it and fails if it cannot.
        pytest.skip(
            f"{NGINX} is absent (on Debian: apt-get install nginx); the deployment behind "
            "nginx was not tested"
        )
    socket = directory / "app.sock"
    server_lines = (
        f"use = egg:aiopyramid_ng#uvicorn\nuds = {socket}\nworkers = 2\n"
        "# Only nginx can reach the socket: trust the X-Forwarded-* headers it sets.\n"
        "forwarded_allow_ips = *"
    )
    ini = write_ini(directory, server_lines, f"egg:{app}", settings)
    port = free_port()
    main = nginx_configuration(directory, socket, port)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with (
        serving(
            [str(BIN / "pserve"), str(ini)],
            directory / "pserve.log",
            answers_on(socket),
            env=env,
            cwd=directory,
            group=True,
            stop_signal=signal.SIGINT,
            patience=PATIENCE,
        ) as pserve,
        serving(
            [str(NGINX), "-p", str(directory), "-c", str(main), "-e", str(directory / "error.log")],
            directory / "nginx.log",
            lambda: port_answers(port),
            cwd=directory,
            group=True,
            stop_signal=signal.SIGTERM,
            patience=PATIENCE,
        ),
    ):
        yield f"http://{HOST}:{port}", ServerProcess(pserve, directory / "pserve.log")


def stop_pserve(server: ServerProcess, workers: set[int]) -> None:
    server.process.send_signal(signal.SIGTERM)
    status = exit_status(server)
    output = server.output()
    assert status == 0, output
    assert not [pid for pid in workers if running(pid)], output
    assert "Traceback" not in output


# --- the hello example ------------------------------------------------------------------------


async def pids_of(url: str, requests: int) -> set[int]:
    """The worker PIDs that served ``requests`` concurrent requests of the plain view."""
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=PATIENCE, limits=limits) as client:
        responses = await asyncio.gather(*(client.get(f"{url}/blocking") for _ in range(requests)))
    assert [response.status_code for response in responses] == [200] * requests
    return {response.json()["pid"] for response in responses}


def test_hello_behind_nginx_on_a_unix_socket_with_two_workers(tmp_path: Path) -> None:
    with deployed(tmp_path, "hello") as (url, server):
        workers = two_workers(server.process.pid)
        seen: set[int] = set()

        def both() -> set[int]:
            seen.update(asyncio.run(pids_of(url, 20)))
            return seen

        assert wait_until(both, "both workers serving", lambda s: workers <= s) == workers

        home = httpx.get(f"{url}/", timeout=PATIENCE)
        assert home.status_code == 200
        assert home.headers["content-type"].startswith("application/json")

        # Server-sent events through nginx: each event arrives as it is sent.
        arrivals: list[tuple[float, dict[str, int]]] = []
        with httpx.stream(
            "GET", f"{url}/events", params={"count": 4, "interval": 0.3}, timeout=PATIENCE
        ) as events:
            assert events.status_code == 200
            started = time.monotonic()
            for line in events.iter_lines():
                if line.startswith("data: "):
                    arrivals.append((time.monotonic() - started, json.loads(line[6:])))
        assert [event for _, event in arrivals] == [{"n": n, "of": 4} for n in range(4)]
        # Buffered, all four would arrive together at the end (0.9 s).
        assert arrivals[0][0] < 0.45 < arrivals[-1][0], arrivals

        async def echo(number: int) -> list[str | bytes]:
            async with connect(f"{url.replace('http', 'ws')}/ws/echo") as websocket:
                replies = []
                for word in ("one", "two"):
                    await websocket.send(f"{word} {number}")
                    replies.append(await websocket.recv())
                return replies

        async def echo_at_once() -> list[list[str | bytes]]:
            return list(await asyncio.gather(*(echo(n) for n in range(8))))

        assert asyncio.run(echo_at_once()) == [[f"one {n}", f"two {n}"] for n in range(8)]
        # The client's address came through X-Forwarded-For: a unix socket has none.
        assert f'{HOST}:0 - "GET /blocking HTTP/1.1" 200' in server.output()
        stop_pserve(server, workers)


# --- the chat example, over Redis --------------------------------------------------------------


#: Members joining at once.
BATCH = 8


def unix_peers(path: Path) -> set[int]:
    """Inodes of the server ends of connections accepted on the unix socket ``path``."""
    inodes = set()
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        # Num RefCount Protocol Flags Type St Inode Path; St 03 is "connected".
        if len(fields) == 8 and fields[7] == str(path) and fields[5] == "03":
            inodes.add(int(fields[6]))
    return inodes


def connections_of(pid: int, peers: set[int]) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and int(target[8:-1]) in peers:
            count += 1
    return count


def test_the_chat_behind_nginx_reaches_members_on_both_workers(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    with running_redis(tmp_path / "redis") as redis:
        settings = (
            f"chat.secret = a-secret-for-this-test\naiopyramid_ng.broadcast.url = {redis.url}\n"
        )
        with deployed(tmp_path, "chat", settings) as (url, server):
            workers = two_workers(server.process.pid)
            socket = tmp_path / "app.sock"

            async def scenario() -> None:
                members: list[tuple[str, ClientConnection]] = []

                async def login(name: str) -> tuple[str, ClientConnection]:
                    async with httpx.AsyncClient(timeout=PATIENCE) as client:
                        response = await client.post(f"{url}/login", data={"name": name})
                    assert response.status_code == 303
                    cookie = response.headers["set-cookie"].split(";")[0]
                    websocket = await connect(
                        f"{url.replace('http', 'ws')}/ws", additional_headers={"Cookie": cookie}
                    )
                    return name, websocket

                async def next_of(member: ClientConnection, kind: str) -> dict[str, str]:
                    """The member's next event of ``kind``, past others."""
                    while (event := json.loads(await member.recv()))["kind"] != kind:
                        pass
                    return event  # type: ignore[no-any-return]

                async def hears_of(member: ClientConnection, names: set[str]) -> None:
                    waiting = set(names)
                    while waiting:
                        waiting.discard((await next_of(member, "joined"))["user"])

                try:
                    # Sequential connections all go to whichever worker the
                    # kernel wakes first (both wait on the one socket), so
                    # members join in batches at once, until each worker
                    # holds at least two of them.
                    while True:
                        batch = [f"user{len(members) + n}" for n in range(BATCH)]
                        newcomers = await asyncio.gather(*map(login, batch))
                        # Those already in the room hear of every newcomer; a
                        # newcomer, of itself (later ones of the batch too, or not).
                        await asyncio.gather(
                            *(hears_of(ws, set(batch)) for _, ws in members),
                            *(hears_of(ws, {name}) for name, ws in newcomers),
                        )
                        members += newcomers
                        peers = unix_peers(socket)
                        held = {pid: connections_of(pid, peers) for pid in workers}
                        if all(count >= 2 for count in held.values()):
                            break
                        assert len(members) < 40, f"members each worker held: {held}"

                    for number in range(5):
                        for name, websocket in members:
                            await websocket.send(f"{name} says {number}")
                    expected = [
                        {"kind": "message", "user": name, "text": f"{name} says {number}"}
                        for number in range(5)
                        for name, _ in members
                    ]
                    for _, websocket in members:
                        received = [await next_of(websocket, "message") for _ in expected]
                        # Exactly once each, and each sender's messages in order.
                        assert sorted(map(json.dumps, received)) == sorted(
                            map(json.dumps, expected)
                        )
                        for name, _ in members:
                            mine = [m["text"] for m in received if m["user"] == name]
                            assert mine == [f"{name} says {n}" for n in range(5)]
                finally:
                    await asyncio.gather(*(websocket.close() for _, websocket in members))

            asyncio.run(asyncio.wait_for(scenario(), PATIENCE))
            stop_pserve(server, workers)
