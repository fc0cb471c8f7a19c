"""The runners' production options under real ``pserve`` processes: workers, unix sockets, TLS.

Each test starts ``pserve`` on a free port of 127.0.0.1 (or a unix socket in
its temporary directory) serving :data:`APP`, talks to it with httpx and
websockets, and stops it by PID.  Worker processes are found through
``/proc``; none may be left once ``pserve`` exited.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from operator import not_
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import ConnectionClosed

from tests.servers.test_runners import (
    BIN,
    ServerProcess,
    child_coverage_env,
    two_workers,
    worker_pids,
    write_ini,
)
from tests.support import REPO_ROOT
from tests.support.servers import HOST, PATIENCE, free_port, serving, wait_until

pytestmark = pytest.mark.servers

#: The application served: ``main`` answers who served a request and how it
#: arrived, echoes WebSocket messages, and has WebSocket views whose
#: ``on_close`` takes a minute, blocking its worker's event loop (``stuck``)
#: or not (``lingering``); ``failing`` cannot start.
APP = """\
import asyncio
import os
import time

from pyramid.config import Configurator

from aiopyramid_ng.events import ApplicationStartup
from aiopyramid_ng.websocket import WebsocketConnectionView


def whoami(request):
    return {"pid": os.getpid(), "scheme": request.scheme, "client_addr": request.client_addr}


class Echo(WebsocketConnectionView):
    async def on_message(self, message):
        await self.send(message)


class Stuck(WebsocketConnectionView):
    async def on_open(self):
        await self.send(f"welcome from {os.getpid()}")

    async def on_close(self):
        time.sleep(60)


class Lingering(WebsocketConnectionView):
    async def on_open(self):
        await self.send(f"welcome from {os.getpid()}")

    async def on_close(self):
        await asyncio.sleep(60)


def main(global_config, **settings):
    with Configurator(settings=settings) as config:
        config.include("aiopyramid_ng")
        config.add_route("whoami", "/")
        config.add_view(whoami, route_name="whoami", renderer="json")
        config.add_route("echo", "/ws/echo")
        config.add_view(Echo, route_name="echo")
        config.add_route("stuck", "/ws/stuck")
        config.add_view(Stuck, route_name="stuck")
        config.add_route("lingering", "/ws/lingering")
        config.add_view(Lingering, route_name="lingering")
        return config.make_wsgi_app()


def refuse_to_start(event):
    raise RuntimeError("the database is unreachable")


def failing(global_config, **settings):
    with Configurator(settings=settings) as config:
        config.include("aiopyramid_ng")
        config.add_subscriber(refuse_to_start, ApplicationStartup)
        config.add_route("whoami", "/")
        config.add_view(whoami, route_name="whoami", renderer="json")
        return config.make_wsgi_app()
