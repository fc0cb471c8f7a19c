"""WebSocket views in-process: the ASGI ``websocket`` scope driven message by message.

asgiref's ApplicationCommunicator plays the server.  The same application
runs under real servers in ``test_websocket_servers.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import pytest
import webtest
from asgiref.testing import ApplicationCommunicator
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError

from aiopyramid_ng.asgi import ASGIApplication, make_asgi_app
from aiopyramid_ng.asgi.connection import INBOX_SIZE
from aiopyramid_ng.exceptions import see
from aiopyramid_ng.interfaces import IWebsocketConnections
from aiopyramid_ng.settings import WEBSOCKET_ALLOWED_ORIGINS
from aiopyramid_ng.testing import TestApp
from aiopyramid_ng.websocket import WebsocketConnectionView, WebsocketMapper
from aiopyramid_ng.websocket.mapper import _accepts
from aiopyramid_ng.websocket.origins import origin_allowed, parse_origins
from aiopyramid_ng.websocket.tracking import OpenConnections
from tests.support.apps import make_app
from tests.support.asgi import Message
from tests.support.leaks import LeakCheck
from tests.support.probe import Probe
from tests.support.websocket_app import echo, make_router

#: Upper bound for one message to arrive; reached only if something hangs.
PATIENCE = 10.0


class Served:
    def __init__(self, **settings: Any):
        self.router = make_router(**settings)
        self.app = make_asgi_app(self.router)
        self.probe: Probe = self.router.registry.probe


@pytest.fixture
def served() -> Served:
    return Served()


def ws_scope(
    path: str,
    headers: Iterable[tuple[str, str]] = (),
    query: str = "",
    subprotocols: Iterable[str] = (),
    respond: bool = True,
) -> dict[str, Any]:
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "scheme": "ws",
        "http_version": "1.1",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"testserver")]
        + [(name.lower().encode(), value.encode()) for name, value in headers],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 50000),
        "subprotocols": list(subprotocols),
        "extensions": {"websocket.http.response": {}} if respond else {},
        "state": {},
    }


class Client:
    """One WebSocket connection to the application, through a communicator."""

    def __init__(self, app: ASGIApplication, scope: dict[str, Any]):
        self.communicator = ApplicationCommunicator(app, scope)

    async def connect(self) -> Message:
        await self.communicator.send_input({"type": "websocket.connect"})
        return await self.receive()

    async def accepted(self) -> Message:
        message = await self.connect()
        assert message["type"] == "websocket.accept", message
        return message

    async def receive(self) -> Message:
        message: Message = await self.communicator.receive_output(PATIENCE)
        return message

    async def send_text(self, text: str) -> None:
        await self.communicator.send_input({"type": "websocket.receive", "text": text})

    async def send_bytes(self, data: bytes) -> None:
        await self.communicator.send_input({"type": "websocket.receive", "bytes": data})

    async def ask(self, text: str) -> Any:
        await self.send_text(text)
        message = await self.receive()
        return message.get("text", message.get("bytes"))

    async def disconnect(self, code: int = 1000) -> None:
        await self.communicator.send_input({"type": "websocket.disconnect", "code": code})

    async def done(self) -> None:
        await self.communicator.wait(PATIENCE)

    async def final(self) -> Message:
        """Receive one more message, then wait for the application to end; return the message."""
        message = await self.receive()
        await self.done()
        return message


def run(scenario: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(scenario())


async def waiting_client(served: Served, app: ASGIApplication) -> Client:
    """A client of ``app``'s ``/ws/waiting``, once the view waits for a message."""
    client = Client(app, ws_scope("/ws/waiting"))
    await client.accepted()
    while not served.probe.counts["waiting"]:
        await asyncio.sleep(0)
    return client


async def last_message(app: ASGIApplication, path: str) -> Message:
    """Connect to ``path``, expect an accept; return the next message, once the view ended."""
    client = Client(app, ws_scope(path))
    await client.accepted()
    return await client.final()


async def refusal(app: ASGIApplication, scope: dict[str, Any]) -> tuple[int, bytes]:
    """Connect, expect an HTTP response instead of an accept; return it."""
    client = Client(app, scope)
    start = await client.connect()
    assert start["type"] == "websocket.http.response.start", start
    body = await client.receive()
    assert body["type"] == "websocket.http.response.body"
    await client.done()
    return start["status"], body["body"]


