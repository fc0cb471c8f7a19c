"""The example application (``examples/hello``): every route, in-process and over uvicorn."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator

import hello
import httpx
import pytest
from websockets.asyncio.client import connect

from aiopyramid_ng.asgi import ASGIApplication, make_asgi_app
from aiopyramid_ng.testing import TestApp
from tests.support.leaks import request_greenlets
from tests.support.servers import PATIENCE, uvicorn_thread, wait_until


def hello_app() -> ASGIApplication:
    return make_asgi_app(hello.main({}, **{"aiopyramid_ng.executor.max_workers": "4"}))


def parse_events(text: str) -> list[dict[str, str]]:
    """Split a server-sent events body into its events' fields."""
    events = []
    for block in text.split("\n\n"):
        if block:
            events.append(dict(line.split(": ", 1) for line in block.splitlines()))
    return events


# --- in-process, through aiopyramid_ng.testing.TestApp ---------------------------------------


@pytest.fixture(scope="module")
def app() -> Iterator[TestApp]:
    with TestApp(hello_app()) as test_app:
        yield test_app


def test_home(app: TestApp) -> None:
    assert app.get("/").json == {"message": "Hello from Pyramid on asyncio", "path": "/"}


def test_blocking_view_runs_in_the_thread_pool(app: TestApp) -> None:
    thread = app.get("/blocking").json["thread"]
    assert thread.startswith("aiopyramid_ng")
    assert thread != threading.current_thread().name


def test_events(app: TestApp) -> None:
    response = app.get("/events", {"count": "3", "interval": "0"})
    assert response.content_type == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert parse_events(response.text) == [
        {"id": str(number), "data": f'{{"n": {number}, "of": 3}}'} for number in range(3)
    ]


@pytest.mark.parametrize("query", [{"count": "0"}, {"count": "many"}, {"interval": "61"}])
def test_events_bad_parameters(app: TestApp, query: dict[str, str]) -> None:
    response = app.get("/events", query, status=400)
    assert "must be a number from" in response.json["error"]


def test_notes_api(app: TestApp) -> None:
    created = app.post_json("/api/notes", {"text": "  buy milk "}, status=201).json
    assert created["text"] == "buy milk"
    assert created in app.get("/api/notes").json["notes"]


@pytest.mark.parametrize("body", [b"not json", b'{"txt": "x"}', b'{"text": 3}', b'{"text": " "}'])
def test_notes_api_rejects_bad_input(app: TestApp, body: bytes) -> None:
    response = app.post(
        "/api/notes", body, content_type="application/json", status=400, expect_errors=True
    )
    assert "non-empty string" in response.json["error"]


def test_form(app: TestApp) -> None:
    page = app.get("/form")
    assert '<form method="post" action="/form">' in page.text
    page.form["name"] = "<Ada>"
    page.form["age"] = "36"
    answer = page.form.submit()
    assert answer.status_code == 200
    assert "Hello, &lt;Ada&gt;! You are 36." in answer.text


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"name": "", "age": "20"}, "Name must be 1 to 50 characters long."),
        ({"name": "x" * 51, "age": "20"}, "Name must be 1 to 50 characters long."),
        ({"name": "Ada", "age": "old"}, "Age must be a whole number from 0 to 150."),
        ({"name": "Ada", "age": "151"}, "Age must be a whole number from 0 to 150."),
    ],
)
def test_form_validation(app: TestApp, fields: dict[str, str], error: str) -> None:
    response = app.post("/form", fields, status=400)
    assert f"<li>{error}</li>" in response.text
    assert f'value="{fields["age"]}"' in response.text  # the form comes back filled in


def test_not_found(app: TestApp) -> None:
    response = app.get("/no/such/page", status=404)
    assert response.json == {"error": "not found", "path": "/no/such/page"}


# --- over a real uvicorn server ----------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """Serve the example with uvicorn in a thread; yield its base URL."""
    with uvicorn_thread(hello_app()) as url:
        yield url


