"""Load shedding: ``max_concurrency`` (application and view) and ``executor.max_queue`` answer 503.

Requests are interleaved on the test's loop (the Router in request
greenlets, as the ASGI adapter runs it) or sent from threads in WSGI mode.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError
from pyramid.request import Request
from pyramid.response import Response
from pyramid.router import Router

from aiopyramid_ng.exceptions import ExecutorQueueFull
from aiopyramid_ng.executor import executor_of
from aiopyramid_ng.helpers import spawn_greenlet, use_executor
from aiopyramid_ng.limits import LIMIT_KEY, SHED, limits_of
from aiopyramid_ng.settings import MAX_CONCURRENCY, MAX_QUEUE, MAX_WORKERS, RETRY_AFTER
from aiopyramid_ng.shedding import BoundedExecutor
from aiopyramid_ng.testing import TestApp
from aiopyramid_ng.websocket import WebSocket, WebsocketMapper
from tests.support.apps import get_response, make_app, make_one_view_app
from tests.support.leaks import LeakCheck

#: Generous bound for "at once": far below what an admitted request takes.
AT_ONCE = 0.15

#: What the tween saw: the paths of the requests that reached the tween chain.
tweened: list[str] = []


def recording_tween(handler: Callable[[Request], Response], registry: Any) -> Any:
    def tween(request: Request) -> Response:
        tweened.append(request.path_qs)
        return handler(request)

    return tween


async def sleepy(request: Request) -> Response:
    await asyncio.sleep(float(request.params.get("s", "0.3")))
    return Response("done")


def blocking(request: Request) -> Response:
    time.sleep(float(request.params.get("s", "0.3")))
    return Response("blocked")


@dataclass
class Outcome:
    response: Any
    took: float
    environ: dict[str, Any]


async def burst(app: Router, paths: list[str], gap: float = 0.05) -> list[Outcome]:
    """Send the first len(paths) - 1 requests, wait ``gap``, then the last; time each."""

    async def timed(path: str) -> Outcome:
        request = Request.blank(path)
        started = time.monotonic()
        response = await spawn_greenlet(request.get_response, app)
        return Outcome(response, time.monotonic() - started, request.environ)

    first = [asyncio.create_task(timed(path)) for path in paths[:-1]]
    await asyncio.sleep(gap)
    last = await timed(paths[-1])
    return [*(await asyncio.gather(*first)), last]


def assert_shed(outcome: Outcome, retry_after: str = "1") -> None:
    assert outcome.response.status_int == 503
    assert outcome.response.headers["Retry-After"] == retry_after
    assert "busy" in outcome.response.text
    assert outcome.took < AT_ONCE
    assert outcome.environ[LIMIT_KEY] == SHED


def statuses(outcomes: list[Outcome]) -> list[int]:
    return [outcome.response.status_int for outcome in outcomes]


# -- the application's bound ---------------------------------------------------------------


def test_beyond_the_application_bound_503_comes_at_once_before_any_tween() -> None:
    tweened.clear()

    def setup(config: Configurator) -> None:
        config.add_tween("tests.test_shedding.recording_tween")
        config.add_route("view", "/")
        config.add_view(sleepy, route_name="view")

    app = make_app(setup, **{MAX_CONCURRENCY.name: "2", RETRY_AFTER.name: "3"})

    async def main() -> None:
        check = LeakCheck()
        one, two, shed = await burst(app, ["/?n=1", "/?n=2", "/?n=3"])
        assert statuses([one, two]) == [200, 200]
        assert_shed(shed, retry_after="3")
        assert LIMIT_KEY not in one.environ
        # The burst is over: admitted again at once.
        again = await get_response(app, "/?n=4&s=0")
        assert again.status_int == 200
        check.assert_clean(asyncio.get_running_loop())

    asyncio.run(main())
    assert sorted(tweened) == ["/?n=1", "/?n=2", "/?n=4&s=0"]
    gate = limits_of(app.registry).gate
    assert gate is not None and gate.in_flight == 0


def test_the_application_bound_holds_across_wsgi_server_threads() -> None:
    app = make_one_view_app(blocking, **{MAX_CONCURRENCY.name: "1"})
    statuses: list[int] = []

    def call() -> None:
        statuses.append(Request.blank("/").get_response(app).status_int)

    first = threading.Thread(target=call)
    first.start()
    time.sleep(0.1)
    started = time.monotonic()
    shed = Request.blank("/?s=0").get_response(app)
    assert shed.status_int == 503
    assert time.monotonic() - started < AT_ONCE
    first.join()
    assert statuses == [200]
    assert Request.blank("/?s=0").get_response(app).status_int == 200


def test_an_accepted_websocket_does_not_count_against_the_application() -> None:
    async def hold(ws: WebSocket) -> None:
        while (message := await ws.recv()) is not None:
            await ws.send(message)

    def setup(config: Configurator) -> None:
        config.add_route("ws", "/ws")
        config.add_view(hold, route_name="ws", mapper=WebsocketMapper)
        config.add_route("page", "/")
        config.add_view(sleepy, route_name="page")

    app = make_app(setup, **{MAX_CONCURRENCY.name: "1"})
    with TestApp(app) as client, client.websocket_connect("/ws") as ws:
        assert client.get("/?s=0").text == "done"
        ws.send_text("open")
        assert ws.receive_text() == "open"


# -- a view's bound ------------------------------------------------------------------------


class CountingPolicy:
    """A security policy that allows everything and counts its permission checks."""

    def __init__(self) -> None:
        self.checks = 0

    def identity(self, request: Request) -> None:
        return None

    def authenticated_userid(self, request: Request) -> None:
        return None

    def permits(self, request: Request, context: Any, permission: str) -> bool:
        self.checks += 1
        return True

    def remember(self, request: Request, userid: str, **kw: Any) -> list[Any]:
        return []

    def forget(self, request: Request, **kw: Any) -> list[Any]:
        return []


def test_beyond_a_view_bound_503_comes_before_its_permission_check() -> None:
    policy = CountingPolicy()

    def setup(config: Configurator) -> None:
        config.set_security_policy(policy)
        config.add_route("bounded", "/bounded")
        config.add_view(sleepy, route_name="bounded", permission="view", max_concurrency=1)
        config.add_route("free", "/free")
        config.add_view(sleepy, route_name="free")

    app = make_app(setup)

    async def main() -> None:
        check = LeakCheck()
        results = await burst(app, ["/bounded", "/free", "/free", "/bounded"])
        assert statuses(results) == [200, 200, 200, 503]
        assert_shed(results[-1])
        assert policy.checks == 1
        assert (await get_response(app, "/bounded?s=0")).status_int == 200
        check.assert_clean(asyncio.get_running_loop())

    asyncio.run(main())


@pytest.mark.parametrize("bad", [0, -3, "3", True, 1.5])
def test_a_bad_max_concurrency_option_fails_at_config_time_naming_the_view(bad: object) -> None:
    def setup(config: Configurator) -> None:
        config.add_route("view", "/")
        config.add_view(sleepy, route_name="view", max_concurrency=bad)

    with pytest.raises(ConfigurationError) as caught:
        make_app(setup)
    message = str(caught.value)
    assert f"max_concurrency={bad!r}" in message
    assert "tests.test_shedding.sleepy" in message
    assert "positive whole number" in message


# -- the pool's queue ----------------------------------------------------------------------


def test_a_full_pool_queue_answers_503_for_a_plain_view() -> None:
    app = make_one_view_app(blocking, **{MAX_WORKERS.name: "1", MAX_QUEUE.name: "1"})

    async def main() -> None:
        results = await burst(app, ["/", "/", "/"])
        assert statuses(results) == [200, 200, 503]
        assert_shed(results[-1])
        assert (await get_response(app, "/?s=0")).status_int == 200

    asyncio.run(main())


@use_executor
def lookup(seconds: float) -> str:
    time.sleep(seconds)
    return "found"


def test_use_executor_raises_executor_queue_full_which_a_view_may_catch() -> None:
    async def page(request: Request) -> Response:
        try:
            return Response(await lookup(float(request.params.get("s", "0.3"))))
        except ExecutorQueueFull:
            if "catch" in request.params:
                return Response("without it")
            raise

    def setup(config: Configurator) -> None:
        config.add_route("page", "/")
        config.add_view(page, route_name="page")

    app = make_app(setup, **{MAX_WORKERS.name: "1", MAX_QUEUE.name: "1"})

    async def main() -> None:
        results = await burst(app, ["/", "/", "/?catch"])
        assert [outcome.response.text for outcome in results] == ["found", "found", "without it"]
        results = await burst(app, ["/", "/", "/"])
        assert statuses(results) == [200, 200, 503]
        assert_shed(results[-1])

    asyncio.run(main())


def test_the_queue_bound_counts_running_work_only_beyond_the_threads() -> None:
    app = make_one_view_app(blocking, **{MAX_WORKERS.name: "4", MAX_QUEUE.name: "1"})

    async def main() -> None:
        # Four threads idle: five submitted at once all run or wait, none is refused.
        responses = await asyncio.gather(*(get_response(app, "/?s=0.1") for _ in range(5)))
        assert [response.status_int for response in responses] == [200] * 5

    asyncio.run(main())


def test_the_queue_bound_applies_to_an_executor_set_by_the_application() -> None:
    pool = ThreadPoolExecutor(2)

    def setup(config: Configurator) -> None:
        config.set_executor(pool)
        config.add_route("v", "/")
        config.add_view(blocking, route_name="v")

    app = make_app(setup, **{MAX_QUEUE.name: "1"})

    async def main() -> None:
        results = await burst(app, ["/", "/", "/", "/"])
        assert statuses(results) == [200, 200, 200, 503]

    try:
        asyncio.run(main())
    finally:
        pool.shutdown()


@pytest.mark.parametrize(
    ("name", "value"),
    [(MAX_CONCURRENCY.name, "lots"), (RETRY_AFTER.name, "0"), (MAX_QUEUE.name, "-1")],
)
def test_a_bad_setting_fails_at_start_up(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=f"{name} = {value!r} is not a positive"):
        make_app(lambda config: None, **{name: value})


# -- the bounded executor itself: failures and shutdown ------------------------------------


class Flaky(Executor):
    """An executor that refuses work while ``broken``, and records its shutdowns."""

    def __init__(self) -> None:
        self.broken = True
        self.pool = ThreadPoolExecutor(2)
        self.shutdowns: list[tuple[bool, bool]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self.broken:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        return self.pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.shutdowns.append((wait, cancel_futures))
        self.pool.shutdown(wait=wait, cancel_futures=cancel_futures)


def test_work_the_executor_refuses_does_not_take_a_place_in_the_bound() -> None:
    inner = Flaky()
    bounded = BoundedExecutor(inner, capacity=1, max_queue=1)
    # More failures than the bound's places: each is the executor's own
    # error, never ExecutorQueueFull, so none of them kept its place.
    for _ in range(5):
        with pytest.raises(RuntimeError, match="cannot schedule") as caught:
            bounded.submit(time.sleep, 0)
        assert not isinstance(caught.value, ExecutorQueueFull)
    inner.broken = False
    release = threading.Event()
    held = [bounded.submit(release.wait, 5) for _ in range(2)]  # the bound's two places
    with pytest.raises(ExecutorQueueFull):
        bounded.submit(time.sleep, 0)
    release.set()
    assert [future.result(timeout=5) for future in held] == [True, True]
    assert bounded.submit(lambda: "again").result(timeout=5) == "again"
    bounded.shutdown()
    assert inner.shutdowns == [(True, False)]


def test_shutting_the_bounded_executor_down_cancels_queued_work_if_asked() -> None:
    pool = ThreadPoolExecutor(1)
    bounded = BoundedExecutor(pool, capacity=1, max_queue=1)
    release = threading.Event()
    running = bounded.submit(release.wait, 5)
    queued = bounded.submit(lambda: "never")
    bounded.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    with pytest.raises(RuntimeError, match="shutdown"):
        bounded.submit(lambda: "refused")  # the pool's own refusal: the bound had room
    release.set()
    assert running.result(timeout=5) is True


def test_the_application_shutdown_stops_its_bounded_pool_and_a_restart_makes_a_new_one() -> None:
    threads: list[threading.Thread] = []
    pools: list[Executor] = []

    def where(request: Request) -> Response:
        threads.append(threading.current_thread())
        pools.append(executor_of(request.registry))
        return Response("ran")

    app = make_one_view_app(where, **{MAX_WORKERS.name: "1", MAX_QUEUE.name: "1"})
    for _ in range(2):
        with TestApp(app) as client:
            assert client.get("/").text == "ran"
        # The lifespan shutdown joined the pool's thread.
        assert not threads[-1].is_alive()
    assert threads[0] is not threads[1]
    assert all(isinstance(pool, BoundedExecutor) for pool in pools)
    assert pools[0] is not pools[1]
