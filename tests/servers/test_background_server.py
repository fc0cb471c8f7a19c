"""Background tasks under a real uvicorn: after the client has the response, and at shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response

from aiopyramid_ng.asgi import make_asgi_app
from tests.support.apps import make_app
from tests.support.servers import uvicorn_thread, wait_until

pytestmark = pytest.mark.servers


def test_tasks_run_after_the_client_has_the_response_and_shutdown_waits_then_cancels(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[str] = []

    async def task(tag: str) -> None:
        events.append(f"task {tag}")

    async def slow() -> None:
        await asyncio.sleep(0.3)
        events.append("slow finished")

    async def endless() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            events.append("endless cancelled")

    async def body() -> AsyncIterator[bytes]:
        yield b"first "
        await asyncio.sleep(0.3)
        yield b"last"

    def view(request: Request) -> Response:
        name = request.matchdict["name"]
        if name == "stream":
            request.add_background_task(task, "stream")
            return Response(app_iter=body())
        request.add_background_task(slow if name == "slow" else endless)
        return Response(name)

    def setup(config: Configurator) -> None:
        config.add_route("view", "/{name}")
        config.add_view(view, route_name="view")

    app = make_asgi_app(make_app(setup, **{"aiopyramid_ng.background.shutdown_timeout": "1"}))
    with (
        caplog.at_level(logging.WARNING, "aiopyramid_ng.background"),
        uvicorn_thread(app) as url,
        httpx.Client(base_url=url) as client,
    ):
        with client.stream("GET", "/stream") as response:
            chunks = response.iter_raw()
            assert next(chunks) == b"first "
            assert events == []  # the body is not complete: no task yet
            assert b"".join(chunks) == b"last"
        wait_until(lambda: list(events), "the stream's task")
        assert events == ["task stream"]
        assert client.get("/slow").text == "slow"
        assert client.get("/endless").text == "endless"
    # The server stopped: its lifespan shutdown waited for the slow task
    # and cancelled the endless one after a second.
    assert events == ["task stream", "slow finished", "endless cancelled"]
    messages = [r.getMessage() for r in caplog.records if r.name == "aiopyramid_ng.background"]
    assert len(messages) == 1
    assert "endless of GET '/endless' did not finish within 1.0 s of the shutdown" in messages[0]