def test_served_routes(server: str) -> None:
    with httpx.Client(base_url=server) as client:
        assert client.get("/").json()["message"] == "Hello from Pyramid on asyncio"
        assert client.get("/blocking").json()["thread"].startswith("aiopyramid_ng")
        assert client.get("/missing").status_code == 404
        assert client.post("/form", data={"name": "", "age": "1"}).status_code == 400
        assert client.post("/form", data={"name": "Ada", "age": "36"}).status_code == 200


def test_events_arrive_one_by_one(server: str) -> None:
    """The first event arrives while the second is still a minute away."""
    baseline = len(request_greenlets())
    with httpx.stream("GET", server + "/events?count=2&interval=60") as response:
        received = ""
        for chunk in response.iter_text():
            received += chunk
            if "\n\n" in received:
                break
    assert parse_events(received) == [{"id": "0", "data": '{"n": 0, "of": 2}'}]
    # Leaving the stream cancels it: its request greenlet finishes.
    wait_until(lambda: len(request_greenlets()) <= baseline, "the stream to be cancelled")


def test_notes_api_keeps_every_one_of_100_concurrent_posts(server: str) -> None:
    async def post_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=server, limits=limits, timeout=PATIENCE) as client:
            return await asyncio.gather(
                *(client.post("/api/notes", json={"text": f"note {n}"}) for n in range(100))
            )

    responses = asyncio.run(post_all())
    assert {response.status_code for response in responses} == {201}
    created = [response.json() for response in responses]
    assert len({note["id"] for note in created}) == 100
    listed = httpx.get(server + "/api/notes").json()["notes"]
    assert [note for note in created if note not in listed] == []
    assert {f"note {n}" for n in range(100)} <= {note["text"] for note in listed}


def test_interleaved_requests_with_clients_leaving_streams(server: str) -> None:
    baseline = len(request_greenlets())

    async def leave_a_stream(client: httpx.AsyncClient) -> str:
        async with client.stream("GET", "/events?count=5&interval=60") as response:
            async for chunk in response.aiter_text():
                return chunk
        return ""

    async def mix() -> tuple[list[str], list[httpx.Response]]:
        async with httpx.AsyncClient(base_url=server, timeout=PATIENCE) as client:
            streams = asyncio.gather(*(leave_a_stream(client) for _ in range(10)))
            requests = asyncio.gather(
                *(client.get(path) for _ in range(15) for path in ("/", "/blocking", "/nope"))
            )
            return await streams, await requests

    firsts, responses = asyncio.run(mix())
    assert all(re.match(r"id: 0\n", first) for first in firsts)
    assert [response.status_code for response in responses] == [200, 200, 404] * 15
    wait_until(lambda: len(request_greenlets()) <= baseline, "the streams to be cancelled")


def test_websocket_echo_with_interleaved_clients(server: str) -> None:
    baseline = len(request_greenlets())
    url = server.replace("http", "ws", 1) + "/ws/echo"

    async def talk(number: int) -> list[str | bytes]:
        async with connect(url) as websocket:
            replies: list[str | bytes] = []
            for turn in range(3):
                await websocket.send(f"{number}.{turn}")
                replies.append(await websocket.recv())
            return replies

    async def leave_abruptly() -> None:
        websocket = await connect(url)
        await websocket.send("bye")
        assert await websocket.recv() == "bye"
        websocket.transport.abort()  # no closing handshake

    async def everyone() -> list[list[str | bytes]]:
        talks = asyncio.gather(*(talk(number) for number in range(20)))
        await asyncio.gather(*(leave_abruptly() for _ in range(5)))
        return await talks

    assert asyncio.run(everyone()) == [[f"{n}.{t}" for t in range(3)] for n in range(20)]
    wait_until(lambda: len(request_greenlets()) <= baseline, "the connections to be released")
