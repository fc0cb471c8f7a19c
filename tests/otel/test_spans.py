"""Server spans over the ASGI path: names, attributes, parents, statuses, events."""

from __future__ import annotations

import asyncio
import contextvars
import random
import subprocess
import sys
import time
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError
from pyramid.httpexceptions import HTTPNotFound
from pyramid.request import Request
from pyramid.response import Response

from aiopyramid_ng.asgi import make_asgi_app
from aiopyramid_ng.exceptions import HandshakeRefused, WebsocketClosed
from aiopyramid_ng.helpers import synchronize
from aiopyramid_ng.mappers import GreenletMapper
from aiopyramid_ng.otel.attributes import (
    BLOCKING_CALLABLE,
    BLOCKING_DURATION,
    BLOCKING_EVENT,
    POOL_CALLS,
    POOL_RUN,
    POOL_WAIT,
    VIEW,
    WEBSOCKET_ACCEPT_EVENT,
    WEBSOCKET_CLOSE_CODE,
)
from aiopyramid_ng.testing import TestApp
from aiopyramid_ng.websocket import WebSocket, WebsocketMapper
from tests.otel.support import Recorder, exchange, http_scope, routes, traced_app
from tests.support.apps import tick
from tests.support.leaks import LeakCheck

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


class Tree:
    """A resource tree whose every step waits, through synchronize."""

    def __init__(self, recorder: Recorder, depth: int = 0):
        self.recorder = recorder
        self.depth = depth

    @synchronize
    async def __getitem__(self, name: str) -> Tree:
        with self.recorder.tracer.start_as_current_span(f"traverse {name}"):
            await tick()
        return Tree(self.recorder, self.depth + 1)


def setup_views(recorder: Recorder) -> Any:
    tracer = recorder.tracer

    @synchronize
    async def load(n: str) -> str:
        with tracer.start_as_current_span(f"load {n}"):
            await asyncio.sleep(random.random() / 500)
        return n

    async def awaiting(request: Request) -> Response:
        n = request.matchdict["n"]
        with tracer.start_as_current_span(f"coroutine {n}"):
            await asyncio.sleep(random.random() / 500)
        return Response(n)

    def plain(request: Request) -> Response:
        n = request.matchdict["n"]
        with tracer.start_as_current_span(f"plain {n}"):
            time.sleep(random.random() / 1000)
            # From the worker thread back to the loop, and its span under the request's.
            load(n)
        return Response(n)

    def traversed(context: Tree, request: Request) -> Response:
        n = request.params["n"]
        with tracer.start_as_current_span(f"traversed {n}"):
            return Response(n)

    def setup(config: Configurator) -> None:
        config.add_route("awaiting", "/awaiting/{n}")
        config.add_view(awaiting, route_name="awaiting")
        config.add_route("plain", "/plain/{n}")
        config.add_view(plain, route_name="plain")
        config.add_route("tree", "/tree/*traverse", factory=lambda request: Tree(recorder))
        config.add_view(traversed, route_name="tree", mapper=GreenletMapper)

    return setup


