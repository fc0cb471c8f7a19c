"""Test an ASGI application in-process with WebTest's API.

::

    from aiopyramid_ng.testing import TestApp

    with TestApp(config.make_asgi_app()) as app:
        assert app.get("/hello").json == {"hello": "world"}

Every request goes through the ASGI path a server would use (scope, request
body messages, the response messages), on an event loop owned by the
``TestApp``.  The loop persists across requests, so a loop-bound resource
(an ``asyncio.Queue``, a connection pool) created in one request serves the
next.  The application's lifespan starts with the ``TestApp`` and shuts
down when it is closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType
from typing import Any
from urllib.parse import quote_from_bytes

import webtest
from webob.util import status_reasons

from .types import ASGIApp, Environ, Message, Scope, StartResponse

__all__ = ["TestApp", "scope_from_environ"]

# Characters a client leaves unescaped in a path (RFC 3986 pchar and "/").
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def scope_from_environ(environ: Environ) -> Scope:
    """Build the ASGI ``http`` scope a server would make for this WSGI environ.

    Like uvicorn, ``path`` and ``raw_path`` include ``root_path``.
    """
    path = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode("latin-1")
    headers: list[tuple[bytes, bytes]] = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").lower()
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            name = key.replace("_", "-").lower()
        else:
            continue
        headers.append((name.encode("latin-1"), value.encode("latin-1")))
    remote = environ.get("REMOTE_ADDR")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": environ.get("SERVER_PROTOCOL", "HTTP/1.1").partition("/")[2] or "1.1",
        "method": environ["REQUEST_METHOD"],
        "scheme": environ.get("wsgi.url_scheme", "http"),
        "path": path.decode("utf-8", "replace"),
        "raw_path": quote_from_bytes(path, safe=_PATH_SAFE).encode("ascii"),
        "root_path": environ.get("SCRIPT_NAME", "").encode("latin-1").decode("utf-8", "replace"),
        "query_string": environ.get("QUERY_STRING", "").encode("latin-1"),
        "headers": headers,
        "server": (environ.get("SERVER_NAME", "localhost"), int(environ.get("SERVER_PORT", 80))),
        "client": (remote, int(environ.get("REMOTE_PORT", 0))) if remote else None,
        "state": {},
    }


async def _exchange(app: ASGIApp, scope: Scope, body: bytes) -> list[Message]:
    """Run one HTTP exchange; return the messages the application sent."""
    sent: list[Message] = []
    finished = asyncio.Event()
    request_sent = False

    async def receive() -> Message:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        # As a server does: nothing more until the response is complete, then
        # a disconnect (the client read its response and left).
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            finished.set()

    try:
        await app(scope, receive, send)
    finally:
        finished.set()
    return sent


class _ASGIAsWSGI:
    """The WSGI callable WebTest drives: each call is one ASGI exchange on ``loop``."""

    def __init__(self, app: ASGIApp, loop: asyncio.AbstractEventLoop):
        self.app = app
        self.loop = loop

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        length = environ.get("CONTENT_LENGTH")
        body = environ["wsgi.input"].read(int(length)) if length else b""
        messages = self.loop.run_until_complete(
            _exchange(self.app, scope_from_environ(environ), body)
        )
        if not messages or messages[0]["type"] != "http.response.start":
            raise RuntimeError(f"The ASGI application sent no response start: {messages!r}")
        start = messages[0]
        status = start["status"]
        start_response(
            f"{status} {status_reasons.get(status, 'Unknown')}",
            [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in start.get("headers", ())
            ],
        )
        return [
            b"".join(m.get("body", b"") for m in messages[1:] if m["type"] == "http.response.body")
        ]


class TestApp(webtest.TestApp):  # type: ignore[misc]
    """A :class:`webtest.TestApp` that serves ``app``, an ASGI application, in-process.

    Same request methods and response objects as WebTest.  Close it (or use
    it as a context manager) to run the lifespan shutdown and close its loop.

    :param lifespan: run the ASGI lifespan protocol (startup now, shutdown on
        close).  An application that rejects lifespan scopes is served anyway,
        as servers do.
    :raises RuntimeError: when the application's lifespan startup fails.
    """

    def __init__(self, app: ASGIApp, *args: Any, lifespan: bool = True, **kwargs: Any):
        self.asgi_app = app
        self.loop = asyncio.new_event_loop()
        super().__init__(_ASGIAsWSGI(app, self.loop), *args, **kwargs)
        self._lifespan_task: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._replies: asyncio.Queue[Message] = asyncio.Queue()
        if lifespan:
            self._lifespan_task = self.loop.create_task(self._serve_lifespan())
            try:
                self._lifespan_step("startup")
            except BaseException:
                self.close()
                raise

    async def _serve_lifespan(self) -> None:
        scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.3"}}
        await self.asgi_app(scope, self._inbox.get, self._replies.put)

    def _lifespan_step(self, step: str) -> None:
        task = self._lifespan_task
        if task is None:
            return

        async def exchange() -> Message | None:
            await self._inbox.put({"type": f"lifespan.{step}"})
            reply = asyncio.ensure_future(self._replies.get())
            await asyncio.wait({reply, task}, return_when=asyncio.FIRST_COMPLETED)
            if reply.done():
                return reply.result()
            reply.cancel()
            return None

        reply = self.loop.run_until_complete(exchange())
        if reply is None:
            # The application ended the lifespan scope without answering: it
            # does not support lifespan (an error is how ASGI apps say so).
            self._lifespan_task = None
            if not task.cancelled():
                task.exception()
            return
        if reply["type"] == f"lifespan.{step}.failed":
            raise RuntimeError(f"Lifespan {step} failed: {reply.get('message', '')}")

    def close(self) -> None:
        """Run the lifespan shutdown, then close the loop.  Idempotent."""
        if self.loop.is_closed():
            return
        try:
            self._lifespan_step("shutdown")
        finally:
            task, self._lifespan_task = self._lifespan_task, None
            try:
                if task is not None:
                    # After its shutdown reply the application returns.
                    self.loop.run_until_complete(task)
            finally:
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                self.loop.close()

    def __enter__(self) -> TestApp:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
