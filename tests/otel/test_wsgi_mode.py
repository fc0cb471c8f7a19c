"""Server spans when a plain WSGI server calls the application (WebTest here)."""

from __future__ import annotations

import pytest
from opentelemetry.trace import StatusCode
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response
from pyramid.router import default_execution_policy
from webtest import TestApp as WSGITestApp

from aiopyramid_ng.execution import GreenletExecutionPolicy
from tests.otel.support import Recorder, traced_app

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


def setup(recorder: Recorder) -> object:
    async def hello(request: Request) -> Response:
        with recorder.tracer.start_as_current_span("coroutine"):
            return Response("hello")

    def plain(request: Request) -> Response:
        with recorder.tracer.start_as_current_span("plain"):
            return Response("plain")

    def broken(request: Request) -> Response:
        raise ValueError("broken on purpose")

    def configure(config: Configurator) -> None:
        config.add_route("hello", "/hello/{name}")
        config.add_view(hello, route_name="hello")
        config.add_route("plain", "/plain")
        config.add_view(plain, route_name="plain")
        config.add_route("broken", "/broken")
        config.add_view(broken, route_name="broken")

    return configure


def test_a_wsgi_call_is_one_span_with_its_children(recorder: Recorder) -> None:
    app = WSGITestApp(traced_app(recorder, setup(recorder)))  # type: ignore[arg-type]
    app.get(
        "/hello/world?x=1",
        headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "User-Agent": "probe"},
        extra_environ={"REMOTE_ADDR": "10.1.2.3"},
    )
    app.get("/plain")
    hello, plain = recorder.server_spans()
    assert hello.name == "GET /hello/{name}"
    assert hello.context is not None and f"{hello.context.trace_id:032x}" == TRACE_ID
    attributes = hello.attributes or {}
    assert attributes["http.response.status_code"] == 200
    assert attributes["url.path"] == "/hello/world"
    assert attributes["url.query"] == "x=1"
    assert attributes["server.address"] == "localhost"
    assert attributes["server.port"] == 80
    assert attributes["client.address"] == "10.1.2.3"
    assert attributes["network.protocol.version"] == "1.0"
    assert attributes["user_agent.original"] == "probe"
    assert [child.name for child in recorder.children_of(hello)] == ["coroutine"]
    assert [child.name for child in recorder.children_of(plain)] == ["plain"]
    assert len(recorder.durations()) == 2


def test_an_exception_out_of_the_application_is_an_error(recorder: Recorder) -> None:
    app = WSGITestApp(traced_app(recorder, setup(recorder)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="broken on purpose"):
        app.get("/broken")
    span = recorder.server_span()
    assert span.status.status_code is StatusCode.ERROR
    attributes = span.attributes or {}
    assert "http.response.status_code" not in attributes
    assert attributes["error.type"] == "builtins.ValueError"
    assert [event.name for event in span.events] == ["exception"]  # recorded once


def test_a_policy_set_after_the_commit_is_traced_too(recorder: Recorder) -> None:
    """Another add-on's execution policy, set by a later commit, replaces the wrapped one."""

    def configure(config: Configurator) -> None:
        setup(recorder)(config)  # type: ignore[operator]
        config.commit()
        config.set_execution_policy(default_execution_policy)

    router = traced_app(recorder, configure)
    assert isinstance(router.execution_policy, GreenletExecutionPolicy)
    WSGITestApp(router).get("/plain")
    assert recorder.server_span().name == "GET /plain"