"""
#: How long ``pserve`` may take to exit once signalled.
EXIT_WITHIN = 10.0
#: The runners that fork workers.
FORKING = ("hypercorn", "uvicorn")


@contextmanager
def pserve(
    directory: Path, server: str, ready: Callable[[], bool], app: str = "main"
) -> Iterator[ServerProcess]:
    """Serve ``app`` of :data:`APP` under ``pserve`` with the ``[server:main]`` lines ``server``.

    The block starts once ``ready()`` holds; on the way out ``pserve``'s
    process group is interrupted, unless it has exited already.
    """
    (directory / "deploy_app.py").write_text(APP)
    ini = write_ini(directory, server, app_use=f"call:deploy_app:{app}")
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": f"{directory}:{REPO_ROOT}",
        **child_coverage_env(),
    }
    log = directory / "output.log"
    with serving(
        [str(BIN / "pserve"), str(ini)],
        log,
        ready,
        env=env,
        cwd=directory,
        group=True,
        stop_signal=signal.SIGINT,
        patience=PATIENCE,
    ) as process:
        yield ServerProcess(process, log)


def answers(url: str, **client: Any) -> Callable[[], bool]:
    """A readiness check: does ``url`` answer 200, through an httpx client made with ``client``?"""

    def check() -> bool:
        try:
            with httpx.Client(timeout=5, **client) as http:
                return http.get(url).status_code == 200
        except httpx.TransportError:
            return False

    return check


def answers_on(path: Path) -> Callable[[], bool]:
    """A readiness check: does the unix socket ``path`` answer 200 at ``/``?"""

    def check() -> bool:
        # httpcore leaves the socket of a refused unix connection unclosed:
        # try the connection first.
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                return False
        transport = httpx.HTTPTransport(uds=str(path))
        return answers("http://localhost/", transport=transport)()

    return check


def exit_status(server: ServerProcess) -> int:
    try:
        return server.process.wait(timeout=EXIT_WITHIN)
    except subprocess.TimeoutExpired:
        pytest.fail(f"pserve did not exit within {EXIT_WITHIN} s:\n{server.output()}")


def running(pid: int) -> bool:
    """Is process ``pid`` alive (a zombie counts: it was not reaped)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def dead(pid: int) -> bool:
    """Has process ``pid`` stopped running (exited, reaped or not)?"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # reaped, before or while reading
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


async def served_by(url: str, requests: int) -> set[int]:
    """The PIDs that served ``requests`` concurrent requests, each on a new connection."""
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=PATIENCE, limits=limits) as client:
        responses = await asyncio.gather(*(client.get(url) for _ in range(requests)))
    assert [response.status_code for response in responses] == [200] * requests
    return {response.json()["pid"] for response in responses}


def every_worker_serves(url: str, pids: set[int]) -> set[int]:
    """Send requests until each of ``pids`` served one; return the PIDs seen."""
    seen: set[int] = set()

    def fetch() -> set[int]:
        seen.update(asyncio.run(served_by(url, 20)))
        return seen

    wait_until(fetch, f"requests served by each of {pids}", lambda seen: pids <= seen)
    assert seen <= pids
    return seen


# --- workers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FORKING)
def test_workers_share_the_socket_survive_a_kill_and_stop_cleanly(
    name: str, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://{HOST}:{port}/"
    server_lines = f"use = egg:aiopyramid_ng#{name}\nlisten = {HOST}:{port}\nworkers = 2"
    with pserve(tmp_path, server_lines, answers(url)) as server:
        parent = server.process.pid
        first = two_workers(parent)
        assert every_worker_serves(url, first) == first

        # A worker killed outright: the other one serves at once, the parent
        # logs the death and forks a replacement, which serves too.
        killed = min(first)
        os.kill(killed, signal.SIGKILL)
        # Until the signal landed, the dying worker may still accept a connection.
        wait_until(lambda: dead(killed), "the killed worker to die")
        assert killed not in asyncio.run(served_by(url, 20))
        second = wait_until(
            lambda: worker_pids(parent),
            "a replacement worker",
            lambda pids: len(pids) == 2 and killed not in pids,
        )
        assert every_worker_serves(url, second) == second
        server.wait_for_output(f"[{killed}] was killed by SIGKILL; starting another")

        async def stop_with_websockets_open() -> list[int | None]:
            websockets = [await connect(f"ws://{HOST}:{port}/ws/echo") for _ in range(6)]
            for number, websocket in enumerate(websockets):
                await websocket.send(f"hello {number}")
                assert await websocket.recv() == f"hello {number}"
            server.process.send_signal(signal.SIGTERM)  # to the parent alone
            codes = []
            for websocket in websockets:
                with pytest.raises(ConnectionClosed):
                    await websocket.recv()
                codes.append(websocket.close_code)
            return codes

        codes = asyncio.run(asyncio.wait_for(stop_with_websockets_open(), PATIENCE))
        status = exit_status(server)
    output = server.output()
    assert status == 0, output
    assert codes == [1001] * 6, output
    assert not [pid for pid in first | second if running(pid)], output
    for pid in second:
        assert f"[{pid}] exited with status 0" in output
    assert "Traceback" not in output


async def open_on_every_worker(port: int, view: str, workers: set[int]) -> list[ClientConnection]:
    """Open connections to WebSocket ``view`` until each of ``workers`` serves one."""
    opened: list[tuple[str | bytes, ClientConnection]] = []
    while {f"welcome from {pid}" for pid in workers} - {hello for hello, _ in opened}:
        websocket = await connect(f"ws://{HOST}:{port}/ws/{view}")
        opened.append((await websocket.recv(), websocket))
    return [websocket for _, websocket in opened]


@pytest.mark.parametrize("name", FORKING)
def test_a_second_signal_stops_the_workers_waiting(name: str, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://{HOST}:{port}/"
    server_lines = f"use = egg:aiopyramid_ng#{name}\nlisten = {HOST}:{port}\nworkers = 2"
    with pserve(tmp_path, server_lines, answers(url)) as server:
        parent = server.process.pid
        workers = two_workers(parent)

        async def scenario() -> int:
            # Each worker has a connection whose on_close takes a minute.
            lingering = await open_on_every_worker(port, "lingering", workers)
            server.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)  # the workers wait for on_close
            assert server.process.poll() is None
            server.process.send_signal(signal.SIGTERM)
            status = await asyncio.to_thread(exit_status, server)
            for websocket in lingering:
                await websocket.close()
            return status

        status = asyncio.run(asyncio.wait_for(scenario(), PATIENCE))
    output = server.output()
    assert status == 0, output
    assert "killed" not in output  # they stopped waiting: nothing had to be killed
    assert not [pid for pid in workers if running(pid)], output


@pytest.mark.parametrize("name", FORKING)
def test_workers_stop_when_their_parent_is_killed(name: str, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://{HOST}:{port}/"
    server_lines = f"use = egg:aiopyramid_ng#{name}\nlisten = {HOST}:{port}\nworkers = 2"
    with pserve(tmp_path, server_lines, answers(url)) as server:
        parent = server.process.pid
        workers = two_workers(parent)
        server.process.kill()
        assert server.process.wait(timeout=EXIT_WITHIN) == -signal.SIGKILL
        # Orphaned, each worker notices and shuts down by itself.
        wait_until(lambda: [pid for pid in workers if not dead(pid)], "the workers to stop", not_)


@pytest.mark.parametrize("name", FORKING)
def test_each_signal_to_the_parent_escalates_the_workers_shutdown(
    name: str, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://{HOST}:{port}/"
    server_lines = f"use = egg:aiopyramid_ng#{name}\nlisten = {HOST}:{port}\nworkers = 2"
    with pserve(tmp_path, server_lines, answers(url)) as server:
        parent = server.process.pid
        workers = two_workers(parent)

        async def scenario() -> int:
            # Every worker gets a connection whose on_close blocks its loop.
            stuck = await open_on_every_worker(port, "stuck", workers)
            for _ in range(3):
                server.process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.5)
            status = await asyncio.to_thread(exit_status, server)
            for websocket in stuck:
                await websocket.close()
            return status

        status = asyncio.run(asyncio.wait_for(scenario(), PATIENCE))
    output = server.output()
    assert status == 0, output
    assert "was killed by SIGKILL" in output
    assert not [pid for pid in workers if running(pid)], output


@pytest.mark.parametrize("name", FORKING)
def test_a_worker_that_cannot_start_stops_pserve(name: str, tmp_path: Path) -> None:
    server_lines = f"use = egg:aiopyramid_ng#{name}\nlisten = {HOST}:{free_port()}\nworkers = 2"
    (tmp_path / "deploy_app.py").write_text(APP)
    ini = write_ini(tmp_path, server_lines, app_use="call:deploy_app:failing")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{REPO_ROOT}", **child_coverage_env()}
    result = subprocess.run(
        [str(BIN / "pserve"), str(ini)],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        env=env,
        start_new_session=True,
    )
    assert result.returncode != 0, result.stderr
    assert "the database is unreachable" in result.stderr
    assert "before it served; stopping the other workers" in result.stderr
    assert "a replacement would fail the same way" in result.stderr


# --- unix sockets -----------------------------------------------------------------------------


def stale_socket(path: Path) -> None:
    """Leave a socket file at ``path``, as a server that was killed does."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))