def test_opentelemetry_is_imported_only_by_the_otel_package() -> None:
    code = (
        "import sys, aiopyramid_ng, aiopyramid_ng.asgi, aiopyramid_ng.testing\n"
        "from pyramid.config import Configurator\n"
        "with Configurator() as config:\n"
        "    config.include('aiopyramid_ng')\n"
        "    config.make_wsgi_app()\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_interleaved_requests_each_get_their_own_span_and_children(recorder: Recorder) -> None:
    app = make_asgi_app(traced_app(recorder, setup_views(recorder)))
    kinds = ["awaiting", "plain", "tree"]

    def scope(n: int) -> Any:
        kind = kinds[n % 3]
        if kind == "tree":
            return http_scope("/tree/a/b", query=b"n=%d" % n)
        return http_scope(f"/{kind}/{n}")

    async def main() -> list[list[Any]]:
        check = LeakCheck()
        results = await asyncio.gather(*(exchange(app, scope(n), b"") for n in range(200)))
        check.assert_clean(asyncio.get_running_loop(), max_new_threads=32)
        return results

    results = asyncio.run(main())
    for n, sent in enumerate(results):
        assert sent[0]["status"] == 200
        assert sent[-1]["body"] == str(n).encode()
    servers = recorder.server_spans()
    assert len(servers) == 200
    by_n: dict[str, Any] = {}
    for span in servers:
        attributes = span.attributes or {}
        path = attributes["url.path"]
        key = (
            str(attributes["url.query"]).removeprefix("n=")
            if path == "/tree/a/b"
            else str(path).rsplit("/", 1)[1]
        )
        by_n[key] = span
    assert len(by_n) == 200
    for n in range(200):
        span = by_n[str(n)]
        attributes = span.attributes or {}
        kind = kinds[n % 3]
        children = sorted(child.name for child in recorder.children_of(span))
        if kind == "awaiting":
            assert span.name == "GET /awaiting/{n}"
            assert attributes["http.route"] == "/awaiting/{n}"
            assert attributes["url.path"] == f"/awaiting/{n}"
            assert children == [f"coroutine {n}"]
            assert POOL_CALLS not in attributes
        elif kind == "plain":
            assert span.name == "GET /plain/{n}"
            assert attributes["url.path"] == f"/plain/{n}"
            assert children == [f"plain {n}"]
            (plain_span,) = recorder.children_of(span)
            assert [c.name for c in recorder.children_of(plain_span)] == [f"load {n}"]
            assert attributes[POOL_CALLS] == 1
        else:
            assert span.name == "GET /tree/*traverse"
            assert attributes["url.query"] == f"n={n}"
            assert children == ["traverse a", "traverse b", f"traversed {n}"]
        assert attributes["http.response.status_code"] == 200
        assert str(attributes[VIEW]).endswith(kind if kind != "tree" else "traversed")
        assert span.status.status_code is StatusCode.UNSET
    # Every child span belongs to the trace of its request.
    trace_ids = {span.context.trace_id for span in servers if span.context}
    assert len(trace_ids) == 200
    assert {span.context.trace_id for span in recorder.spans() if span.context} == trace_ids


def test_the_attributes_of_a_request(recorder: Recorder) -> None:
    def setup(config: Configurator) -> None:
        config.add_route("hello", "/hello")
        config.add_view(lambda request: Response("hi"), route_name="hello")

    with TestApp(traced_app(recorder, setup)) as app:
        app.get(
            "/hello?a=1",
            headers={"User-Agent": "probe/1.0", "Host": "example.com"},
            extra_environ={"REMOTE_ADDR": "10.1.2.3"},
        )
    span = recorder.server_span()
    assert span.kind is SpanKind.SERVER
    assert span.name == "GET /hello"
    attributes = dict(span.attributes or {})
    # A plain view: one hop to the pool.
    assert attributes.pop(POOL_CALLS) == 1
    assert {attributes.pop(POOL_WAIT), attributes.pop(POOL_RUN)} != set()
    assert attributes.pop(VIEW).startswith("function tests.otel.test_spans")  # type: ignore[union-attr]
    assert attributes == {
        "http.request.method": "GET",
        "http.route": "/hello",
        "http.response.status_code": 200,
        "url.path": "/hello",
        "url.query": "a=1",
        "url.scheme": "http",
        "server.address": "example.com",
        "server.port": 80,
        "client.address": "10.1.2.3",
        "network.protocol.version": "1.0",  # WebTest's SERVER_PROTOCOL
        "user_agent.original": "probe/1.0",
    }
    (point,) = recorder.durations()
    assert point.count == 1
    assert dict(point.attributes or {}) == {
        "http.request.method": "GET",
        "http.route": "/hello",
        "http.response.status_code": 200,
        "url.scheme": "http",
    }


def test_an_incoming_traceparent_is_the_parent(recorder: Recorder) -> None:
    def setup(config: Configurator) -> None:
        config.add_route("hello", "/")
        config.add_view(lambda request: Response("hi"), route_name="hello")

    with TestApp(traced_app(recorder, setup)) as app:
        app.get("/", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    span = recorder.server_span()
    assert span.context is not None and span.parent is not None
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert f"{span.parent.span_id:016x}" == PARENT_ID
    assert span.parent.is_remote


def test_a_request_no_route_matched_is_named_by_its_method(recorder: Recorder) -> None:
    app = make_asgi_app(traced_app(recorder, lambda config: None))
    sent = asyncio.run(exchange(app, http_scope("/nowhere", method="BREW"), b""))
    assert sent[0]["status"] == 404
    span = recorder.server_span()
    assert span.name == "HTTP"
    attributes = span.attributes or {}
    assert "http.route" not in attributes
    assert attributes["http.request.method"] == "_OTHER"
    assert attributes["http.request.method_original"] == "BREW"
    assert attributes["http.response.status_code"] == 404
    assert span.status.status_code is StatusCode.UNSET  # a 404 is the client's error
    assert "error.type" not in attributes


def test_a_failing_view_is_an_error_with_its_exception(recorder: Recorder) -> None:
    def broken(request: Request) -> Response:
        raise ValueError("broken on purpose")

    def setup(config: Configurator) -> None:
        config.add_route("broken", "/broken")
        config.add_view(broken, route_name="broken")

    with TestApp(traced_app(recorder, setup), raise_app_exceptions=False) as app:
        app.get("/broken", status=500)
    span = recorder.server_span()
    assert span.name == "GET /broken"
    assert span.status.status_code is StatusCode.ERROR
    attributes = span.attributes or {}
    assert attributes["http.response.status_code"] == 500
    assert attributes["error.type"] == "500"
    (event,) = span.events
    assert event.name == "exception"
    assert (event.attributes or {})["exception.type"] == "ValueError"
    (point,) = recorder.durations()
    assert (point.attributes or {})["error.type"] == "500"


def test_an_http_exception_below_500_is_no_error(recorder: Recorder) -> None:
    def missing(request: Request) -> Response:
        raise HTTPNotFound()

    def setup(config: Configurator) -> None:
        config.add_route("missing", "/missing")
        config.add_view(missing, route_name="missing")

    with TestApp(traced_app(recorder, setup)) as app:
        app.get("/missing", status=404)
    span = recorder.server_span()
    assert span.events == ()
    assert span.status.status_code is StatusCode.UNSET


def test_a_response_the_add_on_answers_itself_is_traced(recorder: Recorder) -> None:
    """A status answered outside the view, before the application even runs."""
    app = make_asgi_app(traced_app(recorder, lambda config: None), max_body_size=10)
    scope = http_scope("/upload", method="POST", headers=[(b"content-length", b"100")])
    sent = asyncio.run(exchange(app, scope, b"x" * 100))
    assert sent[0]["status"] == 413
    span = recorder.server_span()
    assert span.name == "POST"
    assert (span.attributes or {})["http.response.status_code"] == 413


def test_a_5xx_answered_outside_the_view_is_an_error(recorder: Recorder) -> None:
    router = traced_app(recorder, lambda config: None)
    app = make_asgi_app(router)

    async def failing_start() -> None:
        raise RuntimeError("no database")

    app.lifecycle.ensure_started = failing_start  # type: ignore[method-assign]
    sent = asyncio.run(exchange(app, http_scope("/"), b""))
    assert sent[0]["status"] == 500
    span = recorder.server_span()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "500"


def test_a_subrequest_does_not_rename_the_span(recorder: Recorder) -> None:
    def outer(request: Request) -> Response:
        inner = request.invoke_subrequest(Request.blank("/inner"))
        return Response(f"outer {inner.text}")

    def inner(request: Request) -> Response:
        return Response("inner")

    with TestApp(traced_app(recorder, routes(outer=outer, inner=inner))) as app:
        assert app.get("/outer").text == "outer inner"
    span = recorder.server_span()
    assert span.name == "GET /outer"
    assert str((span.attributes or {})[VIEW]).endswith("outer")


def test_a_websocket_connection_is_one_span_from_handshake_to_close(recorder: Recorder) -> None:
    async def echo(ws: WebSocket) -> None:
        while isinstance(message := await ws.recv(), str) and message != "bye":
            with recorder.tracer.start_as_current_span(f"message {message}"):
                await ws.send(message)
        await ws.close(4000)

    def setup(config: Configurator) -> None:
        config.add_route("echo", "/ws/{room}")
        config.add_view(echo, route_name="echo", mapper=WebsocketMapper)

    with TestApp(traced_app(recorder, setup)) as app, app.websocket_connect("/ws/lobby") as ws:
        ws.send_text("hi")
        assert ws.receive_text() == "hi"
        assert recorder.server_spans() == []  # open until the connection closes
        ws.send_text("bye")
        with pytest.raises(WebsocketClosed):
            ws.receive_text()
    span = recorder.server_span()
    assert span.name == "GET /ws/{room}"
    attributes = span.attributes or {}
    assert attributes["url.scheme"] == "ws"
    assert attributes["http.route"] == "/ws/{room}"
    assert attributes["http.response.status_code"] == 101
    assert attributes[WEBSOCKET_CLOSE_CODE] == 4000
    assert span.status.status_code is StatusCode.UNSET
    assert [event.name for event in span.events] == [WEBSOCKET_ACCEPT_EVENT]
    assert [child.name for child in recorder.children_of(span)] == ["message hi"]
    assert recorder.durations() == []  # a connection's life is no request duration


def test_a_websocket_closed_with_an_internal_error_is_an_error(recorder: Recorder) -> None:
    async def failing(ws: WebSocket) -> None:
        await ws.recv()
        await ws.close(1011)

    def setup(config: Configurator) -> None:
        config.add_route("failing", "/ws")
        config.add_view(failing, route_name="failing", mapper=WebsocketMapper)

    with TestApp(traced_app(recorder, setup)) as app, app.websocket_connect("/ws") as ws:
        ws.send_text("hi")
        with pytest.raises(WebsocketClosed):
            ws.receive_text()
    span = recorder.server_span()
    assert (span.attributes or {})[WEBSOCKET_CLOSE_CODE] == 1011
    assert span.status.status_code is StatusCode.ERROR


def test_a_refused_handshake_has_the_refusal_status(recorder: Recorder) -> None:
    with (
        TestApp(traced_app(recorder, lambda config: None)) as app,
        pytest.raises(HandshakeRefused),
        app.websocket_connect("/nowhere"),
    ):
        pass  # pragma: no cover - refused
    span = recorder.server_span()
    assert (span.attributes or {})["http.response.status_code"] in (403, 404)
    assert span.events == ()


def test_a_blocking_run_becomes_a_span_event(recorder: Recorder) -> None:
    def sleepy(request: Request) -> Response:
        time.sleep(0.03)
        return Response("slept")

    def setup(config: Configurator) -> None:
        config.add_route("sleepy", "/sleepy")
        config.add_view(sleepy, route_name="sleepy", mapper=GreenletMapper)

    router = traced_app(recorder, setup, **{"aiopyramid_ng.debug.blocking_ms": "10"})
    with TestApp(router) as app:
        app.get("/sleepy")
    span = recorder.server_span()
    (event,) = span.events
    assert event.name == BLOCKING_EVENT
    attributes = event.attributes or {}
    assert str(attributes[BLOCKING_CALLABLE]).endswith("sleepy")
    assert float(attributes[BLOCKING_DURATION]) >= 0.03  # type: ignore[arg-type]


def test_pool_wait_and_run_times_are_attributes(recorder: Recorder) -> None:
    def slow(request: Request) -> Response:
        time.sleep(0.05)
        return Response("done")

    def setup(config: Configurator) -> None:
        config.add_route("slow", "/slow/{n}")
        config.add_view(slow, route_name="slow")

    router = traced_app(recorder, setup, **{"aiopyramid_ng.executor.max_workers": "1"})
    app = make_asgi_app(router)

    async def main() -> None:
        await asyncio.gather(*(exchange(app, http_scope(f"/slow/{n}"), b"") for n in range(2)))

    asyncio.run(main())
    waits = []
    for span in recorder.server_spans():
        attributes = span.attributes or {}
        assert attributes[POOL_CALLS] == 1
        assert float(attributes[POOL_RUN]) >= 0.05  # type: ignore[arg-type]
        waits.append(float(attributes[POOL_WAIT]))  # type: ignore[arg-type]
    # One worker: the second request waited for the first one's view.
    assert max(waits) >= 0.04


def test_a_client_that_leaves_mid_request_ends_the_span(recorder: Recorder) -> None:
    def stream(request: Request) -> Response:
        async def chunks() -> Any:
            yield b"first"
            await asyncio.sleep(3600)
            yield b"never"  # pragma: no cover - the client left

        return Response(app_iter=chunks())

    def setup(config: Configurator) -> None:
        config.add_route("stream", "/stream")
        config.add_view(stream, route_name="stream", mapper=GreenletMapper)

    check = LeakCheck()
    with TestApp(traced_app(recorder, setup)) as app:
        with app.stream("/stream") as response:
            assert next(response.iter_body()) == b"first"
            assert recorder.server_spans() == []
        span = recorder.server_span()
        assert (span.attributes or {})["http.response.status_code"] == 200
    check.assert_clean()


def test_work_started_with_the_request_context_is_under_its_span(recorder: Recorder) -> None:
    """A background task run with a copy of the request's context, after the response."""
    later: list[asyncio.Task[None]] = []

    async def background() -> None:
        await tick()
        with recorder.tracer.start_as_current_span("background"):
            await tick()

    async def view(request: Request) -> Response:
        later.append(
            asyncio.get_running_loop().create_task(background(), context=contextvars.copy_context())
        )
        return Response("queued")

    def setup(config: Configurator) -> None:
        config.add_route("queue", "/queue")
        config.add_view(view, route_name="queue")

    app = make_asgi_app(traced_app(recorder, setup))

    async def main() -> None:
        await exchange(app, http_scope("/queue"), b"")
        assert recorder.server_spans() != []  # the request span ended first
        await asyncio.gather(*later)

    asyncio.run(main())
    span = recorder.server_span()
    assert [child.name for child in recorder.children_of(span)] == ["background"]


def test_the_executor_pipeline_keeps_the_parents(recorder: Recorder) -> None:
    router = traced_app(recorder, setup_views(recorder), **{"aiopyramid_ng.pipeline": "executor"})
    with TestApp(router) as app:
        assert app.get("/awaiting/1").text == "1"
        assert app.get("/tree/a?n=2").text == "2"
    spans = {span.name: span for span in recorder.server_spans()}
    assert [c.name for c in recorder.children_of(spans["GET /awaiting/{n}"])] == ["coroutine 1"]
    assert sorted(c.name for c in recorder.children_of(spans["GET /tree/*traverse"])) == [
        "traverse a",
        "traversed 2",
    ]


def test_the_otel_package_needs_the_add_on(recorder: Recorder) -> None:
    config = Configurator()
    config.include("aiopyramid_ng.otel")
    with pytest.raises(ConfigurationError, match=r"config.include\('aiopyramid_ng'\)"):
        config.commit()


def test_the_global_providers_by_default() -> None:
    with Configurator() as config:
        config.include("aiopyramid_ng")
        config.include("aiopyramid_ng.otel")
        config.add_route("hello", "/")
        config.add_view(lambda request: Response("hi"), route_name="hello")
        router = config.make_wsgi_app()
    with TestApp(router) as app:
        assert app.get("/").text == "hi"  # traced into the API's no-op proxies
    assert not trace.get_current_span().is_recording()


def test_an_exception_a_subrequest_raised_is_not_the_request_s(recorder: Recorder) -> None:
    def outer(request: Request) -> Response:
        try:
            request.invoke_subrequest(Request.blank("/inner"), use_tweens=True)
        except ValueError:
            return Response("handled")
        raise AssertionError("not reached")  # pragma: no cover

    def inner(request: Request) -> Response:
        raise ValueError("inner")

    with TestApp(traced_app(recorder, routes(outer=outer, inner=inner))) as app:
        assert app.get("/outer").text == "handled"
    assert recorder.server_span().events == ()


def test_an_error_while_streaming_is_recorded(recorder: Recorder) -> None:
    def stream(request: Request) -> Response:
        def chunks() -> Any:
            yield b"first"
            raise OSError("disk gone")

        return Response(app_iter=chunks())

    def setup(config: Configurator) -> None:
        config.add_route("stream", "/stream")
        config.add_view(stream, route_name="stream", mapper=GreenletMapper)

    app = make_asgi_app(traced_app(recorder, setup))
    with pytest.raises(OSError, match="disk gone"):
        asyncio.run(exchange(app, http_scope("/stream"), b""))
    span = recorder.server_span()
    assert (span.attributes or {})["http.response.status_code"] == 200
    assert [event.name for event in span.events] == ["exception"]


def test_a_handshake_refused_by_a_close_is_a_403(recorder: Recorder) -> None:
    """A server without ``websocket.http.response``: the refusal is a close, answered 403."""
    app = make_asgi_app(traced_app(recorder, lambda config: None))
    scope = http_scope("/nowhere")
    scope["type"] = "websocket"
    scope["scheme"] = "ws"
    del scope["method"]
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "websocket.connect"} if not sent else {"type": "websocket.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    assert [message["type"] for message in sent] == ["websocket.close"]
    assert (recorder.server_span().attributes or {})["http.response.status_code"] == 403


def test_a_blocking_run_without_a_span_is_only_logged(recorder: Recorder) -> None:
    """The detector's observer is process-wide; an application not traced has no span."""
    traced_app(recorder, lambda config: None)  # registers the observer

    def sleepy(request: Request) -> Response:
        time.sleep(0.02)
        return Response("slept")

    with Configurator(settings={"aiopyramid_ng.debug.blocking_ms": "5"}) as config:
        config.include("aiopyramid_ng")
        config.add_route("sleepy", "/")
        config.add_view(sleepy, route_name="sleepy", mapper=GreenletMapper)
        router = config.make_wsgi_app()
    with TestApp(router) as app:
        assert app.get("/").text == "slept"
    assert recorder.spans() == []


def test_an_ended_span_is_left_alone(recorder: Recorder) -> None:
    """What runs later with a copy of the request's context finds the span ended."""
    from opentelemetry.context import Context

    from aiopyramid_ng.otel.providers import Telemetry
    from aiopyramid_ng.otel.span import ServerSpan

    telemetry = Telemetry(recorder.tracer_provider, recorder.meter_provider)
    span = ServerSpan(
        telemetry, "GET", {"http.request.method": "GET", "url.scheme": "http"}, Context()
    )
    span.end()
    request = Request.blank("/")
    request.matched_route = type("Route", (), {"pattern": "/late"})()
    span.routed(request)
    span.called_view("late view")
    span.blocked("late view", 1.0)
    span.failed(ValueError("late"))
    (ended,) = recorder.spans()
    assert ended.name == "GET"
    assert ended.events == ()
    assert dict(ended.attributes or {}) == {"http.request.method": "GET", "url.scheme": "http"}
