"""Deadlines: ``aiopyramid_ng.timeout`` and the view option ``timeout=`` answer 504 on time.

Most tests go through the in-process ASGI path (TestApp); a few call the
Router in a request greenlet on the test's own loop, to interleave requests
and to cancel them as a server would.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
import webtest
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError
from pyramid.request import Request
from pyramid.response import Response
from pyramid.router import Router

from aiopyramid_ng.asgi import make_asgi_app
from aiopyramid_ng.exceptions import HandshakeRefused
from aiopyramid_ng.helpers import synchronize
from aiopyramid_ng.limits import DEADLINE, LIMIT_KEY
from aiopyramid_ng.settings import TIMEOUT
from aiopyramid_ng.testing import TestApp, scope_from_environ
from aiopyramid_ng.websocket import WebSocket, WebsocketMapper
from tests.support.apps import get_response, make_app
from tests.support.deadlines import (
    ACLPolicy,
    Guarded,
    deadline_lines,
    lingering,
    stubborn,
    timed_get,
)
from tests.support.leaks import LeakCheck
from tests.support.servers import wait_until

#: Generous bound for "answered on time": far below what the view would take.
ON_TIME = 1.0


async def sleepy(request: Request) -> Response:
    await asyncio.sleep(float(request.params.get("s", "5")))
    return Response(f"done {request.params.get('n', '')}")


def blocking(request: Request) -> Response:
    time.sleep(float(request.params.get("s", "0.5")))
    return Response("blocked")


def one_route(view: Callable[..., Any], **options: Any) -> Callable[[Configurator], None]:
    def setup(config: Configurator) -> None:
        config.add_route("view", "/")
        config.add_view(view, route_name="view", **options)

    return setup


# -- coroutine views, the setting, the option ----------------------------------------------


def test_the_setting_answers_504_and_logs_the_view_and_the_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app(one_route(sleepy), **{TIMEOUT.name: "0.1"})
    with TestApp(app) as client:
        response, took = timed_get(client, "/")
        assert response.status_int == 504
        assert response.content_type == "text/plain"
        assert "longer than its 0.1 s" in response.text
        assert took < ON_TIME
        assert client.get("/?s=0").text == "done "
    [line] = deadline_lines(caplog)
    assert line.startswith("GET / answered 504: over its deadline of 0.1 s")
    assert f"setting {TIMEOUT.name}" in line
    assert "view function tests.test_deadlines.sleepy" in line
    assert "in sleepy" in line  # where it waited
    assert [r.levelno for r in caplog.records if r.name == "aiopyramid_ng.deadlines"] == [
        logging.WARNING
    ]


def test_the_view_option_works_without_the_setting() -> None:
    with TestApp(make_app(one_route(sleepy, timeout=0.1))) as client:
        response, took = timed_get(client, "/")
        assert response.status_int == 504
        assert took < ON_TIME


def test_a_view_timeout_replaces_the_application_default_longer_or_shorter() -> None:
    def setup(config: Configurator) -> None:
        config.add_route("long", "/long")
        config.add_view(sleepy, route_name="long", timeout=2)
        config.add_route("short", "/short")
        config.add_view(sleepy, route_name="short", timeout=0.05)
        config.add_route("default", "/default")
        config.add_view(sleepy, route_name="default")

    with TestApp(make_app(setup, **{TIMEOUT.name: "0.3"})) as client:
        assert client.get("/long?s=0.5").status_int == 200  # past the default, within its own
        assert client.get("/default?s=0.5", status=504)
        response, took = timed_get(client, "/short?s=0.2")
        assert response.status_int == 504
        assert took < 0.2


def test_a_view_that_swallows_the_cancellation_still_answers_504() -> None:
    with TestApp(make_app(one_route(stubborn, timeout=0.05))) as client:
        assert client.get("/", status=504)


def swallowing_tween(handler: Callable[[Request], Response], registry: Any) -> Any:
    def tween(request: Request) -> Response:
        try:
            return handler(request)
        except asyncio.CancelledError:
            return Response("swallowed by a tween")

    return tween


def test_a_tween_that_swallows_the_cancellation_still_answers_504() -> None:
    def setup(config: Configurator) -> None:
        config.add_tween("tests.test_deadlines.swallowing_tween")
        one_route(sleepy)(config)

    with TestApp(make_app(setup, **{TIMEOUT.name: "0.05"})) as client:
        assert client.get("/", status=504)


def test_an_exception_raised_while_unwinding_from_the_deadline_still_answers_504(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def converts(request: Request) -> Response:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            raise ValueError("cancelled!") from None
        return Response("slept")

    with TestApp(make_app(one_route(converts, timeout=0.05))) as client:
        assert client.get("/", status=504)
    assert len(deadline_lines(caplog)) == 1


def test_an_error_before_the_deadline_is_an_error() -> None:
    async def fails(request: Request) -> Response:
        raise ValueError("plain failure")

    with (
        TestApp(make_app(one_route(fails, timeout=5))) as client,
        pytest.raises(ValueError, match="plain failure"),
    ):
        client.get("/")


def test_a_fast_view_is_untouched_and_the_environ_is_marked_only_for_504() -> None:
    seen: list[dict[str, Any]] = []

    class Marker:
        def __init__(self, app: Router):
            self.app = app
            self.registry = app.registry

        def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
            seen.append(environ)
            return self.app(environ, start_response)

    app = make_app(one_route(sleepy, timeout=0.1))
    with TestApp(make_asgi_app(Marker(app), app.registry)) as client:
        client.get("/?s=0")
        client.get("/", status=504)
    assert LIMIT_KEY not in seen[0]
    assert seen[1][LIMIT_KEY] == DEADLINE


# -- synchronized traversal, plain views in threads, the pool ------------------------------


class Leaf:
    pass


class SlowRoot:
    def __init__(self, request: Request):
        self.request = request

    @synchronize
    async def __getitem__(self, name: str) -> Leaf:
        await asyncio.sleep(float(self.request.params.get("s", "5")))
        return Leaf()


def test_synchronized_traversal_is_cancelled_before_the_view_is_found(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def setup(config: Configurator) -> None:
        config.set_root_factory(SlowRoot)
        config.add_view(lambda request: Response("leaf"), context=Leaf)

    with TestApp(make_app(setup, **{TIMEOUT.name: "0.1"})) as client:
        response, took = timed_get(client, "/leaf")
        assert response.status_int == 504
        assert took < ON_TIME
        assert client.get("/leaf?s=0").text == "leaf"
    [line] = deadline_lines(caplog)
    assert "before its view was found" in line
    assert "in __getitem__" in line


def test_a_view_timeout_covers_its_synchronized_permission_check(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def setup(config: Configurator) -> None:
        config.set_security_policy(ACLPolicy())
        config.add_route("guarded", "/guarded", factory=Guarded)
        config.add_view(sleepy, route_name="guarded", permission="view", timeout=0.1)

    with TestApp(make_app(setup)) as client:
        response, took = timed_get(client, "/guarded")
        assert response.status_int == 504
        assert took < ON_TIME
        assert client.get("/guarded?s=0").text == "done "
    [line] = deadline_lines(caplog)
    assert "in __acl__" in line


def test_a_plain_view_in_a_thread_answers_on_time_and_its_late_result_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    finished: list[str] = []

    def slow_plain(request: Request) -> Response:
        request.add_finished_callback(lambda request: finished.append("callback"))
        time.sleep(0.5)
        finished.append("thread")
        return Response("late")

    with TestApp(make_app(one_route(slow_plain, timeout=0.1))) as client:
        response, took = timed_get(client, "/")
        assert response.status_int == 504
        assert took < 0.45  # well before the thread ends
        assert finished == ["callback"]  # the request's end did not wait for the thread
        wait_until(lambda: finished, "the thread to finish", lambda f: "thread" in f)
        wait_until(
            lambda: deadline_lines(caplog), "the late result's log", lambda lines: len(lines) == 2
        )
    late = deadline_lines(caplog)[1]
    assert "function tests.test_deadlines" in late and "slow_plain" in late
    assert "its result was discarded" in late


def test_a_wait_for_a_pool_thread_is_cancelled_and_the_work_never_runs() -> None:
    ran: list[str] = []

    def occupy(request: Request) -> Response:
        time.sleep(0.4)
        return Response("occupied")

    def queued(request: Request) -> Response:
        ran.append("queued")
        return Response("queued")

    def setup(config: Configurator) -> None:
        config.add_route("occupy", "/occupy")
        config.add_view(occupy, route_name="occupy")
        config.add_route("queued", "/queued")
        config.add_view(queued, route_name="queued", timeout=0.1)

    app = make_app(setup, **{"aiopyramid_ng.executor.max_workers": "1"})

    async def main() -> None:
        holder = asyncio.create_task(get_response(app, "/occupy"))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        response = await get_response(app, "/queued")
        assert response.status_int == 504
        assert time.monotonic() - started < 0.3
        assert (await holder).text == "occupied"

    asyncio.run(main())
    assert ran == []


def test_use_executor_functions_are_abandoned_at_the_deadline() -> None:
    from aiopyramid_ng.helpers import use_executor

    @use_executor
    def work() -> str:
        time.sleep(0.4)
        return "worked"

    async def view(request: Request) -> Response:
        return Response(await work())

    with TestApp(make_app(one_route(view, timeout=0.1))) as client:
        response, took = timed_get(client, "/")
        assert response.status_int == 504
        assert took < 0.35


def test_the_executor_pipeline_answers_on_time(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(one_route(blocking, timeout=0.1), **{"aiopyramid_ng.pipeline": "executor"})
    with TestApp(app) as client:
        response, took = timed_get(client, "/?s=0.4")
        assert response.status_int == 504
        assert took < 0.35
        assert client.get("/?s=0").text == "blocked"
        wait_until(lambda: deadline_lines(caplog), "the late log", lambda lines: len(lines) == 2)


# -- WSGI mode, WebSocket handshakes -------------------------------------------------------


def test_wsgi_mode_answers_504() -> None:
    app = make_app(one_route(sleepy), **{TIMEOUT.name: "0.1"})
    client = webtest.TestApp(app)
    started = time.monotonic()
    assert client.get("/", status=504).status_int == 504
    assert time.monotonic() - started < ON_TIME
    assert client.get("/?s=0").text == "done "


async def echo_later(ws: WebSocket) -> None:
    await asyncio.sleep(0.3)  # past the deadline: an accepted connection is not subject to it
    await ws.send(await ws.recv() or "")


def test_a_websocket_handshake_over_its_deadline_is_refused_with_504() -> None:
    def setup(config: Configurator) -> None:
        config.set_root_factory(SlowRoot)
        config.add_view(echo_later, context=Leaf, mapper=WebsocketMapper)

    with TestApp(make_app(setup, **{TIMEOUT.name: "0.1"})) as client:
        with pytest.raises(HandshakeRefused) as refused, client.websocket_connect("/ws"):
            pass
        assert refused.value.status == 504
        with client.websocket_connect("/ws?s=0") as ws:
            ws.send_text("hi")
            assert ws.receive_text() == "hi"


def test_an_accepted_websocket_outlives_the_view_timeout() -> None:
    def setup(config: Configurator) -> None:
        config.add_route("ws", "/ws")
        config.add_view(echo_later, route_name="ws", mapper=WebsocketMapper, timeout=0.05)

    with TestApp(make_app(setup)) as client, client.websocket_connect("/ws") as ws:
        ws.send_text("still here")
        assert ws.receive_text() == "still here"


# -- the request's end: finished callbacks, pyramid_tm -------------------------------------


def test_finished_callbacks_run_before_the_504() -> None:
    finished: list[int] = []

    async def view(request: Request) -> Response:
        request.add_finished_callback(lambda request: finished.append(request.response.status_int))
        await asyncio.sleep(5)
        return Response("never")

    with TestApp(make_app(one_route(view, timeout=0.05))) as client:
        client.get("/", status=504)
        assert finished == [200]


class Recorder:
    """A transaction data manager that records how its transaction ended."""

    def __init__(self) -> None:
        self.ended: list[str] = []

    def abort(self, txn: Any) -> None:
        self.ended.append("abort")

    def tpc_begin(self, txn: Any) -> None:
        pass

    def commit(self, txn: Any) -> None:
        self.ended.append("commit")

    def tpc_vote(self, txn: Any) -> None:
        pass

    def tpc_finish(self, txn: Any) -> None:
        pass

    def tpc_abort(self, txn: Any) -> None:
        self.ended.append("abort")

    def sortKey(self) -> str:
        return "recorder"


def test_a_pyramid_tm_transaction_is_aborted() -> None:
    recorder = Recorder()

    async def view(request: Request) -> Response:
        request.tm.get().join(recorder)
        await asyncio.sleep(float(request.params["s"]))
        return Response("written")

    def setup(config: Configurator) -> None:
        config.include("pyramid_tm")
        one_route(view, timeout=0.1)(config)

    with TestApp(make_app(setup)) as client:
        client.get("/?s=5", status=504)
        assert recorder.ended == ["abort"]
        client.get("/?s=0", status=200)
        assert recorder.ended == ["abort", "commit"]


# -- many requests on one loop; cancellations that are not the deadline's ------------------


def test_interleaved_requests_time_out_independently() -> None:
    app = make_app(one_route(sleepy, timeout=0.15))

    async def main() -> None:
        check = LeakCheck()
        count = 90
        tasks = [
            asyncio.create_task(get_response(app, f"/?n={n}&s={0.5 if n % 3 == 0 else 0.01}"))
            for n in range(count)
        ]
        responses = await asyncio.gather(*tasks)
        for n, response in enumerate(responses):
            if n % 3 == 0:
                assert response.status_int == 504, n
            else:
                assert response.status_int == 200, n
                assert response.text == f"done {n}"
        check.assert_clean(asyncio.get_running_loop())

    asyncio.run(main())


def test_a_servers_cancellation_is_never_taken_for_the_deadline() -> None:
    unwound: list[str] = []

    lingering_view = lingering(unwound, 0.2)

    app = make_app(one_route(lingering_view, timeout=0.05))

    async def main() -> None:
        check = LeakCheck()
        # Cancelled by the "server" before the deadline.
        task = asyncio.create_task(get_response(app))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Cancelled by the "server" while unwinding from the deadline.
        task = asyncio.create_task(get_response(app))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert unwound == ["finally", "finally"]
        check.assert_clean(asyncio.get_running_loop())

    asyncio.run(main())


def test_a_client_disconnect_before_the_deadline_is_a_disconnect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    finished: list[str] = []

    async def view(request: Request) -> Response:
        request.add_finished_callback(lambda request: finished.append("callback"))
        await asyncio.sleep(5)
        return Response("never")

    asgi = make_asgi_app(make_app(one_route(view, timeout=1)))
    scope = scope_from_environ(Request.blank("/").environ)
    sent: list[Any] = []
    received = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        if received == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(0.05)
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    async def main() -> None:
        check = LeakCheck()
        started = time.monotonic()
        await asgi(scope, receive, send)
        assert time.monotonic() - started < 0.5
        check.assert_clean(asyncio.get_running_loop())

    asyncio.run(main())
    assert sent == []
    assert finished == ["callback"]
    assert deadline_lines(caplog) == []


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, 0, "5", True, float("nan"), float("inf")])
def test_a_bad_timeout_option_fails_at_config_time_naming_the_view(bad: object) -> None:
    with pytest.raises(ConfigurationError) as caught:
        make_app(one_route(sleepy, timeout=bad))
    message = str(caught.value)
    assert f"timeout={bad!r}" in message
    assert "tests.test_deadlines.sleepy" in message
    assert "positive number of seconds" in message


def test_a_bad_timeout_setting_fails_at_start_up() -> None:
    with pytest.raises(ConfigurationError, match=f"{TIMEOUT.name} = 'soon' is not a positive"):
        make_app(one_route(sleepy), **{TIMEOUT.name: "soon"})


def test_a_tween_that_swallows_the_deadline_and_a_servers_cancellation_is_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    unwound: list[str] = []

    lingering_view = lingering(unwound, 0.3)

    def setup(config: Configurator) -> None:
        config.add_tween("tests.test_deadlines.swallowing_tween")
        one_route(lingering_view)(config)

    app = make_app(setup, **{TIMEOUT.name: "0.05"})

    async def main() -> None:
        check = LeakCheck()
        task = asyncio.create_task(get_response(app))
        await asyncio.sleep(0.15)  # past the deadline, while the view unwinds
        task.cancel()
        # The tween answered anyway; the server's cancellation, pending as
        # well as the deadline's, still ends the request: no 504 hides it.
        with pytest.raises(asyncio.CancelledError):
            await task
        check.assert_clean(asyncio.get_running_loop())

    asyncio.run(main())
    assert unwound == ["finally"]
    assert deadline_lines(caplog) == []