# -- messages ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ws/open", "/ws/sync"])
def test_echo_text_and_binary(served: Served, path: str, leak_check: LeakCheck) -> None:
    async def scenario() -> None:
        client = Client(served.app, ws_scope(path))
        assert await client.accepted() == {
            "type": "websocket.accept",
            "subprotocol": None,
            "headers": [],
        }
        assert await client.ask("h\u00e9llo") == "h\u00e9llo"
        await client.send_bytes(b"\x00\xff")
        assert await client.receive() == {
            "type": "websocket.send",
            "bytes": b"\x00\xff",
            "text": None,
        }
        await client.disconnect()
        await client.done()
        leak_check.assert_clean(asyncio.get_running_loop())

    run(scenario)
    finally_count = "echo finally" if path == "/ws/open" else "sync finally"
    assert served.probe.counts[finally_count] == 1


def test_view_returning_closes_with_1000(served: Served) -> None:
    async def scenario() -> Message:
        client = Client(served.app, ws_scope("/ws/proto"))
        await client.accepted()
        assert (await client.receive())["text"] == "none"
        return await client.final()

    assert run(scenario) == {"type": "websocket.close", "code": 1000, "reason": ""}


def test_use_bytes_receives_text_as_bytes(served: Served) -> None:
    async def scenario() -> list[Any]:
        answers = []
        for path in ("/ws/kinds", "/ws/bytes"):
            client = Client(served.app, ws_scope(path))
            await client.accepted()
            answers.append(await client.ask("\u00e9"))
            await client.send_bytes(b"b")
            answers.append((await client.receive())["text"])
            await client.disconnect()
            await client.done()
        return answers

    assert run(scenario) == ["str '\u00e9'", "bytes b'b'", "bytes b'\\xc3\\xa9'", "bytes b'b'"]


@pytest.mark.parametrize(
    ("offered", "selected"),
    [(["v1", "v2"], "v1"), (["x", "v2", "v1"], "v2"), (["x"], None), ([], None)],
)
def test_subprotocol_is_the_first_client_preference_the_view_speaks(
    served: Served, offered: list[str], selected: str | None
) -> None:
    async def scenario() -> tuple[Message, str]:
        client = Client(served.app, ws_scope("/ws/proto", subprotocols=offered))
        accept = await client.accepted()
        text = (await client.receive())["text"]
        await client.done()
        return accept, text

    accept, text = run(scenario)
    assert accept["subprotocol"] == selected
    assert text == (selected or "none")


