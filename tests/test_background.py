"""``request.add_background_task``: work run once the response was sent completely."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import transaction
import webtest
from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPFound
from pyramid.request import Request
from pyramid.response import Response
from pyramid.threadlocal import get_current_request

from aiopyramid_ng.asgi import ASGIApplication, make_asgi_app
from aiopyramid_ng.exceptions import ScopeError
from aiopyramid_ng.settings import DEFAULT_MAX_WORKERS
from aiopyramid_ng.testing import TestApp, scope_from_environ
from tests.support.apps import get_response, make_app
from tests.support.asgi import Message
from tests.support.leaks import LeakCheck

#: What the tasks saw, in the order they ran.
Log = list[tuple[Any, ...]]

marker: contextvars.ContextVar[str] = contextvars.ContextVar("test_background.marker")


def app_with(view: Callable[..., Any], **settings: Any) -> Any:
    """An application serving ``view`` at every path."""

    def setup(config: Configurator) -> None:
        config.add_route("view", "/{path:.*}")
        config.add_view(view, route_name="view")

    return make_app(setup, **settings)


# -- a server played by hand ---------------------------------------------------------


class Client:
    """One HTTP exchange with an ASGI application, recording what it sends in ``log``."""

    def __init__(self, log: Log, path: str = "/") -> None:
        self.log = log
        self.scope = scope_from_environ(Request.blank(path).environ)
        self.left = asyncio.Event()
        self.messages: list[Message] = []

    async def receive(self) -> Message:
        if not self.messages:
            self.messages.append({"type": "http.request"})
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body":
            await asyncio.sleep(0.01)  # a slow client: the task must wait for this send
            self.log.append(("sent", message["body"], message.get("more_body", False)))

    async def call(self, app: ASGIApplication) -> None:
        await app(self.scope, self.receive, self.send)


# -- what the tasks do ---------------------------------------------------------------


def recorder(log: Log) -> tuple[Callable[..., Any], Callable[..., Any]]:
    async def coroutine(tag: Any) -> None:
        await asyncio.sleep(0)
        request = get_current_request()
        log.append(("coroutine", tag, marker.get(None), request.path if request else None))

    def plain(tag: Any) -> None:
        request = get_current_request()
        thread = threading.current_thread() is not threading.main_thread()
        log.append(("plain", tag, marker.get(None), request.path if request else None, thread))

    return coroutine, plain


def test_coroutine_and_plain_tasks_run_in_order_with_the_request_and_its_context() -> None:
    log: Log = []
    coroutine, plain = recorder(log)

    def view(request: Request) -> Response:
        if request.path == "/none":
            return Response("no task")
        marker.set("as added")
        request.add_background_task(coroutine, 1)
        request.add_background_task(plain, tag=2)
        marker.set("changed later")
        return Response("ok")

    with TestApp(app_with(view)) as app:
        assert app.get("/none").text == "no task"
        assert app.get("/").text == "ok"
        # TestApp returns once the tasks are done.
        assert log == [
            ("coroutine", 1, "as added", "/"),
            ("plain", 2, "as added", "/", True),
        ]


def test_tasks_start_once_the_final_body_message_was_sent() -> None:
    log: Log = []

    def body(request: Request) -> Iterator[bytes]:
        yield b"one"
        # Added while the body streams, after Pyramid popped the request.
        request.add_background_task(task)
        yield b"two"

    async def task() -> None:
        request = get_current_request()
        log.append(("task", request.path if request else None))

    def view(request: Request) -> Response:
        request.add_background_task(task)
        return Response(app_iter=body(request))

    async def main() -> None:
        asgi = make_asgi_app(app_with(view))
        await Client(log).call(asgi)
        await asgi.lifecycle.background.join()

    asyncio.run(main())
    assert log == [
        ("sent", b"one", True),
        ("sent", b"two", True),
        ("sent", b"", False),
        ("task", "/"),
        ("task", "/"),
    ]


def test_a_failing_task_is_logged_with_the_request_and_the_next_one_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: Log = []

    async def failing() -> None:
        raise ValueError("boom")

    def also_failing() -> None:
        raise KeyError("bang")

    async def after() -> None:
        log.append(("after",))

    def view(request: Request) -> Response:
        request.add_background_task(failing)
        request.add_background_task(also_failing)
        request.add_background_task(after)
        return Response("fine")

    with caplog.at_level(logging.ERROR, "aiopyramid_ng.background"), TestApp(app_with(view)) as app:
        response = app.post("/somewhere?x=1")
    assert response.status_int == 200
    assert response.text == "fine"
    assert log == [("after",)]
    failures = [r for r in caplog.records if r.name == "aiopyramid_ng.background"]
    assert [r.getMessage() for r in failures] == [
        "Background task tests.test_background.test_a_failing_task_is_logged_with_the_request_"
        "and_the_next_one_runs.<locals>.failing of POST '/somewhere' failed",
        "Background task tests.test_background.test_a_failing_task_is_logged_with_the_request_"
        "and_the_next_one_runs.<locals>.also_failing of POST '/somewhere' failed",
    ]
    assert failures[0].exc_info is not None and failures[0].exc_info[0] is ValueError
    assert failures[1].exc_info is not None and failures[1].exc_info[0] is KeyError


def outcome_app(log: Log, **settings: Any) -> Any:
    """``/ok``, ``/redirect`` (raises HTTPFound), ``/error`` (an exception view), ``/doom``."""

    async def task(tag: str) -> None:
        log.append((tag,))

    def add(request: Request) -> None:
        request.add_background_task(task, request.path + " if it succeeds")
        request.add_background_task(task, request.path + " always", background_always=True)

    def ok(request: Request) -> Response:
        add(request)
        if request.params.get("twice"):
            request.add_background_task(task, "twice if it succeeds")
        if request.params.get("commit_inside"):
            # Between transactions of an explicit manager: none to wait for.
            request.tm.commit()
            request.add_background_task(task, "after the view's commit")
            request.tm.begin()
        return Response("ok")

    def redirect(request: Request) -> Response:
        add(request)
        raise HTTPFound(location="/ok")

    def error(request: Request) -> Response:
        add(request)
        raise ValueError("failed")

    def doom(request: Request) -> Response:
        add(request)
        request.tm.doom()
        return Response("doomed")

    def error_view(request: Request) -> Response:
        return Response("sorry", status=500)

    def setup(config: Configurator) -> None:
        for name, view in [("ok", ok), ("redirect", redirect), ("error", error), ("doom", doom)]:
            config.add_route(name, f"/{name}")
            config.add_view(view, route_name=name)
        config.add_view(error_view, context=ValueError)

    return make_app(setup, **settings)


def test_a_response_of_an_exception_view_runs_only_the_tasks_that_always_run() -> None:
    log: Log = []
    with TestApp(outcome_app(log)) as app:
        app.get("/ok")
        app.get("/redirect", status=302)
        app.get("/error", status=500)
    assert log == [
        ("/ok if it succeeds",),
        ("/ok always",),
        ("/redirect always",),
        ("/error always",),
    ]


def test_with_pyramid_tm_a_task_runs_if_the_transaction_committed() -> None:
    log: Log = []
    settings = {"pyramid.includes": "pyramid_tm", "tm.manager_hook": "pyramid_tm.explicit_manager"}
    with TestApp(outcome_app(log, **settings)) as app:
        app.get("/ok?twice=1")
        app.get("/ok?commit_inside=1")
        app.get("/doom")
        app.get("/error", status=500)
        app.get("/redirect", status=302)
    assert log == [
        ("/ok if it succeeds",),
        ("/ok always",),
        ("twice if it succeeds",),
        ("/ok if it succeeds",),
        ("/ok always",),
        ("after the view's commit",),
        ("/doom always",),
        ("/error always",),
        ("/redirect always",),
    ]


def test_a_transaction_that_fails_to_commit_runs_no_task() -> None:
    log: Log = []

    class FailingCommit:
        def abort(self, txn: Any) -> None:
            pass

        def tpc_begin(self, txn: Any) -> None:
            pass

        def commit(self, txn: Any) -> None:
            pass

        def tpc_vote(self, txn: Any) -> None:
            raise RuntimeError("vote failed")

        def tpc_abort(self, txn: Any) -> None:
            pass

        def sortKey(self) -> str:
            return "failing"

    async def task() -> None:
        log.append(("ran",))

    def view(request: Request) -> Response:
        request.tm.get().join(FailingCommit())
        request.add_background_task(task)
        return Response("ok")

    def failed(request: Request) -> Response:
        return Response("commit failed", status=500)

    def setup(config: Configurator) -> None:
        config.include("pyramid_tm")
        config.add_route("view", "/")
        config.add_view(view, route_name="view")
        config.add_view(failed, context=RuntimeError)

    with TestApp(make_app(setup)) as app:
        app.get("/", status=500)
    assert log == []


def test_the_cookiecutter_harness_transaction_never_commits_so_only_always_runs() -> None:
    log: Log = []
    tm = transaction.TransactionManager(explicit=True)
    tm.begin()
    tm.doom()
    settings = {"pyramid.includes": "pyramid_tm"}
    try:
        with TestApp(
            outcome_app(log, **settings), extra_environ={"tm.active": True, "tm.manager": tm}
        ) as app:
            app.get("/ok")
    finally:
        tm.abort()
    assert log == [("/ok always",)]


def test_a_raised_redirect_runs_no_task_that_waits_for_success() -> None:
    log: Log = []
    coroutine, _ = recorder(log)

    def view(request: Request) -> Response:
        request.add_background_task(coroutine, "if it succeeds")
        raise HTTPFound(location="/elsewhere")

    with TestApp(app_with(view)) as app:
        app.get("/", status=302)
    webtest.TestApp(app_with(view)).get("/", status=302)
    assert log == []


def test_an_unhandled_exception_runs_no_task() -> None:
    log: Log = []
    coroutine, _ = recorder(log)

    def view(request: Request) -> Response:
        request.add_background_task(coroutine, "always", background_always=True)
        raise ValueError("unhandled")

    with TestApp(app_with(view), raise_app_exceptions=False) as app:
        app.get("/", status=500)
    assert log == []


def test_a_client_that_disconnects_before_the_end_gets_no_task_run() -> None:
    log: Log = []
    coroutine, _ = recorder(log)
    waiting = asyncio.Event()

    async def body(request: Request) -> Any:
        yield b"first"
        waiting.set()
        await asyncio.sleep(30)
        yield b"never"

    def view(request: Request) -> Response:
        request.add_background_task(coroutine, "after", background_always=True)
        return Response(app_iter=body(request))

    async def main() -> None:
        asgi = make_asgi_app(app_with(view))
        check = LeakCheck()
        client = Client(log)
        call = asyncio.create_task(client.call(asgi))
        await waiting.wait()
        client.left.set()
        await call
        assert asgi.lifecycle.background.running == {}
        # The plain view ran in the pool, whose threads stay for later requests.
        check.assert_clean(asyncio.get_running_loop(), max_new_threads=DEFAULT_MAX_WORKERS)

    asyncio.run(main())
    assert log == [("sent", b"first", True)]


def test_many_interleaved_requests_each_task_sees_its_own_request() -> None:
    seen: list[tuple[str, str, str, str]] = []

    async def coroutine(n: str) -> None:
        await asyncio.sleep(0.001 * (int(n) % 3))
        request = get_current_request()
        seen.append(("coroutine", n, request.params["n"], marker.get()))

    def plain(n: str) -> None:
        request = get_current_request()
        seen.append(("plain", n, request.params["n"], marker.get()))

    async def view(request: Request) -> Response:
        n = request.params["n"]
        marker.set(n)
        await asyncio.sleep(0.001 * (int(n) % 5))
        request.add_background_task(coroutine, n)
        await asyncio.sleep(0)
        request.add_background_task(plain, n)
        return Response(n)

    async def main() -> None:
        asgi = make_asgi_app(app_with(view))
        check = LeakCheck()
        clients = [Client([], f"/?n={n}") for n in range(60)]
        await asyncio.gather(*(client.call(asgi) for client in clients))
        await asgi.lifecycle.background.join()
        await asgi.lifecycle.shutdown()
        # The pool is stopped; the one thread left is asyncio's, which stopped it.
        check.assert_clean(asyncio.get_running_loop(), max_new_threads=1)

    asyncio.run(main())
    assert len(seen) == 120
    assert all(n == current == context for _, n, current, context in seen)
    assert {kind for kind, *_ in seen} == {"coroutine", "plain"}


# -- the lifespan shutdown ---------------------------------------------------------------


def test_shutdown_waits_for_tasks_then_cancels_and_logs_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: Log = []
    release = threading.Event()

    async def quick() -> None:
        await asyncio.sleep(0.01)
        log.append(("quick",))

    async def endless() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            log.append(("endless unwound",))

    async def never_started() -> None:
        log.append(("never started",))

    def stuck() -> None:
        release.wait(10)
        log.append(("stuck returned",))

    def view(request: Request) -> Response:
        if request.path == "/slow":
            request.add_background_task(endless)
            request.add_background_task(never_started)
        elif request.path == "/stuck":
            request.add_background_task(stuck)
        else:
            request.add_background_task(quick)
        return Response("ok")

    def setup(config: Configurator) -> None:
        config.add_route("view", "/{name}")
        config.add_view(view, route_name="view")

    async def main() -> None:
        asgi = make_asgi_app(
            make_app(setup, **{"aiopyramid_ng.background.shutdown_timeout": "0.2"})
        )
        for path in ("/quick", "/slow", "/stuck"):
            await Client([], path).call(asgi)
        # The thread returns once its task was given up on (after 2 x 0.2 s): until
        # then, stopping the pool waits for it, as for any thread of the pool.
        asyncio.get_running_loop().call_later(0.6, release.set)
        await asgi.lifecycle.shutdown()
        assert ("stuck returned",) in log

    with caplog.at_level(logging.WARNING, "aiopyramid_ng.background"):
        asyncio.run(main())
    assert log[:2] == [("quick",), ("endless unwound",)]
    messages = [r.getMessage() for r in caplog.records if r.name == "aiopyramid_ng.background"]
    prefix = "Background task tests.test_background.test_shutdown_waits_for_tasks_then_cancels"
    assert messages == [
        f"{prefix}_and_logs_the_rest.<locals>.endless of GET '/slow' did not finish within "
        "0.2 s of the shutdown: cancelled",
        f"{prefix}_and_logs_the_rest.<locals>.never_started of GET '/slow' did not finish "
        "within 0.2 s of the shutdown: cancelled",
        f"{prefix}_and_logs_the_rest.<locals>.stuck of GET '/stuck' did not finish within "
        "0.2 s of the shutdown: cancelled",
        "Background tasks of GET '/stuck' are still running in a thread after their "
        "cancellation; left to finish there",
    ]
    assert ("never started",) not in log


# -- WSGI mode -------------------------------------------------------------------------


def test_wsgi_mode_runs_the_tasks_when_the_server_closes_the_response() -> None:
    log: Log = []
    coroutine, plain = recorder(log)
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"body"

        def close(self) -> None:
            closed.append(True)

    def view(request: Request) -> Response:
        marker.set("wsgi")
        request.add_background_task(coroutine, 1)
        request.add_background_task(plain, 2)
        return Response(app_iter=Body())

    app = app_with(view)
    environ = Request.blank("/").environ
    app_iter = app(environ, lambda status, headers, exc_info=None: None)
    assert b"".join(app_iter) == b"body"
    assert log == []  # nothing before close()
    app_iter.close()
    assert closed == [True]
    assert log == [("coroutine", 1, "wsgi", "/"), ("plain", 2, "wsgi", "/", True)]

    log.clear()
    assert webtest.TestApp(app).get("/").text == "body"
    assert len(log) == 2


def test_wsgi_mode_a_layer_around_the_policy_sees_the_response_of_a_request_with_tasks() -> None:
    """What ``wrap_outer`` layers get back is still the response: its status, its headers."""
    from aiopyramid_ng.execution import wrap_execution_policy

    log: Log = []
    coroutine, _ = recorder(log)
    seen: list[tuple[int, str]] = []

    def view(request: Request) -> Response:
        request.add_background_task(coroutine, 1)
        return Response("queued", status=202)

    def layer(enter: Any) -> Any:
        def outer(environ: dict[str, Any], router: Any) -> Any:
            response = enter(environ, router)
            seen.append((response.status_code, response.headers["Content-Type"]))
            response.headers["X-Layer"] = "seen"
            response.status = "201 Created"
            return response

        return outer

    app = app_with(view)
    wrap_execution_policy(app.registry).wrap_outer(layer)
    response = webtest.TestApp(app).get("/", status=201)
    assert response.headers["X-Layer"] == "seen"
    assert seen == [(202, "text/html; charset=UTF-8")]
    assert log == [("coroutine", 1, None, "/")]


def test_wsgi_mode_runs_no_task_for_a_body_the_server_did_not_finish() -> None:
    log: Log = []
    coroutine, _ = recorder(log)

    def view(request: Request) -> Response:
        request.add_background_task(coroutine, 1, background_always=True)
        return Response(app_iter=[b"a", b"b"])

    app_iter = app_with(view)(Request.blank("/").environ, lambda *args: None)
    next(iter(app_iter))
    app_iter.close()
    assert log == []


def test_wsgi_mode_leaves_responses_without_tasks_as_they_are() -> None:
    def view(request: Request) -> Response:
        return Response(app_iter=[b"x"])

    app_iter = app_with(view)(Request.blank("/").environ, lambda *args: None)
    assert app_iter == [b"x"]


def test_wsgi_mode_close_waits_at_most_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    async def endless() -> None:
        await asyncio.sleep(30)

    def view(request: Request) -> Response:
        request.add_background_task(endless)
        return Response("ok")

    app = app_with(view, **{"aiopyramid_ng.background.shutdown_timeout": 0.05})
    with caplog.at_level(logging.WARNING, "aiopyramid_ng.background"):
        assert webtest.TestApp(app).get("/").text == "ok"
    assert [r.getMessage() for r in caplog.records if r.name == "aiopyramid_ng.background"] == [
        "Background task tests.test_background.test_wsgi_mode_close_waits_at_most_the_timeout"
        ".<locals>.endless of GET '/' did not finish within 0.05 s of the response's close(): "
        "cancelled"
    ]


def test_wsgi_mode_refuses_a_task_added_by_a_streamed_body() -> None:
    errors: list[str] = []

    def body(request: Request) -> Iterator[bytes]:
        try:
            request.add_background_task(print)
        except ScopeError as exc:
            errors.append(str(exc))
        yield b"x"

    def view(request: Request) -> Response:
        return Response(app_iter=body(request))

    webtest.TestApp(app_with(view)).get("/")
    assert len(errors) == 1
    assert "its response is already complete" in errors[0]


def test_wsgi_mode_runs_exception_view_responses_only_always_tasks() -> None:
    log: Log = []
    webtest_app = webtest.TestApp(outcome_app(log))
    webtest_app.get("/error", status=500)
    assert log == [("/error always",)]


# -- misuse ----------------------------------------------------------------------------


def test_a_non_callable_is_refused_naming_the_fix() -> None:
    def view(request: Request) -> Response:
        request.add_background_task("send_mail")
        return Response()

    with TestApp(app_with(view)) as app, pytest.raises(TypeError) as raised:
        app.get("/")
    assert "not 'send_mail'" in str(raised.value)
    assert "add_background_task(send_mail, address)" in str(raised.value)
    assert "background.html#background-tasks" in str(raised.value)


def test_a_request_no_server_serves_is_refused_naming_the_fix() -> None:
    def view(request: Request) -> Response:
        request.add_background_task(print)
        return Response()

    async def main() -> None:
        with pytest.raises(ScopeError) as raised:
            await get_response(app_with(view))
        message = str(raised.value)
        assert "add_background_task(builtins.print)" in message
        assert "no aiopyramid_ng server serves it" in message
        assert "call the function directly here" in message

    asyncio.run(main())


def test_a_task_cannot_add_a_task_to_its_finished_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def task() -> None:
        get_current_request().add_background_task(print)

    def view(request: Request) -> Response:
        request.add_background_task(task)
        return Response()

    with caplog.at_level(logging.ERROR, "aiopyramid_ng.background"), TestApp(app_with(view)) as app:
        app.get("/")
    (record,) = [r for r in caplog.records if r.name == "aiopyramid_ng.background"]
    assert record.exc_info is not None
    assert "its response is already complete" in str(record.exc_info[1])


def test_the_shutdown_timeout_setting_is_checked() -> None:
    from pyramid.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="shutdown_timeout = '0' is not a positive"):
        make_app(lambda config: None, **{"aiopyramid_ng.background.shutdown_timeout": "0"})
