"""The ASGI adapter under real servers: uvicorn, hypercorn and daphne.

Each server runs the application of ``tests/support/asgi_server_app.py`` in a
subprocess, started once per module and server, behind ``--root-path
/prefix``, and is talked to over 127.0.0.1 with httpx and raw sockets.
Whatever happened inside the server is read back from ``/stats``.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.support import REPO_ROOT
from tests.support.asgi_app import FILE_CONTENT, SERVER_MAX_BODY_SIZE
from tests.support.servers import (
    HOST,
    PATIENCE,
    accepts_connections,
    free_port,
    serving,
    wait_until,
)

ROOT_PATH = "/prefix"


def _command(name: str, port: int) -> list[str]:
    app = "tests.support.asgi_server_app:app"
    if name == "uvicorn":
        return [
            "-m",
            "uvicorn",
            app,
            "--host",
            HOST,
            "--port",
            str(port),
            "--root-path",
            ROOT_PATH,
            "--lifespan",
            "on",
            "--log-level",
            "warning",
        ]
    if name == "hypercorn":
        return ["-m", "hypercorn", app, "--bind", f"{HOST}:{port}", "--root-path", ROOT_PATH]
    return ["-m", "daphne", "-b", HOST, "-p", str(port), "--root-path", ROOT_PATH, app]


@dataclass
class Server:
    name: str
    port: int
    directory: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def lifespan(self) -> bool:
        return self.name != "daphne"  # daphne does not speak the lifespan protocol

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=PATIENCE, **kwargs)

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.get("/stats").json()
        return stats

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = self.stats()["counts"]
        return counts

    def wait_for(self, condition: Callable[[dict[str, int]], bool]) -> dict[str, int]:
        """Poll ``/stats`` until ``condition(counts)`` holds."""
        return wait_until(self.counts, "a condition on the counts", condition)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module", params=["uvicorn", "hypercorn", "daphne"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp(request.param)
    port = free_port()
    log = directory / "server.log"
    server = Server(request.param, port, directory, log)
    env = {"ASGI_TESTS_DIR": str(directory), "PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}
    argv = [sys.executable, *_command(request.param, port)]
    with serving(argv, log, accepts_connections(port), env=env, cwd=REPO_ROOT):
        yield server
    if server.lifespan:
        # The shutdown subscriber ran (in the server process) before it exited.
        assert (directory / "shutdown").read_text() == "shutdown", log.read_text()


def _raw_request(server: Server, head: str) -> socket.socket:
    connection = socket.create_connection((HOST, server.port), timeout=PATIENCE)
    connection.sendall(head.encode("latin-1") + b"\r\n\r\n")
    return connection


# -- plain requests -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "text"),
    [("/sync", "sync GET"), ("/async", "async GET"), ("/greenlet", "greenlet greenlet ")],
)
def test_views(server: Server, path: str, text: str) -> None:
    response = server.get(path)
    assert (response.status_code, response.text) == (200, text)
    assert response.headers["x-middleware"] == "yes"  # the whole pipeline ran


def test_lifespan_startup_notified_once(server: Server) -> None:
    server.get("/sync")
    counts = server.counts()
    assert (counts["startup"], counts["async startup"]) == (1, 1)


@pytest.mark.parametrize(
    ("path", "headers", "status", "text"),
    [
        ("/teapot", {}, 418, "short and stout"),
        ("/nowhere", {}, 404, "missing /nowhere"),
        ("/secret", {}, 403, "forbidden"),
        ("/secret", {"X-Admin": "yes"}, 200, "secret"),
    ],
)
def test_exception_views(
    server: Server, path: str, headers: dict[str, str], status: int, text: str
) -> None:
    response = server.get(path, headers=headers)
    assert (response.status_code, response.text) == (status, text)


@pytest.mark.parametrize(
    ("path", "logged"),
    [("/error", "ValueError: boom"), ("/raw-error", "RuntimeError: raw failure")],
)
def test_unhandled_exception_is_500_and_logged(server: Server, path: str, logged: str) -> None:
    response = server.get(path)
    assert (response.status_code, response.text) == (500, "Internal Server Error")
    assert logged in server.log_text()
    assert server.get("/sync").status_code == 200  # the server carries on


# daphne cannot abort a response: it answers the exception with a second
# response start, which it then refuses, and leaves the connection open.
@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"], indirect=True)
def test_exception_after_headers_aborts_response(server: Server) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        server.get("/raw-late-error")
    assert "late failure" in server.log_text()


def test_redirect(server: Server) -> None:
    response = server.get("/redirect")
    assert response.status_code == 302
    assert response.headers["location"] == f"{server.url}{ROOT_PATH}/async"


def test_multiple_set_cookie_headers(server: Server) -> None:
    response = server.get("/cookies")
    assert response.headers.get_list("set-cookie") == ["first=1; Path=/", "second=2; Path=/"]


def test_head_sends_no_body(server: Server) -> None:
    # On one keep-alive connection: a body sent for HEAD would corrupt the next response.
    with httpx.Client(base_url=server.url, timeout=PATIENCE) as client:
        head = client.head("/cookies")
        assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", "7")
        assert client.get("/sync").text == "sync GET"


def test_environ_root_path_query_and_headers(server: Server) -> None:
    headers = [
        ("X-Name", "caf\u00e9".encode()),
        ("X-Repeated", b"a"),
        ("X-Repeated", b"b"),
        ("Cookie", b"one=1"),
        ("Cookie", b"two=2"),
    ]
    environ = server.get("/environ/x?q=1&r=%C3%A9", headers=headers).json()
    assert environ["script_name"] == ROOT_PATH
    assert environ["path_info"] == "/environ/x"
    assert environ["query_string"] == "q=1&r=%C3%A9"
    assert environ["path_url"] == f"{server.url}{ROOT_PATH}/environ/x"
    assert environ["x_name"] == "caf\u00e9".encode().hex()  # the bytes, latin-1 round trip
    assert environ["x_repeated"] == "a, b"
    assert environ["cookies"] == {"one": "1", "two": "2"}
    assert (environ["multithread"], environ["multiprocess"], environ["run_once"]) == (
        True,
        False,
        False,
    )
    assert environ["protocol"] == "HTTP/1.1"


def test_non_ascii_path(server: Server) -> None:
    response = server.get("/caf%C3%A9/zo%C3%AB")
    assert response.json() == {"name": "zo\u00eb", "path_info": "/caf\u00e9/zo\u00eb"}


# -- request bodies -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async", "greenlet"])
def test_request_bodies(server: Server, kind: str) -> None:
    url = f"{server.url}/echo/{kind}"
    data = bytes(range(256)) * 200  # 51,200 bytes: under the 64 KiB limit
    with httpx.Client(timeout=PATIENCE) as client:
        assert client.post(url, params={"how": "post"}, data={"a": "\u00e9"}).json() == {
            "post": {"a": "\u00e9"}
        }
        assert client.post(url, params={"how": "json"}, json={"b": [1]}).json() == {
            "json": {"b": [1]}
        }
        for how in ("body", "file"):
            assert client.post(url, params={"how": how}, content=data).json()["length"] == len(data)

        def chunked() -> Iterator[bytes]:
            for offset in range(0, len(data), 4096):
                yield data[offset : offset + 4096]

        response = client.post(url, params={"how": "file"}, content=chunked())
        assert response.request.headers["transfer-encoding"] == "chunked"
        assert response.json()["length"] == len(data)


@pytest.mark.parametrize("chunked", [False, True])
def test_body_over_limit_is_413_without_running_the_app(server: Server, chunked: bool) -> None:
    before = server.counts().get("echo", 0)
    data = b"x" * (SERVER_MAX_BODY_SIZE + 1)
    content: Any = iter([data[:40_000], data[40_000:]]) if chunked else data
    response = httpx.post(f"{server.url}/echo/sync", content=content, timeout=PATIENCE)
    assert response.status_code == 413
    assert server.counts().get("echo", 0) == before


# -- responses --------------------------------------------------------------------


def test_streamed_iterable_and_file_bodies(server: Server) -> None:
    assert server.get("/stream").text == "".join(f"chunk {n}\n" for n in range(5))
    assert server.get("/async-stream").text == "async chunk\n" * 3
    assert server.get("/file").content == FILE_CONTENT
    counts = server.counts()
    assert counts["stream closed"] >= 1 and counts["async stream closed"] >= 1


@pytest.mark.parametrize("path", ["/sse", "/async-sse"])
def test_sse_events_arrive_as_produced(server: Server, path: str) -> None:
    with (
        httpx.Client(timeout=PATIENCE) as client,
        client.stream("GET", server.url + path) as stream,
    ):
        lines = stream.iter_lines()
        # The generator is parked until released, so the first event can
        # only be here if it was sent before the body was complete.
        assert next(lines) == "data: first"
        client.get(f"{server.url}/release/{path[1:]}")
        assert [line for line in lines if line] == ["data: second"]


# -- disconnects --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["async", "executor", "stream"])
def test_disconnect_cancels_the_request(server: Server, kind: str) -> None:
    baseline = server.stats()
    with _raw_request(server, f"GET /hang/{kind} HTTP/1.1\r\nHost: test") as connection:
        if kind == "stream":
            received = b""
            while b"first" not in received:
                received += connection.recv(4096)
        server.wait_for(lambda counts: counts.get(f"entered {kind}") == 1)
    if kind == "executor":
        # The thread cannot be interrupted; the request ends once it returns.
        server.get("/release/executor")
    counts = server.wait_for(lambda counts: counts.get(f"finished {kind}") == 1)
    assert counts[f"finally {kind}"] == 1
    stats = server.stats()
    assert stats["counts"][f"finished {kind}"] == 1  # exactly once
    assert (stats["greenlets"], stats["watchers"]) == (baseline["greenlets"], baseline["watchers"])
    assert f"/hang/{kind}" not in server.log_text()  # no 500, no traceback


# -- concurrency --------------------------------------------------------------------


def test_500_concurrent_requests_wait_together(server: Server) -> None:
    total = 500
    request = b"GET /wait HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"

    async def one() -> bytes:
        reader, writer = await asyncio.open_connection(HOST, server.port)
        writer.write(request)
        response = await reader.read()
        writer.close()
        await writer.wait_closed()
        return response

    async def scenario() -> list[bytes]:
        requests = [asyncio.create_task(one()) for _ in range(total)]
        # Every request reaches the await before any is released: they wait
        # side by side in the server, none holding a thread.
        counts = await asyncio.to_thread(server.wait_for, lambda c: c.get("waiting") == total)
        assert counts["waiting"] == total
        assert server.stats()["threads"] < 50
        await asyncio.to_thread(server.get, "/release/wait")
        return await asyncio.gather(*requests)

    responses = asyncio.run(scenario())
    assert all(r.startswith(b"HTTP/1.1 200") and r.endswith(b"released") for r in responses)


# -- websockets --------------------------------------------------------------------


def test_websocket_is_refused_cleanly(server: Server) -> None:
    async def connect() -> None:
        async with websockets.connect(f"ws://{HOST}:{server.port}/ws", open_timeout=PATIENCE):
            pass

    # A path without a WebSocket view: the handshake is refused, the server carries on.
    with pytest.raises(InvalidStatus):
        asyncio.run(connect())
    assert server.get("/sync").status_code == 200
