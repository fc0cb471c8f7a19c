"""Stopping a ``pserve`` runner with WebSocket connections open: every ``on_close`` runs.

Each runner closes the application's connections as soon as ``SIGTERM`` or
``SIGINT`` arrives, before the server's own shutdown (uvicorn's would send
1012, hypercorn's waits for its graceful timeout, daphne's leaves the views
suspended): the clients get 1001 ("going away"), 1000 from daphne, every
view's ``on_close`` runs, and ``pserve`` exits with status 0.  The servers
started without the runners are in ``test_websocket_shutdown.py``.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from aiopyramid_ng.websocket.tracking import SHUTDOWN_TIMEOUT
from tests.servers.test_runners import (
    BIN,
    ServerProcess,
    child_coverage_env,
    server_process,
    write_ini,
)
from tests.support import REPO_ROOT
from tests.support.servers import HOST, PATIENCE, free_port, wait_until

pytestmark = pytest.mark.servers

#: The applications: ``main``, the WebSocket test application, and ``lingering``,
#: whose view takes a minute to unwind; ``on_close`` calls are logged next to them.
APP = """\
import asyncio
from pathlib import Path

from pyramid.config import Configurator

from aiopyramid_ng.websocket import WebsocketConnectionView
from tests.support.websocket_app import make_router

CLOSE_LOG = Path(__file__).with_name("close.log")


def main(global_config, **settings):
    return make_router(**{"ws_tests.close_log": str(CLOSE_LOG)})


class Lingering(WebsocketConnectionView):
    async def on_open(self):
        await self.send("welcome")

    async def on_close(self):
        with CLOSE_LOG.open("a") as log:
            log.write("lingering\\n")
        await asyncio.sleep(60)


def lingering(global_config, **settings):
    with Configurator() as config:
        config.include("aiopyramid_ng")
        config.add_route("lingering", "/ws/lingering")
        config.add_view(Lingering, route_name="lingering")
        config.add_route("page", "/page")
        config.add_view(lambda request: request.response, route_name="page")
        return config.make_wsgi_app()
"""
#: What each runner's clients are told: daphne lets an application close only
#: with 1000 or 3000-4999.
CLOSE_CODES = {"uvicorn": 1001, "hypercorn": 1001, "daphne": 1000}
CONNECTIONS = 5
#: How long ``pserve`` may take to exit once signalled.
EXIT_WITHIN = 5.0


@contextmanager
def pserve(name: str, app: str, directory: Path) -> Iterator[tuple[ServerProcess, int]]:
    """Serve ``app`` of :data:`APP` with runner ``name`` under ``pserve``; yield it and its port."""
    (directory / "shutdown_app.py").write_text(APP)
    port = free_port()
    ini = write_ini(
        directory,
        f"use = egg:aiopyramid_ng#{name}\nlisten = {HOST}:{port}",
        app_use=f"call:shutdown_app:{app}",
    )
    env = {"PYTHONPATH": f"{directory}:{REPO_ROOT}", **child_coverage_env()}
    url = f"http://{HOST}:{port}/page"
    with server_process([str(BIN / "pserve"), str(ini)], directory, url, env) as server:
        yield server, port


def exit_status(server: ServerProcess) -> int:
    """Wait up to :data:`EXIT_WITHIN` seconds for ``pserve`` to exit; return its status."""
    try:
        return server.process.wait(timeout=EXIT_WITHIN)
    except subprocess.TimeoutExpired:
        pytest.fail(f"pserve did not exit within {EXIT_WITHIN} s:\n{server.output()}")


async def welcomed(url: str) -> ClientConnection:
    websocket = await connect(url)
    assert await websocket.recv() == "welcome"
    return websocket


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
@pytest.mark.parametrize("name", sorted(CLOSE_CODES))
def test_runner_shutdown_closes_websockets_and_runs_on_close(
    name: str, stop_signal: signal.Signals, tmp_path: Path
) -> None:
    with pserve(name, "main", tmp_path) as (server, port):

        async def scenario() -> list[int | None]:
            rooms = [
                await welcomed(f"ws://{HOST}:{port}/ws/room?id=r{number}")
                for number in range(CONNECTIONS)
            ]
            server.process.send_signal(stop_signal)
            codes = []
            for room in rooms:
                with pytest.raises(ConnectionClosed):
                    await room.recv()
                codes.append(room.close_code)
            return codes

        codes = asyncio.run(asyncio.wait_for(scenario(), PATIENCE))
        status = exit_status(server)
    output = server.output()
    assert codes == [CLOSE_CODES[name]] * CONNECTIONS, output
    assert status == 0, output
    # on_close runs as the view unwinds, before the close is sent.
    closed = sorted((tmp_path / "close.log").read_text().splitlines())
    assert closed == [f"r{number} close None" for number in range(CONNECTIONS)]
    for error in ("Traceback", "ERROR", "1012"):
        assert error not in output


@pytest.mark.parametrize("name", sorted(CLOSE_CODES))
def test_a_second_signal_stops_waiting_for_websockets(name: str, tmp_path: Path) -> None:
    close_log = tmp_path / "close.log"
    with pserve(name, "lingering", tmp_path) as (server, port):

        async def scenario() -> int:
            async with await welcomed(f"ws://{HOST}:{port}/ws/lingering"):
                server.process.send_signal(signal.SIGTERM)
                await asyncio.to_thread(wait_until, close_log.exists, "on_close to start")
                # The view would unwind in a minute; without the second signal
                # the runner would wait SHUTDOWN_TIMEOUT seconds for it.
                server.process.send_signal(signal.SIGTERM)
                return await asyncio.to_thread(exit_status, server)

        status = asyncio.run(asyncio.wait_for(scenario(), PATIENCE))
    assert SHUTDOWN_TIMEOUT > EXIT_WITHIN
    assert status == 0, server.output()