def test_send_after_close_is_a_clear_error_that_ends_the_view_quietly(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        message = run(lambda: last_message(served.app, "/ws/late"))
    assert message == {"type": "websocket.close", "code": 4002, "reason": ""}
    assert served.probe.errors == [
        "Cannot send on the WebSocket connection to '/ws/late': it is closed (close code "
        "4002). Check `ws.closed` first, or catch ConnectionClosedError where a peer may have "
        f"left (a broadcast). {see('websocket-connection')}"
    ]
    assert "failed" not in caplog.text


def test_sending_another_type_is_a_type_error() -> None:
    async def view(ws: Any) -> None:
        await ws.send(42)

    app = make_asgi_app(make_app(lambda c: _ws_route(c, view)))

    async def scenario() -> Message:
        client = Client(app, ws_scope("/ws"))
        await client.accepted()
        return await client.final()

    assert run(scenario)["code"] == 1011


def test_two_concurrent_receivers_are_refused() -> None:
    async def view(ws: Any) -> None:
        first = asyncio.ensure_future(ws.recv())
        await asyncio.sleep(0)
        try:
            await ws.recv()
        except RuntimeError as exc:
            await ws.send(str(exc))
        await first

    app = make_asgi_app(make_app(lambda c: _ws_route(c, view)))

    async def scenario() -> str:
        client = Client(app, ws_scope("/ws"))
        await client.accepted()
        text: str = (await client.receive())["text"]
        await client.disconnect()
        await client.done()
        return text

    assert "only one may" in run(scenario)


# -- endings -------------------------------------------------------------------------


def test_websocket_closed_raised_deep_inside_closes_with_its_code(served: Served) -> None:
    async def scenario() -> Message:
        client = Client(served.app, ws_scope("/ws/closer"))
        await client.accepted()
        await client.send_text("stop")
        return await client.final()

    assert run(scenario) == {"type": "websocket.close", "code": 4001, "reason": "bye"}


def test_exception_after_accept_closes_with_1011_and_is_logged(
    served: Served, caplog: pytest.LogCaptureFixture, leak_check: LeakCheck
) -> None:
    async def scenario() -> Message:
        client = Client(served.app, ws_scope("/ws/failing"))
        await client.accepted()
        await client.send_text("x")
        message = await client.final()  # the exception was handled: the Task ends normally
        leak_check.assert_clean(asyncio.get_running_loop())
        return message

    with caplog.at_level(logging.ERROR):
        assert run(scenario) == {"type": "websocket.close", "code": 1011, "reason": ""}
    assert caplog.text.count("ValueError: boom x") == 1  # logged once, with the traceback
    assert "WebSocket view for '/ws/failing' failed" in caplog.text


def test_peer_disconnect_ends_a_pending_recv(served: Served, leak_check: LeakCheck) -> None:
    async def scenario() -> None:
        clients = [Client(served.app, ws_scope("/ws/open")) for _ in range(20)]
        for client in clients:
            await client.accepted()
        for client in clients:
            await client.disconnect(1001)
        for client in clients:
            await client.done()
        leak_check.assert_clean(asyncio.get_running_loop())

    run(scenario)
    assert served.probe.counts["echo finally"] == 20


def test_server_cancelling_the_connection_closes_it_with_1001(served: Served) -> None:
    async def scenario() -> Message:
        client = await waiting_client(served, served.app)
        client.communicator.future.cancel()  # what daphne does when it stops
        message = await client.receive()
        with pytest.raises(asyncio.CancelledError):
            await client.communicator.future
        return message

    assert run(scenario) == {"type": "websocket.close", "code": 1001, "reason": ""}
    assert served.probe.counts["waiting finally"] == 1


def test_lifespan_shutdown_closes_open_connections_with_1001(served: Served) -> None:
    async def scenario() -> list[Message]:
        lifespan = ApplicationCommunicator(served.app, {"type": "lifespan"})
        await lifespan.send_input({"type": "lifespan.startup"})
        assert (await lifespan.receive_output(PATIENCE))["type"] == "lifespan.startup.complete"
        rooms = [Client(served.app, ws_scope("/ws/room", query=f"id={n}")) for n in range(3)]
        waiting = Client(served.app, ws_scope("/ws/waiting"))
        for client in [*rooms, waiting]:
            await client.accepted()
        for room in rooms:
            assert (await room.receive())["text"] == "welcome"
        await lifespan.send_input({"type": "lifespan.shutdown"})
        assert (await lifespan.receive_output(PATIENCE))["type"] == "lifespan.shutdown.complete"
        closes = [await client.receive() for client in [*rooms, waiting]]
        for client in [*rooms, waiting]:
            await client.done()
        await lifespan.wait(PATIENCE)
        return closes

    closes = run(scenario)
    assert closes == [{"type": "websocket.close", "code": 1001, "reason": ""}] * 4
    # on_close ran before the close frame went out, while the connection was still open.
    assert {key: calls[-1] for key, calls in served.probe.calls.items()} == {
        "0": "close None",
        "1": "close None",
        "2": "close None",
    }
    assert served.probe.counts["waiting finally"] == 1
    assert len(served.router.registry.getUtility(IWebsocketConnections)) == 0


# -- class-based views ---------------------------------------------------------------


def test_class_view_callbacks_in_order(served: Served) -> None:
    async def scenario() -> None:
        client = Client(served.app, ws_scope("/ws/room", query="id=order"))
        await client.accepted()
        assert (await client.receive())["text"] == "welcome"
        assert await client.ask("a") == "room 'a'"
        await client.send_bytes(b"b")
        assert (await client.receive())["text"] == "room b'b'"
        await client.disconnect(1000)
        await client.done()

    run(scenario)
    assert served.probe.calls["order"] == ["open", "message 'a'", "message b'b'", "close 1000"]


def test_class_view_closing_itself_runs_on_close_once(served: Served) -> None:
    async def scenario() -> Message:
        client = Client(served.app, ws_scope("/ws/room", query="id=self"))
        await client.accepted()
        await client.receive()
        await client.send_text("close")
        return await client.final()

    assert run(scenario) == {"type": "websocket.close", "code": 4000, "reason": "asked"}
    assert served.probe.calls["self"] == ["open", "message 'close'", "close 4000"]


def test_class_view_callback_raising_closes_1011_after_on_close(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> Message:
        client = Client(served.app, ws_scope("/ws/room", query="id=fail"))
        await client.accepted()
        await client.receive()
        await client.send_text("fail")
        return await client.final()

    with caplog.at_level(logging.ERROR):
        assert run(scenario)["code"] == 1011
    assert served.probe.calls["fail"] == ["open", "message 'fail'", "close None"]
    assert "RuntimeError: room failure" in caplog.text


def test_class_view_send_before_it_is_called_is_an_error() -> None:
    view = WebsocketConnectionView(None, None)
    with pytest.raises(RuntimeError, match="no connection"):
        asyncio.run(view.send("x"))


# -- the handshake: routing, security, refusals ----------------------------------------


def test_request_of_the_connection(served: Served) -> None:
    async def scenario() -> dict[str, Any]:
        headers = [("X-User", "alice"), ("Cookie", "flavour=mint")]
        client = Client(served.app, ws_scope("/ws/info", headers=headers, query="q=1"))
        await client.accepted()
        details: dict[str, Any] = json.loads((await client.receive())["text"])
        await client.disconnect()
        await client.done()
        return details

    assert run(scenario) == {
        "identity": "alice",
        "userid": "alice",
        "q": "1",
        "cookie": "mint",
        "current": True,
        "route": "info",
        "path_info": "/ws/info",
        "script_name": "",
        "context": "DefaultRootFactory",
        "subpath": [],
    }


def test_traversal_selects_the_view_by_context(served: Served) -> None:
    async def scenario() -> tuple[dict[str, Any], int]:
        client = Client(served.app, ws_scope("/tree/leaf", headers=[("X-User", "bob")]))
        await client.accepted()
        details: dict[str, Any] = json.loads((await client.receive())["text"])
        await client.disconnect()
        await client.done()
        status, _ = await refusal(served.app, ws_scope("/tree/nothing"))
        return details, status

    details, missing = run(scenario)
    assert (details["context"], details["route"], details["identity"]) == ("Leaf", "tree", "bob")
    assert missing == 404


@pytest.mark.parametrize(
    ("query", "headers", "answer"),
    [
        ("flavour=a", [], "request_param"),
        ("", [("X-Flavour", "b")], "header"),
        ("token=secret", [], "custom"),
    ],
)
def test_predicates_select_the_view(
    served: Served, query: str, headers: list[tuple[str, str]], answer: str
) -> None:
    async def scenario() -> str:
        client = Client(served.app, ws_scope("/ws/pred", headers=headers, query=query))
        await client.accepted()
        text: str = (await client.receive())["text"]
        await client.done()
        return text

    assert run(scenario) == answer


def test_no_matching_predicate_is_404(served: Served) -> None:
    status, _ = run(lambda: refusal(served.app, ws_scope("/ws/pred", query="token=wrong")))
    assert status == 404


def test_permission_denied_is_403_from_the_forbidden_view(served: Served) -> None:
    status, body = run(lambda: refusal(served.app, ws_scope("/ws/echo")))
    assert (status, body) == (403, b"forbidden")
    assert served.probe.counts["echo open"] == 0


def test_permission_granted(served: Served) -> None:
    async def scenario() -> str:
        client = Client(served.app, ws_scope("/ws/echo", headers=[("Cookie", "user=carol")]))
        await client.accepted()
        text: str = await client.ask("hi")
        await client.disconnect()
        await client.done()
        return text

    assert run(scenario) == "hi"


def test_refusal_without_the_http_response_extension_closes_before_accepting(
    served: Served,
) -> None:
    async def scenario() -> Message:
        client = Client(served.app, ws_scope("/ws/echo", respond=False))
        message = await client.connect()
        await client.done()
        return message

    assert run(scenario) == {"type": "websocket.close", "code": 1000, "reason": ""}


def test_unrouted_path_is_404(served: Served) -> None:
    assert run(lambda: refusal(served.app, ws_scope("/nowhere")))[0] == 404


def test_http_view_answering_a_handshake_is_404(served: Served) -> None:
    status, body = run(lambda: refusal(served.app, ws_scope("/page")))
    assert (status, body) == (404, b"No WebSocket endpoint at /page.")


def test_exception_before_accept_is_500_and_logged(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        status, body = run(lambda: refusal(served.app, ws_scope("/ws/broken")))
    assert (status, body) == (500, b"Internal Server Error")
    assert "LookupError: broken before accepting" in caplog.text
    assert "Error during the WebSocket handshake to '/ws/broken'" in caplog.text


def test_startup_failure_refuses_with_500(caplog: pytest.LogCaptureFixture) -> None:
    from aiopyramid_ng.events import ApplicationStartup

    def fail(event: ApplicationStartup) -> None:
        raise RuntimeError("no database")

    app = make_asgi_app(make_app(lambda c: c.add_subscriber(fail, ApplicationStartup)))
    with caplog.at_level(logging.ERROR):
        status, _ = run(lambda: refusal(app, ws_scope("/ws")))
    assert status == 500
    assert "Application startup failed during the WebSocket handshake" in caplog.text


def test_client_gone_before_connect_runs_nothing(served: Served) -> None:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.disconnect", "code": 1006}

    async def send(message: Message) -> None:
        sent.append(message)

    run(lambda: served.app(ws_scope("/ws/open"), receive, send))
    assert sent == []
    assert served.probe.counts["echo open"] == 0


# -- origins -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "origin", "accepted"),
    [
        ("/ws/open", None, True),
        ("/ws/open", "http://testserver", True),
        ("/ws/open", "https://TestServer:443", True),
        ("/ws/open", "http://evil.example", False),
        ("/ws/open", "null", False),
        ("/ws/friends", "https://friend.example", True),
        ("/ws/friends", "http://friend.example", False),
        ("/ws/friends", "http://testserver", True),
    ],
)
def test_origin_check(
    served: Served,
    path: str,
    origin: str | None,
    accepted: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    headers = [("Origin", origin)] if origin else []

    async def scenario() -> Message:
        client = Client(served.app, ws_scope(path, headers=headers))
        message = await client.connect()
        if message["type"] == "websocket.accept":
            await client.disconnect()
        else:
            await client.receive()
        await client.done()
        return message

    with caplog.at_level(logging.WARNING):
        message = run(scenario)
    if accepted:
        assert message["type"] == "websocket.accept"
    else:
        assert (message["type"], message["status"]) == ("websocket.http.response.start", 403)
        assert f"from origin {origin!r}" in caplog.text


@pytest.mark.parametrize(
    ("setting", "accepted"),
    [("https://a.example http://evil.example", True), ("*", True), ("https://a.example", False)],
)
def test_allowed_origins_setting(setting: str, accepted: bool) -> None:
    served = Served(**{WEBSOCKET_ALLOWED_ORIGINS.name: setting})

    async def scenario() -> Message:
        client = Client(
            served.app, ws_scope("/ws/open", headers=[("Origin", "http://evil.example")])
        )
        message = await client.connect()
        client.communicator.stop(exceptions=False)
        return message

    assert (run(scenario)["type"] == "websocket.accept") is accepted


def test_origin_helpers() -> None:
    assert parse_origins("HTTPS://Example.com:443 * http://h:8080/", "x") == frozenset(
        {"https://example.com", "*", "http://h:8080"}
    )
    assert origin_allowed("http://[::1]:8000", "[::1]:8000", frozenset())
    assert origin_allowed("https://host", "host:443", frozenset())
    assert not origin_allowed("https://host", "host:8443", frozenset())
    assert not origin_allowed("http://user@host", "host", frozenset())


@pytest.mark.parametrize(
    "value", ["example.com", "https://example.com/path", "https://a.example?x=1", "ftp//x"]
)
def test_bad_origin_setting_fails_at_commit(value: str) -> None:
    with pytest.raises(ConfigurationError, match=f"{WEBSOCKET_ALLOWED_ORIGINS.name}: '"):
        make_app(lambda config: None, **{WEBSOCKET_ALLOWED_ORIGINS.name: value})


# -- configuration errors ------------------------------------------------------------


def _ws_route(config: Configurator, view: Any, **options: Any) -> None:
    config.add_route("ws", "/ws")
    options.setdefault("mapper", WebsocketMapper)
    config.add_view(view, route_name="ws", **options)


def _http_view(request: Any) -> Any:
    return None


@pytest.mark.parametrize(
    ("view", "options", "message"),
    [
        (_http_view, {"ws_subprotocols": ["a"]}, "apply to WebSocket views only"),
        (_http_view, {"ws_allowed_origins": ["*"]}, "apply to WebSocket views only"),
        (echo, {"ws_subprotocols": "chat"}, "is not a list of subprotocol names"),
        (echo, {"ws_subprotocols": ["a", 1]}, "is not a list of subprotocol names"),
        (echo, {"ws_allowed_origins": "https://a.example"}, "is a string; give a list"),
        (echo, {"ws_allowed_origins": ["a.example"]}, "ws_allowed_origins: 'a.example' is not"),
    ],
)
def test_bad_view_options_fail_at_commit(view: Any, options: dict[str, Any], message: str) -> None:
    if view is echo:
        options = {"mapper": WebsocketMapper, **options}

    def setup(config: Configurator) -> None:
        config.add_route("ws", "/ws")
        config.add_view(view, route_name="ws", **options)

    with pytest.raises(ConfigurationError, match=message):
        make_app(setup)


class _TwoArgs:
    def __init__(self, a: Any, b: Any, c: Any):
        pass

    async def __call__(self, ws: Any) -> None:
        pass


class _NoWs:
    def __init__(self, request: Any):
        pass

    async def __call__(self) -> None:
        pass


async def _two(context: Any, request: Any) -> None:
    pass


@pytest.mark.parametrize(
    ("view", "message"),
    [
        (_two, "does not take exactly one argument"),
        (_TwoArgs, r"takes neither \(context, request\) nor \(request\)"),
        (_NoWs, r"its __call__ does not take \(self, ws\)"),
    ],
)
def test_view_of_the_wrong_shape_fails_at_commit(view: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make_app(lambda config: _ws_route(config, view))


def test_class_taking_request_only_and_attr() -> None:
    class Greeter:
        def __init__(self, request: Any):
            self.request = request

        async def greet(self, ws: Any) -> None:
            await ws.send(f"hello {self.request.params['name']}")

    app = make_asgi_app(make_app(lambda c: _ws_route(c, Greeter, attr="greet")))

    async def scenario() -> str:
        client = Client(app, ws_scope("/ws", query="name=dan"))
        await client.accepted()
        text: str = (await client.receive())["text"]
        await client.done()
        return text

    assert run(scenario) == "hello dan"


# -- without a WebSocket handshake ----------------------------------------------------


def test_plain_wsgi_answers_501(served: Served) -> None:
    response = webtest.TestApp(served.router).get("/ws/open", status=501)
    assert "needs an ASGI server" not in response.text  # worded as the fix, below
    assert "Serve it with an ASGI server" in response.text


def test_http_request_under_asgi_answers_426(served: Served) -> None:
    with TestApp(served.app) as app:
        response = app.get("/ws/open", status=426)
    assert response.headers["Upgrade"] == "websocket"
    assert "connect to it with a WebSocket client" in response.text


# -- many connections ----------------------------------------------------------------


def test_many_interleaved_connections(served: Served, leak_check: LeakCheck) -> None:
    total = 200

    async def one(number: int) -> list[Any]:
        path = "/ws/sync" if number % 2 else "/ws/open"
        client = Client(served.app, ws_scope(path))
        await client.accepted()
        answers = [await client.ask(f"{number}-{turn}") for turn in range(3)]
        if number % 3:
            await client.disconnect()
        else:
            client.communicator.future.cancel()  # the server drops it mid-connection
        with contextlib.suppress(asyncio.CancelledError):
            await client.communicator.future
        return answers

    async def scenario() -> list[list[Any]]:
        results = await asyncio.gather(*(one(n) for n in range(total)))
        leak_check.assert_clean(asyncio.get_running_loop())
        return results

    assert run(scenario) == [[f"{n}-{turn}" for turn in range(3)] for n in range(total)]
    counts = served.probe.counts
    assert counts["echo finally"] + counts["sync finally"] == total


def test_peer_leaving_interrupts_a_view_waiting_elsewhere(
    served: Served, leak_check: LeakCheck
) -> None:
    async def scenario() -> None:
        client = await waiting_client(served, served.app)
        await client.disconnect(1001)
        await client.done()
        assert client.communicator.future.result() is None  # ended normally, not cancelled
        leak_check.assert_clean(asyncio.get_running_loop())

    run(scenario)
    assert served.probe.counts["waiting finally"] == 1


def test_reader_stops_while_the_inbox_is_full(served: Served) -> None:
    async def scenario() -> int:
        client = Client(served.app, ws_scope("/ws/waiting"))
        await client.accepted()
        for number in range(INBOX_SIZE + 5):
            await client.send_text(str(number))
        for _ in range(100):
            await asyncio.sleep(0)
        unread: int = client.communicator.input_queue.qsize()
        client.communicator.future.cancel()
        assert (await client.receive())["code"] == 1001
        with contextlib.suppress(asyncio.CancelledError):
            await client.communicator.future
        return unread

    assert run(scenario) == 5


def _daphne_like(app: ASGIApplication) -> Any:
    """``app`` behind a server that, like daphne, sends only close codes 1000 and 3000-4999."""

    async def served(scope: Any, receive: Any, send: Any) -> None:
        async def strict_send(message: Message) -> None:
            code = message.get("code", 1000)
            if message["type"] == "websocket.close" and code != 1000 and not 3000 <= code < 5000:
                raise Exception(f"invalid close code {code}")
            await send(message)

        await app(scope, receive, strict_send)

    return served


def test_refused_1011_lets_the_error_reach_the_server(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        client = Client(_daphne_like(served.app), ws_scope("/ws/failing"))
        await client.accepted()
        await client.send_text("x")
        with pytest.raises(ValueError, match="boom x"):
            await client.communicator.future  # the server closes with 1011 when it sees this
        assert client.communicator.output_queue.empty()

    with caplog.at_level(logging.ERROR):
        run(scenario)
    assert caplog.text.count("ValueError: boom x") == 1


def test_refused_1001_closes_with_1000(served: Served) -> None:
    async def scenario() -> Message:
        client = await waiting_client(served, _daphne_like(served.app))
        client.communicator.future.cancel()
        message = await client.receive()
        with pytest.raises(asyncio.CancelledError):
            await client.communicator.future
        return message

    assert run(scenario) == {"type": "websocket.close", "code": 1000, "reason": ""}


def test_connection_state_seen_by_the_view(served: Served) -> None:
    async def scenario() -> tuple[str, Message]:
        client = Client(served.app, ws_scope("/ws/state"))
        await client.accepted()
        text: str = (await client.receive())["text"]
        close = await client.receive()
        await client.done()
        return text, close

    text, close = run(scenario)
    assert text == "<WebSocket '/ws/state' open> False websocket ''"
    assert close == {"type": "websocket.close", "code": 4003, "reason": "done"}
    assert served.probe.notes == ["<WebSocket '/ws/state' closed 4003> True 4003 'done'"]


def test_sync_view_closes_with_its_code(served: Served) -> None:
    message = run(lambda: last_message(served.app, "/ws/sync-closer"))
    assert message == {"type": "websocket.close", "code": 4004, "reason": "sync"}


def test_sending_to_another_closed_connection_is_an_error_of_the_sender(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> Message:
        first = Client(served.app, ws_scope("/ws/relay"))
        await first.accepted()
        await first.disconnect()
        await first.done()
        second = Client(served.app, ws_scope("/ws/relay"))
        await second.accepted()
        await second.send_text("go")
        message = await second.receive()
        await second.done()
        return message

    with caplog.at_level(logging.ERROR):
        assert run(scenario)["code"] == 1011
    assert "ConnectionClosedError: Cannot send on the WebSocket connection" in caplog.text


def test_error_after_the_view_ended_is_logged(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        assert run(lambda: last_message(served.app, "/ws/callback-fails"))["code"] == 1000
    assert "Error after the WebSocket view for '/ws/callback-fails' ended" in caplog.text
    assert "RuntimeError: response callback failure" in caplog.text


def test_reader_resumes_once_the_view_reads(served: Served) -> None:
    async def scenario() -> list[Any]:
        client = Client(served.app, ws_scope("/ws/open"))
        await client.accepted()
        count = 3 * INBOX_SIZE
        for number in range(count):
            await client.send_text(str(number))
        answers = [(await client.receive())["text"] for _ in range(count)]
        await client.disconnect()
        await client.done()
        return answers

    assert run(scenario) == [str(number) for number in range(3 * INBOX_SIZE)]


def _scripted(app: ASGIApplication, receive: Any, send: Any, path: str, query: str = "") -> None:
    asyncio.run(app(ws_scope(path, query=query), receive, send))


def test_failing_receive_ends_the_connection_as_1006(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    messages = iter([{"type": "websocket.connect"}, {"type": "websocket.other"}])

    async def receive() -> Message:
        try:
            return next(messages)
        except StopIteration:
            raise RuntimeError("server receive failed") from None

    async def send(message: Message) -> None:
        pass

    with caplog.at_level(logging.WARNING):
        _scripted(served.app, receive, send, "/ws/room", "id=broken-receive")
    assert "Ignored the ASGI message 'websocket.other'" in caplog.text
    assert "Receiving from the WebSocket connection to '/ws/room' failed" in caplog.text
    assert served.probe.calls["broken-receive"] == ["open", "close 1006"]


def test_peer_gone_while_sending(served: Served) -> None:
    connected = asyncio.Event()

    async def scripted() -> None:
        async def receive() -> Message:
            if not connected.is_set():
                connected.set()
                return {"type": "websocket.connect"}
            await asyncio.Event().wait()  # the peer never says anything
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            if message["type"] in ("websocket.send", "websocket.close"):
                raise OSError("peer gone")  # as uvicorn reports a vanished client

        await served.app(ws_scope("/ws/room", query="id=gone"), receive, send)

    asyncio.run(scripted())
    # on_open's send found the peer gone: the view ended quietly, on_close ran.
    assert served.probe.calls["gone"] == ["open", "close 1006"]


def test_client_gone_while_refusing(served: Served) -> None:
    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        raise OSError("peer gone")

    _scripted(served.app, receive, send, "/ws/echo")  # refused: no X-User
    assert served.probe.counts["echo open"] == 0


def test_wsgi_application_without_registry() -> None:
    def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"plain"]

    app = make_asgi_app(wsgi_app)
    assert run(lambda: refusal(app, ws_scope("/anything"))) == (
        404,
        b"No WebSocket endpoint at /anything.",
    )


def test_close_all_without_open_connections() -> None:
    run(OpenConnections().close_all)


def test_views_without_a_signature_are_let_through() -> None:
    assert _accepts(type, 1)  # inspect.signature(type) has none to check


def test_each_connection_keeps_its_own_request(served: Served, leak_check: LeakCheck) -> None:
    async def one(number: int) -> list[str]:
        client = Client(served.app, ws_scope("/ws/info", headers=[("X-User", f"user{number}")]))
        await client.accepted()
        await client.receive()
        answers = []
        for _ in range(3):
            answers.append(await client.ask("who"))
            await asyncio.sleep(0)
        await client.disconnect()
        await client.done()
        return answers

    async def scenario() -> list[list[str]]:
        results = await asyncio.gather(*(one(n) for n in range(30)))
        leak_check.assert_clean(asyncio.get_running_loop())
        return results

    assert run(scenario) == [[f"user{n}"] * 3 for n in range(30)]


def test_sync_connection_used_from_a_worker_thread(served: Served) -> None:
    async def scenario() -> Any:
        client = Client(served.app, ws_scope("/ws/sync-thread"))
        await client.accepted()
        answer = await client.ask("hi")
        await client.done()
        return answer

    assert run(scenario) == "thread 'hi'"
