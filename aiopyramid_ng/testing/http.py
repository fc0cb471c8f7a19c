"""HTTP exchanges with an ASGI application, as a server and its client would have them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType

from asgiref.typing import HTTPResponseStartEvent, WebSocketAcceptEvent, WebSocketResponseStartEvent
from webob.headers import ResponseHeaders
from webob.util import status_reasons

from ..types import ASGIApp, HTTPScope, ReceiveEvent, SendEvent
from .loop import AppCall, TestLoop

__all__ = ["StreamedResponse", "exchange"]


async def exchange(app: ASGIApp, scope: HTTPScope, body: bytes) -> list[SendEvent]:
    """Run one HTTP exchange; return the messages the application sent.

    The client sends the whole body at once and stays until the response is
    complete; then, as a server does, ``receive`` reports the disconnect.
    """
    sent: list[SendEvent] = []
    finished = asyncio.Event()
    request_sent = False

    async def receive() -> ReceiveEvent:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: SendEvent) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            finished.set()

    try:
        await app(scope, receive, send)
    finally:
        finished.set()
    return sent


def status_line(status: int) -> str:
    return f"{status} {status_reasons.get(status, 'Unknown')}"


def response_headers(
    start: HTTPResponseStartEvent | WebSocketAcceptEvent | WebSocketResponseStartEvent,
    names: Mapping[str, str],
) -> ResponseHeaders:
    """The headers of ``start``, each name spelled as in ``names`` (by its lowercase form)."""
    headers = []
    for raw_name, raw_value in start.get("headers", ()):
        name = raw_name.decode("latin-1")
        headers.append((names.get(name, name), raw_value.decode("latin-1")))
    return ResponseHeaders(headers)


class StreamedResponse:
    """A response read as it is produced; :meth:`disconnect` leaves before its end.

    Made by :meth:`aiopyramid_ng.testing.TestApp.stream`.  The status and
    headers are there when it is returned; the body is read with
    :meth:`iter_body` (chunk by chunk, as the application sends them) or
    :meth:`read`.  The application sends each chunk only when the previous
    one was read, as over a socket whose client reads slowly.  Leaving the
    ``with`` block before the end disconnects, as a client closing its
    connection would: the application sees the disconnect where it waits.
    """

    def __init__(
        self,
        loop: TestLoop,
        app: ASGIApp,
        scope: HTTPScope,
        body: bytes,
        check: Callable[[], None],
        header_names: Mapping[str, str],
    ):
        self._left = asyncio.Event()
        # One message in flight: the application waits for the test to read.
        self._messages: asyncio.Queue[SendEvent] = asyncio.Queue(maxsize=1)
        self._body_sent = False
        self._complete = False
        self._request = f"{scope['method']} {scope['path']}"

        async def receive() -> ReceiveEvent:
            if not self._body_sent:
                self._body_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await self._left.wait()
            return {"type": "http.disconnect"}

        async def send(message: SendEvent) -> None:
            if self._left.is_set():
                # ASGI 2.4: sending to a client that left raises an OSError.
                raise OSError(f"The client of {self._request} disconnected.")
            await self._messages.put(message)

        self._call = AppCall(loop, app(scope, receive, send), self._messages, check)
        start = self._call.next(f"the response start of {self._request}")
        if start is None or start["type"] != "http.response.start":
            self._finish()
            raise RuntimeError(f"The ASGI application sent no response start: {start!r}")
        try:
            # An exception the application raised before its response (now a 500).
            check()
        except BaseException:
            self.disconnect()
            raise
        #: The status code, such as ``200``.
        self.status_code: int = start["status"]
        #: The status line, such as ``"200 OK"``.
        self.status = status_line(self.status_code)
        #: The response headers.
        self.headers = response_headers(start, header_names)

    def iter_body(self) -> Iterator[bytes]:
        """Yield the body's chunks as the application sends them (empty ones skipped)."""
        while not self._complete and not self._left.is_set():
            message = self._call.next(f"the next body chunk of {self._request}")
            if message is None or message["type"] != "http.response.body":
                self._complete = True
                break
            self._complete = not message.get("more_body", False)
            if message.get("body"):
                yield message["body"]
        if self._complete:
            self._finish()

    def read(self) -> bytes:
        """The rest of the body."""
        return b"".join(self.iter_body())

    def disconnect(self) -> None:
        """Leave now, as a client closing its connection; waits for the application to end."""
        if not self._left.is_set():
            self._left.set()
        self._finish()

    def _finish(self) -> None:
        self._call.finish(f"{self._request} to end after its client left")

    def __enter__(self) -> StreamedResponse:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.disconnect()
