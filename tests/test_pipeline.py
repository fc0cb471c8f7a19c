"""aiopyramid_ng.pipeline = executor: blocking hooks run in the thread pool."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError
from pyramid.request import Request
from pyramid.response import Response
from pyramid.threadlocal import get_current_request
from webtest import TestApp

from aiopyramid_ng.bridge import in_bridge
from aiopyramid_ng.helpers import await_, synchronize
from aiopyramid_ng.interfaces import IAppExecutor
from tests.support.apps import get_response, make_app, make_one_view_app
from tests.support.leaks import LeakCheck

CONCURRENT = 20


def place() -> str:
    thread = threading.current_thread().name
    return "executor" if thread.startswith("aiopyramid_ng") else "loop"


@synchronize
async def lookup(name: str) -> str:
    await asyncio.sleep(0.001)
    return name.upper()


def _app(barrier: threading.Barrier | None) -> Any:
    class Root:
        def __init__(self, request: Request) -> None:
            # A blocking root factory, as in Pyramid's wiki tutorial: every
            # request waits here until all of them have arrived, which only
            # works if each runs in its own thread.
            assert get_current_request() is request
            if barrier is not None:
                barrier.wait(timeout=10)
            self.where = place()
            self.looked_up = lookup("root")

    async def coroutine_view(context: Root, request: Request) -> dict[str, Any]:
        await asyncio.sleep(0.001)
        assert get_current_request() is request
        return {"root": context.where, "looked_up": context.looked_up, "view": place()}

    def plain_view(context: Root, request: Request) -> dict[str, Any]:
        assert get_current_request() is request
        return {
            "root": context.where,
            "view": place(),
            "awaited": await_(asyncio.sleep(0, "ok")),
            "greenlet": in_bridge(),
        }

    def setup(config: Configurator) -> None:
        config.set_root_factory(Root)
        config.add_route("coroutine", "/coroutine")
        config.add_route("plain", "/plain")
        config.add_view(coroutine_view, route_name="coroutine", renderer="json")
        config.add_view(plain_view, route_name="plain", renderer="json")

    return make_app(
        setup,
        **{
            "aiopyramid_ng.pipeline": "executor",
            "aiopyramid_ng.executor.max_workers": str(CONCURRENT),
        },
    )


def test_hooks_and_plain_views_run_in_threads_coroutine_views_on_the_loop() -> None:
    app = _app(barrier=None)
    client = TestApp(app)
    assert client.get("/coroutine").json == {
        "root": "executor",
        "looked_up": "ROOT",
        "view": "loop",
    }
    assert client.get("/plain").json == {
        "root": "executor",
        "view": "executor",
        "awaited": "ok",
        "greenlet": False,
    }
    app.registry.getUtility(IAppExecutor).shutdown()


def test_blocking_hooks_of_concurrent_requests_do_not_block_each_other() -> None:
    barrier = threading.Barrier(CONCURRENT)
    app = _app(barrier)

    async def main() -> list[Any]:
        check = LeakCheck()
        paths = ["/coroutine" if n % 2 else "/plain" for n in range(CONCURRENT)]
        responses = await asyncio.gather(*(get_response(app, path) for path in paths))
        check.assert_clean(asyncio.get_running_loop(), max_new_threads=CONCURRENT)
        return [response.json["root"] for response in responses]

    try:
        assert asyncio.run(main()) == ["executor"] * CONCURRENT
    finally:
        app.registry.getUtility(IAppExecutor).shutdown()
    assert not barrier.broken


def test_an_unknown_pipeline_fails_at_commit() -> None:
    with pytest.raises(ConfigurationError, match=r"aiopyramid_ng\.pipeline.*'threads'"):
        make_app(lambda config: None, **{"aiopyramid_ng.pipeline": "threads"})


def test_a_plain_view_response_in_executor_pipeline_mode() -> None:
    def hello(request: Request) -> Response:
        return Response(place())

    app = make_one_view_app(hello, **{"aiopyramid_ng.pipeline": " executor "})
    assert TestApp(app).get("/").text == "executor"
    app.registry.getUtility(IAppExecutor).shutdown()
