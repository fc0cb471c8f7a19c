"""The ASGI adapter driven message by message, in-process.

These tests play the server with :class:`asgiref.testing.ApplicationCommunicator`
(or plain coroutines), so they can deliver a disconnect at an exact point,
cancel the request's Task, and check what the application saw.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError
from pyramid.request import Request
from pyramid.response import Response
from pyramid.router import Router
from pyramid.threadlocal import get_current_registry

from aiopyramid_ng.asgi import ASGIApplication, find_registry, from_ini, make_asgi_app
from aiopyramid_ng.asgi.body import SPOOL_SIZE
from aiopyramid_ng.events import ApplicationShutdown, ApplicationStartup
from aiopyramid_ng.interfaces import IAppExecutor
from aiopyramid_ng.settings import MAX_BODY_SIZE
from aiopyramid_ng.types import AnyReceive, AnySend, Environ, StartResponse
from tests.support.asgi import Message
from tests.support.asgi_app import FILE_CONTENT, Middleware, make_router
from tests.support.leaks import LeakCheck
from tests.support.probe import Probe

PATIENCE = 30.0


def http_scope(
    path: str = "/", method: str = "GET", headers: Iterable[tuple[bytes, bytes]] = ()
) -> dict[str, Any]:
    path, _, query = path.partition("?")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": list(headers),
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 5000),
    }


class Served:
    """A fresh application (with its probe) per test: events bind to one loop."""

    def __init__(self, directory: Path, **settings: Any):
        self.router = make_router(directory, **settings)
        self.app = make_asgi_app(Middleware(self.router))
        self.probe: Probe = self.router.registry.probe

    def communicator(
        self, path: str, method: str = "GET", headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> ApplicationCommunicator:
        return ApplicationCommunicator(self.app, http_scope(path, method, headers))

    async def request(
        self,
        path: str,
        method: str = "GET",
        body: bytes = b"",
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> list[Message]:
        """Send a whole request; return every message of the response."""
        communicator = self.communicator(path, method, headers)
        await communicator.send_input({"type": "http.request", "body": body, "more_body": False})
        messages = [await communicator.receive_output(PATIENCE)]
        while messages[-1]["type"] != "http.response.body" or messages[-1].get("more_body"):
            messages.append(await communicator.receive_output(PATIENCE))
        await communicator.wait(PATIENCE)
        return messages

    async def wait_for(self, condition: Any) -> None:
        while not condition(self.probe.counts):
            await asyncio.sleep(0.001)


@pytest.fixture
def served(tmp_path: Path) -> Served:
    return Served(tmp_path)


def body_of(messages: list[Message]) -> bytes:
    return b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


async def first_messages(
    app: ASGIApplication, count: int, scope: dict[str, Any] | None = None
) -> list[Message]:
    """Send ``app`` an empty request; return its first ``count`` messages once it has finished."""
    communicator = ApplicationCommunicator(app, scope or http_scope())
    await communicator.send_input({"type": "http.request"})
    messages = [await communicator.receive_output(PATIENCE) for _ in range(count)]
    await communicator.wait(PATIENCE)
    return messages


# -- responses ---------------------------------------------------------------------


def test_chunks_are_sent_as_produced(served: Served) -> None:
    async def scenario() -> None:
        communicator = served.communicator("/sse")
        await communicator.send_input({"type": "http.request", "body": b""})
        start = await communicator.receive_output(PATIENCE)
        assert (start["status"], dict(start["headers"])[b"content-type"]) == (
            200,
            b"text/event-stream; charset=UTF-8",
        )
        first = await communicator.receive_output(PATIENCE)
        # The generator is parked on an unset Event: this chunk was sent first.
        assert (first["body"], first["more_body"]) == (b"data: first\n\n", True)
        assert not served.probe.event("sse").is_set()
        served.probe.event("sse").set()
        assert (await communicator.receive_output(PATIENCE))["body"] == b"data: second\n\n"
        assert await communicator.receive_output(PATIENCE) == {
            "type": "http.response.body",
            "body": b"",
            "more_body": False,
        }
        await communicator.wait(PATIENCE)

    asyncio.run(scenario())
    assert served.probe.counts["sse closed"] == 1


def test_list_body_is_one_final_message(served: Served) -> None:
    messages = asyncio.run(served.request("/sync"))
    assert [m["type"] for m in messages] == ["http.response.start", "http.response.body"]
    assert (messages[1]["body"], messages[1]["more_body"]) == (b"sync GET", False)


def test_async_iterator_and_file_bodies(served: Served) -> None:
    assert body_of(asyncio.run(served.request("/async-stream"))) == b"async chunk\n" * 3
    assert served.probe.counts["async stream closed"] == 1
    file_messages = asyncio.run(served.request("/file"))
    assert body_of(file_messages) == FILE_CONTENT
    # Read in several chunks, never as one block.
    assert len([m for m in file_messages if m.get("body")]) > 1


def test_head_sends_headers_only(served: Served) -> None:
    messages = asyncio.run(served.request("/cookies", method="HEAD"))
    assert messages[0]["status"] == 200
    assert (b"content-length", b"7") in messages[0]["headers"]
    assert body_of(messages) == b""


def test_head_pulls_a_lazy_generator_only_until_start_response() -> None:
    pulled: list[int] = []

    def lazy_app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        for number in range(3):
            pulled.append(number)
            yield b"x"

    messages = asyncio.run(first_messages(make_asgi_app(lazy_app), 2, http_scope(method="HEAD")))
    assert (messages[0]["status"], body_of(messages), pulled) == (200, b"", [0])


def test_multiple_set_cookie_headers_are_kept(served: Served) -> None:
    headers = asyncio.run(served.request("/cookies"))[0]["headers"]
    assert [v for k, v in headers if k == b"set-cookie"] == [
        b"first=1; Path=/",
        b"second=2; Path=/",
    ]


class ClosingBody:
    """An app_iter that counts its close() calls and can fail mid-way."""

    def __init__(self, fail: bool = False):
        self.closed = 0
        self.fail = fail

    def __iter__(self) -> Iterator[bytes]:
        yield b"one"
        if self.fail:
            raise RuntimeError("mid-body failure")
        yield b"two"

    def close(self) -> None:
        self.closed += 1


def wsgi_app_with(body: ClosingBody, calls_legacy_write: bool = False) -> Any:
    def app(environ: Environ, start_response: StartResponse) -> ClosingBody:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        if calls_legacy_write:
            write(b"written ")
        return body

    return app


def test_legacy_write_callable_and_close_once() -> None:
    body = ClosingBody()
    app = make_asgi_app(wsgi_app_with(body, calls_legacy_write=True))

    assert body_of(asyncio.run(first_messages(app, 5))) == b"written onetwo"
    assert body.closed == 1


def test_exception_after_headers_propagates_and_closes_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = ClosingBody(fail=True)
    app = make_asgi_app(wsgi_app_with(body))

    async def scenario() -> list[Message]:
        communicator = ApplicationCommunicator(app, http_scope())
        await communicator.send_input({"type": "http.request"})
        with pytest.raises(RuntimeError, match="mid-body failure"):
            await communicator.wait(PATIENCE)
        # Everything the application sent, read once it has failed (a request
        # that never waits may fail before the test reads its first message).
        queue = communicator.output_queue
        return [queue.get_nowait() for _ in range(queue.qsize())]

    messages = asyncio.run(scenario())
    # Headers and the first chunk went out; no final message pretends success.
    assert [m.get("more_body") for m in messages] == [None, True]
    assert body.closed == 1
    assert "Error while streaming the response" in caplog.text


@pytest.mark.parametrize(
    ("app_behaviour", "logged"),
    [
        ("raise", "RuntimeError: before anything"),
        ("bad status", "Invalid WSGI status 'OK'"),
        ("no start", "produced a body before calling start_response()"),
        ("start twice", "start_response() was called twice"),
    ],
)
def test_errors_before_headers_are_500(
    caplog: pytest.LogCaptureFixture, app_behaviour: str, logged: str
) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        if app_behaviour == "raise":
            raise RuntimeError("before anything")
        if app_behaviour == "bad status":
            start_response("OK", [])
        if app_behaviour == "start twice":
            start_response("200 OK", [])
            start_response("200 OK", [])
        return [b"body"]

    messages = asyncio.run(first_messages(make_asgi_app(app), 2))
    assert (messages[0]["status"], body_of(messages)) == (500, b"Internal Server Error")
    assert logged in caplog.text
    assert "Traceback" in caplog.text


def test_start_response_with_exc_info_replaces_pending_headers() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [("X-First", "1")])
        try:
            raise ValueError("changed my mind")
        except ValueError as exc:
            start_response(
                "503 Service Unavailable", [("X-Second", "2")], (type(exc), exc, exc.__traceback__)
            )
        return [b"sorry"]

    messages = asyncio.run(_one_request(make_asgi_app(app)))
    assert (messages[0]["status"], messages[0]["headers"], body_of(messages)) == (
        503,
        [(b"x-second", b"2")],
        b"sorry",
    )


def test_start_response_with_exc_info_after_headers_reraises() -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"sent"
        try:
            raise ValueError("too late")
        except ValueError as exc:
            start_response("500 Internal Server Error", [], (type(exc), exc, exc.__traceback__))

    with pytest.raises(ValueError, match="too late"):
        asyncio.run(_one_request(make_asgi_app(app)))


async def _one_request(app: ASGIApplication) -> list[Message]:
    sent: list[Message] = []
    received = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> Message:
        if received:
            return received.pop()
        await asyncio.Event().wait()  # the watcher waits here until cancelled
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    await app(http_scope(), receive, send)
    return sent


# -- request bodies ------------------------------------------------------------------


def test_body_in_chunks_spills_to_a_file(served: Served) -> None:
    data = bytes(range(256)) * (SPOOL_SIZE // 256 + 100)

    async def scenario() -> list[Message]:
        communicator = served.communicator("/echo/async?how=file")
        for offset in range(0, len(data), 65536):
            chunk = data[offset : offset + 65536]
            await communicator.send_input(
                {"type": "http.request", "body": chunk, "more_body": True}
            )
        await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
        messages = [
            await communicator.receive_output(PATIENCE),
            await communicator.receive_output(PATIENCE),
        ]
        await communicator.wait(PATIENCE)
        return messages

    result = json.loads(body_of(asyncio.run(scenario())))
    assert result == {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_disconnect_during_upload_never_runs_the_app(served: Served) -> None:
    async def scenario() -> None:
        communicator = served.communicator("/echo/async")
        await communicator.send_input(
            {"type": "http.request", "body": b"partial", "more_body": True}
        )
        await communicator.send_input({"type": "http.disconnect"})
        await communicator.wait(PATIENCE)
        assert communicator.output_queue.empty()

    asyncio.run(scenario())
    assert served.probe.counts["echo"] == 0


@pytest.mark.parametrize(
    ("headers", "chunks", "status"),
    [
        ([(b"content-length", b"1025")], [], 413),  # refused before reading
        ([], [b"x" * 1000, b"x" * 1000], 413),  # chunked, refused on the way
        ([(b"content-length", b"lots")], [], 400),
    ],
)
def test_body_limits(
    tmp_path: Path, headers: list[tuple[bytes, bytes]], chunks: list[bytes], status: int
) -> None:
    served = Served(tmp_path, **{"aiopyramid_ng.max_body_size": "1024"})
    assert served.app.max_body_size == 1024

    async def scenario() -> Message:
        communicator = served.communicator("/echo/async", "POST", headers)
        for chunk in chunks:
            await communicator.send_input(
                {"type": "http.request", "body": chunk, "more_body": True}
            )
        start: Message = await communicator.receive_output(PATIENCE)
        await communicator.receive_output(PATIENCE)
        await communicator.wait(PATIENCE)
        return start

    assert asyncio.run(scenario())["status"] == status
    assert served.probe.counts["echo"] == 0


def test_max_body_size_argument_and_validation(tmp_path: Path) -> None:
    router = make_router(tmp_path)
    assert make_asgi_app(router).max_body_size == MAX_BODY_SIZE.default
    assert make_asgi_app(router, max_body_size=5).max_body_size == 5
    with pytest.raises(
        ConfigurationError, match=r"aiopyramid_ng\.max_body_size = 0 is not a positive"
    ):
        make_asgi_app(router, max_body_size=0)
    with pytest.raises(ConfigurationError, match="'big'"):
        make_asgi_app(make_router(tmp_path, **{"aiopyramid_ng.max_body_size": "big"}))


# -- disconnects and cancellation ------------------------------------------------------


@pytest.mark.parametrize("kind", ["async", "stream"])
def test_disconnect_cancels_at_the_await_point(
    served: Served, kind: str, leak_check: LeakCheck
) -> None:
    async def scenario() -> None:
        communicator = served.communicator(f"/hang/{kind}")
        await communicator.send_input({"type": "http.request"})
        if kind == "stream":
            await communicator.receive_output(PATIENCE)  # headers
            await communicator.receive_output(PATIENCE)  # first chunk
        await served.wait_for(lambda counts: counts[f"entered {kind}"] == 1)
        await communicator.send_input({"type": "http.disconnect"})
        await communicator.future  # ends normally: the cancellation is absorbed
        assert not communicator.future.cancelled()
        assert communicator.future.result() is None
        leak_check.assert_clean(asyncio.get_running_loop())

    asyncio.run(scenario())
    counts = served.probe.counts
    assert (counts[f"finally {kind}"], counts[f"finished {kind}"]) == (1, 1)


def test_disconnect_lets_an_executor_view_finish_first(served: Served) -> None:
    async def scenario() -> None:
        communicator = served.communicator("/hang/executor")
        await communicator.send_input({"type": "http.request"})
        await served.wait_for(lambda counts: counts["entered executor"] == 1)
        await communicator.send_input({"type": "http.disconnect"})
        task = communicator.future
        while not task.cancelling():
            await asyncio.sleep(0.001)
        # Cancelled, yet still waiting for its thread: nothing ran after it.
        assert not task.done()
        assert served.probe.counts["finished executor"] == 0
        served.probe.thread_gate("executor").set()
        await task
        assert task.cancelling() == 0

    asyncio.run(scenario())
    counts = served.probe.counts
    assert (counts["finally executor"], counts["finished executor"]) == (1, 1)


def test_server_cancellation_is_not_absorbed(served: Served) -> None:
    async def scenario() -> None:
        communicator = served.communicator("/hang/async")
        await communicator.send_input({"type": "http.request"})
        await served.wait_for(lambda counts: counts["entered async"] == 1)
        communicator.future.cancel()
        with pytest.raises(asyncio.CancelledError):
            await communicator.future

    asyncio.run(scenario())
    assert served.probe.counts["finished async"] == 1


def test_send_failure_is_a_disconnect(caplog: pytest.LogCaptureFixture) -> None:
    body = ClosingBody()
    app = make_asgi_app(wsgi_app_with(body))

    async def scenario() -> None:
        received = [{"type": "http.request"}]

        async def receive() -> Message:
            if received:
                return received.pop()
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            if message["type"] == "http.response.body":
                raise ConnectionResetError("peer gone")

        await app(http_scope(), receive, send)

    asyncio.run(scenario())
    assert body.closed == 1
    assert "ERROR" not in caplog.text


def test_many_interleaved_requests_with_disconnects(served: Served, leak_check: LeakCheck) -> None:
    async def scenario() -> None:
        hung = [served.communicator("/hang/async") for _ in range(20)]
        for communicator in hung:
            await communicator.send_input({"type": "http.request"})
        finished = await asyncio.gather(
            *(served.request(p) for p in ["/sync", "/async", "/greenlet"] * 20)
        )
        assert {body_of(messages) for messages in finished} == {
            b"sync GET",
            b"async GET",
            b"greenlet greenlet ",
        }
        await served.wait_for(lambda counts: counts["entered async"] == 20)
        for communicator in hung:
            await communicator.send_input({"type": "http.disconnect"})
        await asyncio.gather(*(communicator.future for communicator in hung))
        leak_check.assert_clean(asyncio.get_running_loop(), max_new_threads=10)

    asyncio.run(scenario())
    assert (served.probe.counts["finally async"], served.probe.counts["finished async"]) == (20, 20)


# -- other scopes ----------------------------------------------------------------------


def test_websocket_without_a_websocket_view_is_refused(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> Message:
        communicator = ApplicationCommunicator(served.app, {"type": "websocket", "path": "/ws"})
        await communicator.send_input({"type": "websocket.connect"})
        message: Message = await communicator.receive_output(PATIENCE)
        await communicator.wait(PATIENCE)
        return message

    # Routed like any request (see test_websocket.py): no view here, so the
    # handshake is refused by closing before accepting.
    with caplog.at_level(logging.INFO):
        assert asyncio.run(scenario()) == {"type": "websocket.close", "code": 1000, "reason": ""}
    assert "Refused the WebSocket handshake to '/ws' with status 404" in caplog.text


def test_unknown_scope_type_is_an_error(served: Served) -> None:
    async def receive() -> Message:
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        raise AssertionError("unreachable")

    with pytest.raises(RuntimeError, match="cannot serve ASGI scope type 'webtransport'"):
        asyncio.run(served.app({"type": "webtransport"}, receive, send))


# -- registry, directive, ini -----------------------------------------------------------


def test_find_registry(tmp_path: Path) -> None:
    router = make_router(tmp_path)

    class Holder:
        def __init__(self, registry: Any):
            self.registry = registry

    class Loop:
        def __init__(self) -> None:
            self.app = self

    assert find_registry(router) is router.registry
    assert find_registry(Middleware(Middleware(router))) is router.registry
    assert find_registry(Holder(router.registry)) is router.registry
    assert find_registry(Loop()) is None
    assert find_registry(lambda environ, start_response: []) is None


def test_config_directive_commits_and_wraps(tmp_path: Path) -> None:
    with Configurator(settings={"aiopyramid_ng.max_body_size": "77"}) as config:
        config.include("aiopyramid_ng")
        config.add_route("hello", "/")
        config.add_view(lambda request: Response("hello"), route_name="hello")
        app = config.make_asgi_app()
    assert isinstance(app, ASGIApplication) and isinstance(app.wsgi_app, Router)
    assert (app.registry, app.max_body_size) == (config.registry, 77)
    assert body_of(asyncio.run(_one_request(app))) == b"hello"


def hello_factory(global_config: dict[str, str], **settings: str) -> Router:
    with Configurator(settings=settings) as config:
        config.include("aiopyramid_ng")
        config.add_route("hello", "/")
        config.add_view(
            lambda request: Response(request.registry.settings["greeting"]), route_name="hello"
        )
        return config.make_wsgi_app()


def test_from_ini(tmp_path: Path) -> None:
    ini = tmp_path / "app.ini"
    ini.write_text(
        "[app:main]\nuse = call:tests.asgi.test_app:hello_factory\ngreeting = hi %(who)s\n"
        "aiopyramid_ng.max_body_size = 123\n"
        "[loggers]\nkeys = root\n[handlers]\nkeys = null\n[formatters]\nkeys =\n"
        "[logger_root]\nhandlers = null\n[handler_null]\nclass = NullHandler\nargs = ()\n"
    )
    app = from_ini(str(ini), options={"who": "there"})
    assert app.max_body_size == 123
    assert body_of(asyncio.run(_one_request(app))) == b"hi there"


def test_plain_wsgi_app_without_registry_serves_and_has_a_lifespan() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["PATH_INFO"].encode("latin-1")]

    asgi_app = make_asgi_app(app)
    assert asgi_app.registry is None

    async def scenario() -> list[Message]:
        communicator = ApplicationCommunicator(asgi_app, {"type": "lifespan"})
        await communicator.send_input({"type": "lifespan.startup"})
        replies = [await communicator.receive_output(PATIENCE)]
        await communicator.send_input({"type": "lifespan.shutdown"})
        replies.append(await communicator.receive_output(PATIENCE))
        await communicator.wait(PATIENCE)
        return replies

    assert [r["type"] for r in asyncio.run(scenario())] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert body_of(asyncio.run(_one_request(asgi_app))) == b"/"


# -- lifespan ----------------------------------------------------------------------------


async def _lifespan(app: ASGIApplication, *steps: str) -> list[Message]:
    communicator = ApplicationCommunicator(app, {"type": "lifespan", "asgi": {"version": "3.0"}})
    replies = []
    for step in steps:
        await communicator.send_input({"type": f"lifespan.{step}"})
        replies.append(await communicator.receive_output(PATIENCE))
    await communicator.wait(PATIENCE)
    return replies


def test_lifespan_notifies_startup_and_shutdown_and_stops_the_pool(served: Served) -> None:
    async def scenario() -> list[Message]:
        communicator = ApplicationCommunicator(served.app, {"type": "lifespan"})
        await communicator.send_input({"type": "lifespan.startup"})
        replies = [await communicator.receive_output(PATIENCE)]
        # A request after startup does not notify again; it starts the pool.
        assert body_of(await served.request("/sync")) == b"sync GET"
        await communicator.send_input({"type": "lifespan.shutdown"})
        replies.append(await communicator.receive_output(PATIENCE))
        await communicator.wait(PATIENCE)
        return replies

    holder = served.router.registry.getUtility(IAppExecutor)
    pool = holder.get()
    replies = asyncio.run(scenario())
    assert [r["type"] for r in replies] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    counts = served.probe.counts
    assert (counts["startup"], counts["async startup"], counts["shutdown"]) == (1, 1, 1)
    assert holder.get() is not pool  # the old pool was shut down and dropped
    holder.shutdown()


def test_shutdown_without_startup_notifies_nothing(served: Served) -> None:
    assert [r["type"] for r in asyncio.run(_lifespan(served.app, "shutdown"))] == [
        "lifespan.shutdown.complete"
    ]
    assert served.probe.counts["shutdown"] == 0


def test_failing_startup_reports_and_logs(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    def explode(event: Any) -> None:
        raise OSError("database unreachable")

    served.router.registry.registerHandler(explode, (ApplicationStartup,))
    replies = asyncio.run(_lifespan(served.app, "startup"))
    assert replies == [
        {"type": "lifespan.startup.failed", "message": "OSError: database unreachable"}
    ]
    assert "Application startup failed" in caplog.text and "Traceback" in caplog.text


def test_lazy_startup_once_for_concurrent_first_requests(served: Served) -> None:
    async def scenario() -> None:
        results = await asyncio.gather(*(served.request("/async") for _ in range(10)))
        assert {body_of(messages) for messages in results} == {b"async GET"}

    asyncio.run(scenario())
    assert (served.probe.counts["startup"], served.probe.counts["async startup"]) == (1, 1)


def test_lazy_startup_failure_is_500_and_retried(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[int] = []

    def flaky(event: Any) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("not yet")

    served.router.registry.registerHandler(flaky, (ApplicationStartup,))
    assert asyncio.run(served.request("/async"))[0]["status"] == 500
    assert "Application startup failed during GET '/async'" in caplog.text
    assert body_of(asyncio.run(served.request("/async"))) == b"async GET"
    assert len(attempts) == 2


def test_subscribers_see_the_registry_as_current(served: Served) -> None:
    seen: list[tuple[str, Any, Any]] = []

    def record(event: Any) -> None:
        seen.append((type(event).__name__, get_current_registry(), event.app))

    served.router.registry.registerHandler(record, (ApplicationStartup,))
    served.router.registry.registerHandler(record, (ApplicationShutdown,))
    asyncio.run(_lifespan(served.app, "startup", "shutdown"))
    registry = served.router.registry
    assert seen == [
        ("ApplicationStartup", registry, served.app),
        ("ApplicationShutdown", registry, served.app),
    ]


def test_unexpected_lifespan_message_is_an_error(served: Served) -> None:
    async def scenario() -> None:
        communicator = ApplicationCommunicator(served.app, {"type": "lifespan"})
        await communicator.send_input({"type": "lifespan.restart"})
        with pytest.raises(
            RuntimeError, match=r"Unexpected ASGI lifespan message 'lifespan\.restart'"
        ):
            await communicator.wait(PATIENCE)

    asyncio.run(scenario())


def test_request_view_sees_the_scope(served: Served) -> None:
    seen: list[Any] = []

    async def view(request: Request) -> Response:
        seen.append(request.environ["asgi.scope"]["type"])
        return Response("ok")

    with Configurator() as config:
        config.include("aiopyramid_ng")
        config.add_route("v", "/")
        config.add_view(view, route_name="v")
        app = config.make_asgi_app()
    asyncio.run(_one_request(app))
    assert seen == ["http"]


# -- edges of the protocol ---------------------------------------------------------------


def scripted_receive(*messages: Message, then_raise: BaseException | None = None) -> AnyReceive:
    """receive(): the given messages, then raise ``then_raise`` or wait forever."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then_raise is not None:
            raise then_raise
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return receive


