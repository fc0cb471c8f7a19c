"""``aiopyramid_ng.testing.TestApp``, and the same application over WSGI and ASGI."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import webtest
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response

from aiopyramid_ng.asgi import make_asgi_app
from aiopyramid_ng.events import ApplicationStartup
from aiopyramid_ng.testing import TestApp, scope_from_environ
from aiopyramid_ng.types import Receive, ReceiveEvent, Scope, Send, SendEvent
from tests.support.asgi_app import Middleware, make_router
from tests.support.probe import Probe

# -- one application, two paths ----------------------------------------------------

ECHO_BODIES: list[tuple[str, str, dict[str, Any]]] = [
    ("post", "post", {"params": {"a": "\u00e9", "b": "2"}}),
    ("json", "post_json", {"params": {"list": [1, "\u00e9"]}}),
    ("body", "post", {"params": b"\x00raw\xff" * 1000, "content_type": "application/octet-stream"}),
    ("file", "put", {"params": b"seekable" * 100, "content_type": "application/octet-stream"}),
]

ECHO_CASES: list[tuple[str, str, str, dict[str, Any]]] = [
    (f"echo {kind} {how}", method, f"/echo/{kind}?how={how}", kwargs)
    for kind in ("sync", "async", "greenlet")
    for how, method, kwargs in ECHO_BODIES
]

CASES: list[tuple[str, str, str, dict[str, Any]]] = [
    ("sync view", "get", "/sync", {}),
    ("coroutine view", "get", "/async", {}),
    ("greenlet view", "get", "/greenlet", {}),
    ("json renderer", "get", "/json?a=1&b=%C3%A9", {}),
    ("non-ascii path", "get", "/caf%C3%A9/zo%C3%AB", {}),
    ("redirect", "get", "/redirect", {}),
    ("cookies", "get", "/cookies", {}),
    ("head", "head", "/cookies", {}),
    ("exception view", "get", "/teapot", {}),
    ("not found", "get", "/nowhere", {}),
    ("forbidden", "get", "/secret", {}),
    ("permitted", "get", "/secret", {"headers": {"X-Admin": "yes"}}),
    ("streamed body", "get", "/stream", {}),
    ("file body", "get", "/file", {}),
    ("delete", "delete", "/sync", {}),
    *ECHO_CASES,
]


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[webtest.TestApp, TestApp]]:
    """The same pipeline as plain WSGI (WebTest) and over ASGI (TestApp)."""
    pipeline = Middleware(make_router(tmp_path_factory.mktemp("parity")))
    with TestApp(make_asgi_app(pipeline)) as asgi:
        yield webtest.TestApp(pipeline), asgi


def summary(response: webtest.TestResponse) -> tuple[Any, ...]:
    headers = response.headers
    return (
        response.status,
        response.body,
        headers.get("Content-Type"),
        headers.get("Content-Length"),
        headers.get("Location"),
        headers.getall("Set-Cookie"),
        headers.get("X-Middleware"),
    )


@pytest.mark.parametrize(("name", "method", "path", "kwargs"), CASES, ids=[c[0] for c in CASES])
def test_same_results_over_wsgi_and_asgi(
    both: tuple[webtest.TestApp, TestApp], name: str, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    wsgi, asgi = both
    over_wsgi = getattr(wsgi, method)(path, expect_errors=True, **kwargs)
    over_asgi = getattr(asgi, method)(path, expect_errors=True, **kwargs)
    assert summary(over_asgi) == summary(over_wsgi)


# -- TestApp -----------------------------------------------------------------------------


def test_lifespan_runs_with_the_test_app(tmp_path: Path) -> None:
    router = make_router(tmp_path)
    probe: Probe = router.registry.probe
    app = TestApp(make_asgi_app(router))
    assert (probe.counts["startup"], probe.counts["shutdown"]) == (1, 0)
    assert app.get("/sync").text == "sync GET"
    app.close()
    app.close()  # idempotent
    assert (probe.counts["startup"], probe.counts["shutdown"]) == (1, 1)
    assert app.loop.is_closed()


def test_without_lifespan_startup_is_lazy(tmp_path: Path) -> None:
    router = make_router(tmp_path)
    probe: Probe = router.registry.probe
    with TestApp(make_asgi_app(router), lifespan=False) as app:
        assert probe.counts["startup"] == 0
        app.get("/async")
        app.get("/async")
        assert probe.counts["startup"] == 1
    assert probe.counts["shutdown"] == 0


def test_failing_startup_raises(tmp_path: Path) -> None:
    router = make_router(tmp_path)

    def explode(event: Any) -> None:
        raise LookupError("no config")

    router.registry.registerHandler(explode, (ApplicationStartup,))
    with pytest.raises(RuntimeError, match="Lifespan startup failed: LookupError: no config"):
        TestApp(make_asgi_app(router))


async def bare_app(scope: Scope, receive: Receive, send: Send) -> None:
    """An ASGI app without lifespan support, as many raise for unknown scopes."""
    if scope["type"] != "http":
        raise ValueError(f"unsupported scope {scope['type']}")
    await receive()
    body = f"{scope['root_path']}|{scope['path']}|{scope['raw_path'].decode()}".encode()
    # Optional keys left out, as ASGI allows (asgiref's TypedDicts require them).
    loose: Any = send
    await loose({"type": "http.response.start", "status": 299, "headers": [(b"x-one", b"1")]})
    await send({"type": "http.response.body", "body": body, "more_body": True})
    await loose({"type": "http.response.body", "body": b"!"})


def test_app_without_lifespan_support_is_served() -> None:
    with TestApp(bare_app, extra_environ={"SCRIPT_NAME": "/pre"}) as app:
        response = app.get("/caf%C3%A9 x", status=299)
    assert response.status == "299 Unknown"
    assert response.headers["X-One"] == "1"
    assert response.text == "/pre|/pre/caf\u00e9 x|/pre/caf%C3%A9%20x!"


def test_app_sending_nothing_is_an_error() -> None:
    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            raise ValueError("no lifespan")

    with TestApp(silent) as app, pytest.raises(RuntimeError, match="sent no response start"):
        app.get("/")


def _loop_view(request: Request) -> Response:
    return Response(str(id(asyncio.get_running_loop())))


async def _async_loop_view(request: Request) -> Response:
    return _loop_view(request)


def test_one_loop_serves_every_request() -> None:
    with Configurator() as config:
        config.include("aiopyramid_ng")
        config.add_route("loop", "/")
        config.add_view(_async_loop_view, route_name="loop")
        asgi_app = config.make_asgi_app()
    with TestApp(asgi_app) as app:
        seen = {app.get("/").text for _ in range(3)}
        assert seen == {str(id(app.loop))}


def test_scope_from_environ() -> None:
    environ = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "/app",
        "PATH_INFO": "/caf\u00c3\u00a9",
        "QUERY_STRING": "q=1",
        "SERVER_NAME": "example.org",
        "SERVER_PORT": "8080",
        "SERVER_PROTOCOL": "HTTP/1.0",
        "REMOTE_ADDR": "10.1.1.1",
        "REMOTE_PORT": "4000",
        "CONTENT_TYPE": "text/plain",
        "CONTENT_LENGTH": "",
        "HTTP_X_FORWARDED_FOR": "1.2.3.4",
        "wsgi.url_scheme": "https",
    }
    scope = scope_from_environ(environ)
    assert scope["path"] == "/app/caf\u00e9"
    assert scope["raw_path"] == b"/app/caf%C3%A9"
    assert (scope["root_path"], scope["query_string"], scope["http_version"]) == (
        "/app",
        b"q=1",
        "1.0",
    )
    assert scope["headers"] == [(b"content-type", b"text/plain"), (b"x-forwarded-for", b"1.2.3.4")]
    assert (scope["server"], scope["client"], scope["scheme"]) == (
        ("example.org", 8080),
        ("10.1.1.1", 4000),
        "https",
    )


def test_exception_after_headers_reaches_the_test(tmp_path: Path) -> None:
    with (
        TestApp(make_asgi_app(Middleware(make_router(tmp_path)))) as app,
        pytest.raises(RuntimeError, match="late failure"),
    ):
        app.get("/raw-late-error")


def test_unhandled_exception_reaches_the_test_as_under_webtest(tmp_path: Path) -> None:
    with TestApp(make_asgi_app(make_router(tmp_path))) as app:
        with pytest.raises(ValueError, match="boom") as raised:
            app.get("/error")
        # The traceback runs down to the view that raised.
        assert raised.traceback[-1].name == "error_view"
        assert app.get("/sync").status_code == 200  # and the next request is served


def test_unhandled_exception_is_a_500_when_asked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with TestApp(make_asgi_app(make_router(tmp_path)), raise_app_exceptions=False) as app:
        assert app.get("/error", status=500).text == "Internal Server Error"
    assert "ValueError: boom" in caplog.text


def test_watcher_listens_until_the_response_is_complete(tmp_path: Path) -> None:
    """TestApp plays a well-behaved client: one request message, then nothing."""
    calls: list[str] = []
    inner = make_asgi_app(make_router(tmp_path))

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        async def spy() -> ReceiveEvent:
            calls.append("receive")
            message = await receive()
            calls.append(message["type"])
            return message

        async def send_spy(message: SendEvent) -> None:
            calls.append(message["type"])
            await send(message)

        await inner(scope, spy, send_spy)

    with TestApp(recording, lifespan=False) as app:
        assert app.get("/stream").text.startswith("chunk 0")
    # The second receive() is the disconnect watcher's: it is still waiting
    # when the response completes, and is cancelled then.
    assert calls[:3] == ["receive", "http.request", "receive"]
    assert "http.disconnect" not in calls
    assert calls[-1] == "http.response.body"
