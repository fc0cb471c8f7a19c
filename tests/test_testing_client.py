"""``aiopyramid_ng.testing.TestApp``: a drop-in for WebTest, a streamed read, a WebSocket client."""

from __future__ import annotations

import gc
import json
import warnings
from pathlib import Path

import pytest
import webtest
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response
from pyramid.router import Router

from aiopyramid_ng.asgi import make_asgi_app
from aiopyramid_ng.events import ApplicationShutdown
from aiopyramid_ng.exceptions import HandshakeRefused, WebsocketClosed
from aiopyramid_ng.testing import TestApp, close_orphaned
from aiopyramid_ng.types import Receive, Scope, Send
from tests.support import asgi_app, websocket_app
from tests.support.leaks import LeakCheck
from tests.support.probe import Probe


@pytest.fixture
def router(tmp_path: Path) -> Router:
    return asgi_app.make_router(tmp_path)


def probe_of(router: Router) -> Probe:
    probe: Probe = router.registry.probe
    return probe


# -- what webtest.TestApp accepts --------------------------------------------------


def test_a_wsgi_application_is_served_and_is_the_app(router: Router) -> None:
    with TestApp(router) as app:
        assert app.app is router
        assert app.app.registry is router.registry
        assert app.get("/async").status_code == 200
        assert probe_of(router).counts["startup"] == 1  # the lifespan ran
        assert app.app is router  # still, after a request
    assert probe_of(router).counts["shutdown"] == 1


def test_an_asgi_application_stays_the_app(router: Router) -> None:
    asgi = make_asgi_app(router)
    with TestApp(asgi) as app:
        assert app.app is asgi
        assert app.get("/sync").text


def paste_factory(global_config: dict[str, str], **settings: str) -> Router:
    return asgi_app.make_router(Path(settings["file_dir"]))


def test_a_paste_uri_is_loaded(tmp_path: Path) -> None:
    (tmp_path / "test.ini").write_text(
        f"[app:main]\nuse = call:tests.test_testing_client:paste_factory\nfile_dir = {tmp_path}\n"
    )
    with TestApp("config:test.ini", relative_to=str(tmp_path)) as app:
        assert isinstance(app.app, Router)
        assert app.get("/json?a=1").json == {"params": {"a": "1"}, "method": "GET"}