def collecting_send(sent: list[Message]) -> AnySend:
    async def send(message: Message) -> None:
        sent.append(message)

    return send


def text_app(*chunks: bytes, legacy_write: bool = False) -> Any:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        if legacy_write:
            write(b"written")
        return list(chunks)

    return app


def test_multi_chunk_list_and_legacy_write_on_head() -> None:
    sent: list[Message] = []
    request = {"type": "http.request"}
    asyncio.run(
        make_asgi_app(text_app(b"a", b"", b"b", b"c"))(
            http_scope(), scripted_receive(request), collecting_send(sent)
        )
    )
    assert [(m.get("body"), m.get("more_body")) for m in sent[1:]] == [
        (b"a", True),
        (b"b", True),
        (b"c", False),
    ]
    sent.clear()
    asyncio.run(
        make_asgi_app(text_app(b"body", legacy_write=True))(
            http_scope(method="HEAD"), scripted_receive(request), collecting_send(sent)
        )
    )
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert body_of(sent) == b""


def test_file_wrapper_without_registry_uses_the_shared_pool(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(FILE_CONTENT)

    def app(environ: Environ, start_response: StartResponse) -> Any:
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](path.open("rb"), 1024)

    sent: list[Message] = []
    asyncio.run(
        make_asgi_app(app)(
            http_scope(), scripted_receive({"type": "http.request"}), collecting_send(sent)
        )
    )
    assert body_of(sent) == FILE_CONTENT