@pytest.mark.parametrize(
    ("name", "workers"),
    [("uvicorn", 1), ("uvicorn", 2), ("hypercorn", 1), ("hypercorn", 2), ("daphne", 1)],
)
def test_runner_serves_a_unix_socket(name: str, workers: int, tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    stale_socket(path)
    server_lines = f"use = egg:aiopyramid_ng#{name}\nuds = {path}\nworkers = {workers}"
    if name == "daphne":
        server_lines = f"use = egg:aiopyramid_ng#daphne\nuds = {path}"
    with pserve(tmp_path, server_lines, answers_on(path)) as server:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as client:
            body = client.get("http://localhost/").json()
        assert body["scheme"] == "http"
        assert body["client_addr"] is None  # a unix socket has no client address

        async def talk(number: int) -> list[str | bytes]:
            uri = "ws://localhost/ws/echo"
            async with unix_connect(str(path), uri) as websocket:
                replies = []
                for word in ("one", "two"):
                    await websocket.send(f"{word} {number}")
                    replies.append(await websocket.recv())
                return replies

        async def talk_at_once() -> list[list[str | bytes]]:
            return list(await asyncio.gather(*(talk(number) for number in range(5))))

        assert asyncio.run(talk_at_once()) == [[f"one {n}", f"two {n}"] for n in range(5)]
        server.process.send_signal(signal.SIGTERM)
        status = exit_status(server)
    assert status == 0, server.output()
    if workers > 1 or name == "daphne":
        assert not path.exists()  # the parent (Twisted, for daphne) removed its socket


# --- TLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.mark.parametrize(
    ("name", "workers", "key_apart"),
    [
        ("uvicorn", 1, True),
        ("uvicorn", 2, False),
        ("hypercorn", 1, True),
        ("hypercorn", 2, True),
        ("daphne", 1, True),
        ("daphne", 1, False),
    ],
)
def test_runner_serves_tls(
    name: str, workers: int, key_apart: bool, authority: trustme.CA, tmp_path: Path
) -> None:
    # Issued by an intermediate authority: the client, which trusts the root
    # alone, verifies the chain only if the server sends the intermediate too.
    certificate = authority.create_child_ca().issue_cert(HOST)
    if key_apart:
        chain = b"".join(pem.bytes() for pem in certificate.cert_chain_pems)
        (tmp_path / "cert.pem").write_bytes(chain)
        certificate.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
        tls = f"ssl_certfile = {tmp_path / 'cert.pem'}\nssl_keyfile = {tmp_path / 'key.pem'}"
    else:
        certificate.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "both.pem"))
        tls = f"ssl_certfile = {tmp_path / 'both.pem'}"
    port = free_port()
    server_lines = f"use = egg:aiopyramid_ng#{name}\nlisten = {HOST}:{port}\n{tls}"
    if name != "daphne":
        server_lines += f"\nworkers = {workers}"
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    url = f"https://{HOST}:{port}/"
    with pserve(tmp_path, server_lines, answers(url, verify=trusting)) as server:
        assert httpx.get(url, verify=trusting).json()["scheme"] == "https"
        # A client that does not trust the authority is refused.
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(url)

        async def talk() -> str | bytes:
            async with connect(f"wss://{HOST}:{port}/ws/echo", ssl=trusting) as websocket:
                await websocket.send("over TLS")
                return await websocket.recv()

        assert asyncio.run(talk()) == "over TLS"
        server.process.send_signal(signal.SIGTERM)
        status = exit_status(server)
    assert status == 0, server.output()
