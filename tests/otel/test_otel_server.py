"""Server spans under a real uvicorn, exported by the SDK and flushed at the lifespan shutdown.

The application (``tests/support/otel_app.py``, served by uvicorn in a
subprocess) writes its spans as JSON lines to a file.  A client sends 50
item requests, one request to a view that fails and one WebSocket
connection at once, each with a ``traceparent`` of its own; once the server
has stopped (SIGTERM: the lifespan shutdown shuts the provider down, which
exports what its batch still held), the file holds one server span per
request, in the caller's trace.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.support import REPO_ROOT
from tests.support.otel_app import SPANS_FILE
from tests.support.servers import (
    HOST,
    PATIENCE,
    accepts_connections,
    free_port,
    serving,
    stop,
)

pytestmark = pytest.mark.servers

ITEMS = 50


def traceparent() -> tuple[str, str, str]:
    """A new caller's trace id and span id, and the header carrying them."""
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, parent_id, f"00-{trace_id}-{parent_id}-01"


async def get(client: httpx.AsyncClient, path: str) -> tuple[str, str, int]:
    trace_id, parent_id, header = traceparent()
    response = await client.get(path, headers={"traceparent": header})
    return trace_id, parent_id, response.status_code


async def converse(port: int) -> tuple[str, str, list[str]]:
    trace_id, parent_id, header = traceparent()
    async with websockets.connect(
        f"ws://{HOST}:{port}/ws/echo",
        additional_headers={"traceparent": header},
        open_timeout=PATIENCE,
        close_timeout=PATIENCE,
    ) as ws:
        answers = []
        for text in ("one", "two"):
            await ws.send(text)
            answers.append(str(await ws.recv()))
        await ws.send("bye")
        await ws.wait_closed()
    return trace_id, parent_id, answers


async def requests(port: int) -> tuple[list[tuple[str, str, int]], tuple[str, str, list[str]]]:
    limits = httpx.Limits(max_connections=ITEMS + 1)
    async with httpx.AsyncClient(
        base_url=f"http://{HOST}:{port}", timeout=PATIENCE, limits=limits
    ) as client:
        sent = [get(client, f"/items/{n}") for n in range(ITEMS)]
        answers, conversation = await asyncio.gather(
            asyncio.gather(*sent, get(client, "/broken")), converse(port)
        )
    return answers, conversation


def test_one_server_span_per_request_in_the_caller_s_trace(tmp_path: Path) -> None:
    spans_file = tmp_path / "spans.jsonl"
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "tests.support.otel_app:create_app"]
    argv += ["--factory", "--host", HOST]
    argv += ["--port", str(port), "--log-level", "warning"]
    env = {**os.environ, SPANS_FILE: str(spans_file)}
    log = tmp_path / "uvicorn.log"
    with serving(argv, log, accepts_connections(port), env=env, cwd=REPO_ROOT) as process:
        answers, (ws_trace, ws_parent, echoed) = asyncio.run(
            asyncio.wait_for(requests(port), PATIENCE)
        )
        assert not spans_file.exists()  # all still in the batch
        # SIGTERM: the lifespan shutdown, whose subscriber flushes the spans;
        # uvicorn then exits by the signal it got, once it shut down gracefully.
        assert stop(process, log) in (0, -signal.SIGTERM), log.read_text()
    assert [status for *_, status in answers] == [200] * ITEMS + [500]
    assert echoed == ["one", "two"]

    records: list[dict[str, Any]] = [
        json.loads(line) for line in spans_file.read_text().splitlines()
    ]
    servers = {record["trace_id"]: record for record in records if record["kind"] == "SERVER"}
    # One server span per request, each in the trace its traceparent named.
    assert len([record for record in records if record["kind"] == "SERVER"]) == ITEMS + 2
    assert set(servers) == {trace_id for trace_id, *_ in answers} | {ws_trace}
    server_ids = {record["span_id"] for record in servers.values()}

    for n, (trace_id, parent_id, status) in enumerate(answers):
        span = servers[trace_id]
        attributes = span["attributes"]
        assert span["parent_id"] == parent_id and span["parent_remote"] is True
        assert attributes["http.response.status_code"] == status
        assert attributes["server.address"] == HOST
        assert attributes["server.port"] == port
        if n < ITEMS:
            assert span["name"] == "GET /items/{id}"
            assert attributes["http.route"] == "/items/{id}"
            assert attributes["url.path"] == f"/items/{n}"
            assert span["status"] == "UNSET"
        else:
            assert span["name"] == "GET /broken"
            assert span["status"] == "ERROR"
            assert attributes["error.type"] == "500"
            assert span["events"] == ["exception"]

    ws_span = servers[ws_trace]
    assert ws_span["parent_id"] == ws_parent
    assert ws_span["name"] == "GET /ws/echo"
    assert ws_span["attributes"]["url.scheme"] == "ws"
    assert ws_span["attributes"]["http.response.status_code"] == 101
    assert ws_span["attributes"]["aiopyramid_ng.websocket.close_code"] == 1000
    assert ws_span["status"] == "UNSET"

    # Each item's child span is under its own request's server span.
    children = [record for record in records if record["kind"] != "SERVER"]
    assert len(children) == ITEMS
    for child in children:
        assert child["name"] == "load item"
        assert child["parent_id"] in server_ids
        assert servers[child["trace_id"]]["span_id"] == child["parent_id"]