@pytest.mark.parametrize("target", ["http://127.0.0.1:1", None])
def test_a_remote_target_is_refused(
    router: Router, target: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if target is None:
        monkeypatch.setenv("WEBTEST_TARGET_URL", "http://127.0.0.1:2")
    with pytest.raises(ValueError, match="in-process and cannot drive the remote server"):
        TestApp(target or router)


def test_headers_may_be_bytes_as_under_webtest(router: Router) -> None:
    # WebTest accepts them; over ASGI they arrive as a server sends them.
    with TestApp(router) as app:
        response = app.get("/environ/x", headers={"X-Name": b"caf\xc3\xa9"})
    assert response.json["x_name"] == b"caf\xc3\xa9".hex()


def _spelled_view(request: Request) -> Response:
    response = Response("spelled")
    response.headers["ETag"] = '"v1"'
    response.headers["Access-Control-Allow-Methods"] = "POST,OPTIONS"
    return response


def test_header_names_are_spelled_as_the_application_spelled_them() -> None:
    # ASGI carries them lowercase; a suite may read dict(response.headers).
    with Configurator() as config:
        config.add_route("spelled", "/")
        config.add_view(_spelled_view, route_name="spelled")
        router = config.make_wsgi_app()
    with TestApp(router) as app:
        over_asgi = dict(app.get("/").headers)
        with app.stream("/") as streamed:
            assert list(streamed.headers.keys()) == list(over_asgi)
    over_wsgi = dict(webtest.TestApp(router).get("/").headers)
    assert over_asgi == over_wsgi
    assert over_asgi["ETag"] == '"v1"'
    assert over_asgi["Access-Control-Allow-Methods"] == "POST,OPTIONS"


class Manager:
    """Stands for a ``tm.manager`` a test hands to the application."""


def _environ_view(request: Request) -> Response:
    request.environ["paste.testing_variables"]["seen"] = request.environ.get("tm.manager")
    return Response(type(request.environ.get("tm.manager")).__name__)


def _environ_app() -> Router:
    with Configurator() as config:
        config.include("aiopyramid_ng")
        config.add_route("environ", "/")
        config.add_view(_environ_view, route_name="environ")
        return config.make_wsgi_app()


def test_entries_http_cannot_carry_reach_the_app_as_they_are() -> None:
    manager = Manager()
    with TestApp(_environ_app(), extra_environ={"tm.manager": manager}) as app:
        response = app.get("/")
        assert response.text == "Manager"
        # The same object, and what the application wrote into the test's dict.
        assert response.seen is manager
        other = Manager()
        assert app.get("/", extra_environ={"tm.manager": other}).seen is other
        # Nothing stays behind for the next request.
        app.extra_environ = {}
        assert app.get("/").text == "NoneType"


def test_an_asgi_callable_that_raises_reaches_the_test() -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            raise ValueError("no lifespan")
        raise KeyError("asgi failure")

    with TestApp(failing) as app, pytest.raises(KeyError, match="asgi failure"):
        app.get("/")


# -- never closed, hung ------------------------------------------------------------


def test_a_test_app_never_closed_is_cleaned_up_after_it_is_collected(
    router: Router, caplog: pytest.LogCaptureFixture
) -> None:
    check = LeakCheck()
    app = TestApp(router)
    app.get("/async")
    app.get("/stream")
    loop = app.loop
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del app
        gc.collect()
        # The collector itself runs nothing of the loop: it may have
        # interrupted any code at all.
        assert not loop.is_closed()
        assert probe_of(router).counts["shutdown"] == 0
        close_orphaned()
    assert loop.is_closed()
    assert probe_of(router).counts["shutdown"] == 1
    assert [str(w.message) for w in caught] == []
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []
    check.assert_clean()


def test_a_failing_shutdown_of_a_test_app_never_closed_is_a_warning(router: Router) -> None:
    def explode(event: ApplicationShutdown) -> None:
        raise LookupError("shutdown failure")

    router.registry.registerHandler(explode, (ApplicationShutdown,))
    app = TestApp(router)
    loop = app.loop
    with pytest.warns(RuntimeWarning, match="never closed failed to close.*shutdown failure"):
        del app
        gc.collect()
        close_orphaned()
    assert loop.is_closed()


def test_the_next_test_app_closes_the_loops_of_those_collected_unclosed(router: Router) -> None:
    app = TestApp(router)
    loop = app.loop
    del app
    gc.collect()
    with TestApp(router) as another:
        assert loop.is_closed()
        assert probe_of(router).counts["shutdown"] == 1
        assert another.get("/async").status_int == 200


def test_a_failing_shutdown_raises_from_close(router: Router) -> None:
    def explode(event: ApplicationShutdown) -> None:
        raise LookupError("shutdown failure")

    router.registry.registerHandler(explode, (ApplicationShutdown,))
    app = TestApp(router)
    with pytest.raises(RuntimeError, match="Lifespan shutdown failed: LookupError"):
        app.close()
    assert app.loop.is_closed()
    app.close()  # idempotent


def test_a_hung_view_fails_its_test_and_the_next_request_is_served(router: Router) -> None:
    check = LeakCheck()
    with TestApp(router, timeout=0.3) as app:
        with pytest.raises(TimeoutError, match=r"within 0.3 s \(waiting for the response to GET"):
            app.get("/wait")
        assert app.get("/sync").status_code == 200
        # The timed-out request was cancelled where it waited.
        stats = app.get("/stats").json
        assert (stats["watchers"], stats["counts"]["waiting"]) == (0, 1)
    check.assert_clean(app.loop)


# -- streamed responses ------------------------------------------------------------


def test_stream_reads_chunk_by_chunk_and_leaves_midway(router: Router) -> None:
    check = LeakCheck()
    with TestApp(router) as app:
        with app.stream("/sse") as response:
            assert (response.status_code, response.status) == (200, "200 OK")
            assert response.headers["Content-Type"].startswith("text/event-stream")
            assert next(response.iter_body()) == b"data: first\n\n"
        # The client left while the view waited for its second event.
        assert probe_of(router).counts["sse closed"] == 1
        with app.stream("/stream") as response:
            assert response.read() == b"".join(b"chunk %d\n" % n for n in range(5))
        assert probe_of(router).counts["stream closed"] == 1
        with app.stream("/echo/async", method="POST", body=b"a=1") as response:
            assert json.loads(response.read())["length"] == 3
    check.assert_clean(app.loop)


def test_stream_raises_what_the_application_raised(router: Router) -> None:
    with TestApp(router) as app:
        with pytest.raises(ValueError, match="boom"):
            app.stream("/error")
        assert app.get("/sync").status_code == 200


# -- WebSocket ---------------------------------------------------------------------


@pytest.fixture
def ws_router() -> Router:
    return websocket_app.make_router()


def test_websocket_echo_text_and_bytes(ws_router: Router) -> None:
    with TestApp(ws_router) as app:
        with app.websocket_connect("/ws/echo", headers={"X-User": "ann"}) as ws:
            ws.send_text("hello")
            assert ws.receive_text() == "hello"
            ws.send_bytes(b"\x00\xff")
            assert ws.receive_bytes() == b"\x00\xff"
            ws.send_json({"a": [1]})
            assert ws.receive_json() == {"a": [1]}
        assert ws.close_code == 1000
        assert probe_of(ws_router).counts["echo finally"] == 1


def test_websocket_subprotocol_cookies_and_query(ws_router: Router) -> None:
    with TestApp(ws_router) as app:
        with app.websocket_connect("/ws/proto", subprotocols=["v1", "v3"]) as ws:
            assert ws.subprotocol == "v1"
            assert ws.receive_text() == "v1"
        app.set_cookie("flavour", "mint")
        with app.websocket_connect("/ws/info?q=7", headers={"X-User": "bob"}) as ws:
            info = ws.receive_json()
        assert (info["identity"], info["q"], info["cookie"], info["current"]) == (
            "bob",
            "7",
            "mint",
            True,
        )


def test_websocket_close_by_the_application(ws_router: Router) -> None:
    with TestApp(ws_router) as app, app.websocket_connect("/ws/closer") as ws:
        ws.send_text("go")
        with pytest.raises(WebsocketClosed) as closed:
            ws.receive()
        assert (closed.value.code, closed.value.reason) == (4001, "bye")
        assert (ws.close_code, ws.close_reason) == (4001, "bye")
        with pytest.raises(WebsocketClosed):
            ws.send_text("after the close")


def test_websocket_close_by_the_client_reaches_on_close(ws_router: Router) -> None:
    with TestApp(ws_router) as app:
        ws = app.websocket_connect("/ws/room?id=r1")
        assert ws.receive_text() == "welcome"
        ws.send_text("hi")
        assert ws.receive_text() == "room 'hi'"
        ws.close(4321)
        ws.close()  # idempotent
    assert probe_of(ws_router).calls["r1"] == ["open", "message 'hi'", "close 4321"]


@pytest.mark.parametrize(
    ("path", "headers", "status", "body"),
    [
        ("/ws/echo", {}, 403, b"forbidden"),  # the forbidden view's own response
        ("/page", {}, 404, b"No WebSocket endpoint at /page."),
        ("/ws/friends", {"Origin": "https://enemy.example"}, 403, None),
        ("/ws/caf%FF", {}, 400, b"Bad Request: the request is not valid UTF-8\n"),
    ],
)
def test_websocket_refusal_has_the_status(
    ws_router: Router, path: str, headers: dict[str, str], status: int, body: bytes | None
) -> None:
    with TestApp(ws_router) as app:
        with pytest.raises(HandshakeRefused) as refused:
            app.websocket_connect(path, headers=headers)
        assert refused.value.status == status
        if body is not None:
            assert refused.value.body == body
        assert f"refused with {status}" in str(refused.value)


def test_websocket_view_failure_closes_1011_or_reaches_the_test(
    ws_router: Router, caplog: pytest.LogCaptureFixture
) -> None:
    with TestApp(ws_router, raise_app_exceptions=False) as app:
        with app.websocket_connect("/ws/failing") as ws:
            ws.send_text("x")
            with pytest.raises(WebsocketClosed) as closed:
                ws.receive()
        assert closed.value.code == 1011
    assert "ValueError: boom x" in caplog.text


def test_many_interleaved_websocket_sessions_keep_their_own_request(ws_router: Router) -> None:
    check = LeakCheck()
    with TestApp(ws_router) as app:
        sessions = [
            app.websocket_connect("/ws/info", headers={"X-User": f"user{n}"}) for n in range(20)
        ]
        for n, ws in enumerate(sessions):
            assert ws.receive_json()["identity"] == f"user{n}"
        for round_ in range(3):
            for ws in sessions:
                ws.send_text(str(round_))
            for n, ws in reversed(list(enumerate(sessions))):
                assert ws.receive_text() == f"user{n}"
        for ws in sessions[::2]:
            ws.close()
        assert app.get("/stats").json["open"] == 10
        for ws in sessions[1::2]:
            ws.close(1001)
        assert app.get("/stats").json["open"] == 0
    check.assert_clean(app.loop)
