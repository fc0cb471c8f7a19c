"""WSGI mode: the Router under WebTest and a real WSGI server (waitress)."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pyramid.config import Configurator
from pyramid.interfaces import IExecutionPolicy
from pyramid.request import Request
from pyramid.response import Response
from pyramid.router import Router
from pyramid.threadlocal import get_current_request
from webtest import TestApp

from aiopyramid_ng.execution import GreenletExecutionPolicy
from aiopyramid_ng.executor import AppExecutor
from aiopyramid_ng.helpers import synchronize
from tests.support.apps import make_app
from tests.support.servers import PATIENCE, waitress_thread

queues: dict[asyncio.AbstractEventLoop, asyncio.Queue[str]] = {}


async def produce(request: Request) -> Response:
    # A loop-bound resource made in one request and used by later ones.
    queue = queues.setdefault(asyncio.get_running_loop(), asyncio.Queue())
    await queue.put(request.params["item"])
    return Response("queued")


async def consume(request: Request) -> Response:
    queue = queues[asyncio.get_running_loop()]
    return Response(await asyncio.wait_for(queue.get(), 1))


@synchronize
async def slow_upper(text: str) -> str:
    await asyncio.sleep(0.001)
    return text.upper()


async def shout(request: Request) -> dict[str, Any]:
    await asyncio.sleep(0.001)
    assert get_current_request() is request
    return {"said": slow_upper(request.params.get("say", "hi"))}


def setup(config: Configurator) -> None:
    config.add_route("produce", "/produce")
    config.add_route("consume", "/consume")
    config.add_route("shout", "/shout")
    config.add_view(produce, route_name="produce")
    config.add_view(consume, route_name="consume")
    config.add_view(shout, route_name="shout", renderer="json")


@pytest.fixture(scope="module")
def app() -> Router:
    return make_app(setup)


def test_webtest_with_coroutine_views_and_loop_bound_resources(app: Router) -> None:
    client = TestApp(app)
    assert client.get("/shout?say=hello").json == {"said": "HELLO"}
    client.get("/produce?item=one")
    client.get("/produce?item=two")
    assert client.get("/consume").text == "one"
    assert client.get("/consume").text == "two"


def test_the_execution_policy_is_wrapped_once_whatever_sets_it() -> None:
    calls: list[str] = []

    def custom_policy(environ: dict[str, Any], router: Router) -> Any:
        calls.append(environ["PATH_INFO"])
        with router.request_context(environ) as request:
            return router.invoke_request(request)

    def with_policy(config: Configurator) -> None:
        config.set_execution_policy(custom_policy)
        config.include("aiopyramid_ng")
        setup(config)

    app = make_app(with_policy)
    policy = app.registry.getUtility(IExecutionPolicy)
    assert isinstance(policy, GreenletExecutionPolicy)
    chain: list[Any] = [policy]
    while hasattr(chain[-1], "policy"):
        chain.append(chain[-1].policy)
    assert chain[-1] is custom_policy
    assert sum(isinstance(layer, GreenletExecutionPolicy) for layer in chain) == 1
    assert TestApp(app).get("/shout").json == {"said": "HI"}
    assert calls == ["/shout"]


def test_calling_the_wsgi_app_from_a_running_loop_is_a_clear_error(app: Router) -> None:
    async def main() -> None:
        with pytest.raises(RuntimeError, match=r"asyncio\.to_thread"):
            Request.blank("/shout").get_response(app)
        response = await asyncio.to_thread(Request.blank("/shout").get_response, app)
        assert response.json == {"said": "HI"}

    asyncio.run(main())


@pytest.fixture(scope="module")
def waitress_url(app: Router) -> Iterator[str]:
    with waitress_thread(app, threads=4) as url:
        yield url


def test_waitress_serves_coroutine_views_concurrently(waitress_url: str) -> None:
    async def main() -> list[Any]:
        async with httpx.AsyncClient(base_url=waitress_url, timeout=PATIENCE) as client:
            responses = await asyncio.gather(
                *(client.get("/shout", params={"say": f"n{n}"}) for n in range(60))
            )
        return [response.json() for response in responses]

    assert asyncio.run(main()) == [{"said": f"N{n}"} for n in range(60)]


def _pool_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("aiopyramid_ng")}


def test_the_pool_of_an_application_collected_unclosed_ends_at_the_next_wsgi_request(
    app: Router,
) -> None:
    before = _pool_threads()
    holder = AppExecutor(max_workers=1)
    holder.get().submit(lambda: None).result(PATIENCE)
    [thread] = _pool_threads() - before
    del holder
    gc.collect()
    # The collector ended nothing: the pool's thread would otherwise wake
    # and exit at whatever moment it ran, inside whatever code it interrupted.
    time.sleep(0.2)
    assert thread.is_alive()
    assert TestApp(app).get("/shout").json == {"said": "HI"}
    thread.join(PATIENCE)
    assert not thread.is_alive()