def test_watcher_ignores_stray_messages_and_reports_its_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent: list[Message] = []
    receive = scripted_receive(
        {"type": "http.request"}, {"type": "http.request"}, then_raise=OSError("transport broke")
    )

    async def yielding_send(message: Message) -> None:
        await asyncio.sleep(0)  # lets the watcher run before the response is complete
        sent.append(message)

    asyncio.run(make_asgi_app(text_app(b"fine"))(http_scope(), receive, yielding_send))
    assert body_of(sent) == b"fine"
    assert "receive() failed while watching for a disconnect" in caplog.text
    assert "transport broke" in caplog.text


def test_error_response_to_a_vanished_client_is_dropped(tmp_path: Path) -> None:
    async def send(message: Message) -> None:
        raise ConnectionResetError("gone")

    served = Served(tmp_path, **{"aiopyramid_ng.max_body_size": "1"})
    headers = [(b"content-length", b"2")]
    asyncio.run(served.app(http_scope("/echo/sync", "POST", headers), scripted_receive(), send))
    assert served.probe.counts["echo"] == 0


def test_websocket_gone_before_connect(served: Served) -> None:
    sent: list[Message] = []
    receive = scripted_receive({"type": "websocket.disconnect", "code": 1000})
    asyncio.run(served.app({"type": "websocket", "path": "/ws"}, receive, collecting_send(sent)))
    assert sent == []


@pytest.mark.parametrize("setting", ["true", None])
def test_gc_freeze_after_startup_is_opt_in(setting: str | None) -> None:
    import gc

    settings = {} if setting is None else {"aiopyramid_ng.gc.freeze_after_startup": setting}
    with Configurator(settings=settings) as config:
        config.include("aiopyramid_ng")
        app = make_asgi_app(config.make_wsgi_app())
    gc.unfreeze()
    try:
        replies = asyncio.run(_lifespan(app, "startup", "shutdown"))
        frozen = gc.get_freeze_count()
    finally:
        gc.unfreeze()
    assert [r["type"] for r in replies] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    # Modules, the registry and its views: thousands of objects alive at startup.
    assert (frozen > 1000) is (setting is not None)


def test_gc_freeze_setting_refuses_what_is_not_a_boolean() -> None:
    settings = {"aiopyramid_ng.gc.freeze_after_startup": "sometimes"}
    refused = pytest.raises(ConfigurationError, match="freeze_after_startup = 'sometimes' is not")
    with refused, Configurator(settings=settings) as config:
        config.include("aiopyramid_ng")
