"""A WebSocket client for a ``TestApp``: one connection to the application, in-process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from webob.headers import ResponseHeaders

from ..exceptions import HandshakeRefused, WebsocketClosed
from ..types import ASGIApp, ReceiveEvent, SendEvent, WebSocketScope
from .http import response_headers
from .loop import AppCall, TestLoop

__all__ = ["WebSocketSession"]

#: RFC 6455: the connection ended without a close frame (it never opened).
_ABNORMAL_CLOSURE = 1006


class WebSocketSession:
    """An open WebSocket connection to the application, made by :meth:`TestApp.websocket_connect`.

    Messages the test sends wait in the application's inbox until it reads
    them; each ``receive*`` runs the application until it sends something.
    When the application closes the connection, ``receive*`` raises
    :exc:`~aiopyramid_ng.exceptions.WebsocketClosed` with its code and
    reason, also held by :attr:`close_code` and :attr:`close_reason`.
    Leaving the ``with`` block closes the connection with 1000.

    :attr:`subprotocol` and :attr:`headers` are those the application
    accepted with.
    """

    def __init__(
        self,
        loop: TestLoop,
        app: ASGIApp,
        scope: WebSocketScope,
        check: Callable[[], None],
        header_names: Mapping[str, str],
    ):
        self._header_names = header_names
        self._path = scope["path"]
        self._inbox: asyncio.Queue[ReceiveEvent] = asyncio.Queue()
        self._outbox: asyncio.Queue[SendEvent] = asyncio.Queue()
        #: The close code, once the connection is closed (by either side).
        self.close_code: int | None = None
        #: The close reason, once the application closed the connection.
        self.close_reason = ""
        self._inbox.put_nowait({"type": "websocket.connect"})
        self._call = AppCall(
            loop, app(scope, self._inbox.get, self._outbox.put), self._outbox, check
        )
        first = self._call.next(f"the handshake of {self._path}")
        if first is not None and first["type"] == "websocket.accept":
            #: The subprotocol the application selected, or None.
            self.subprotocol: str | None = first.get("subprotocol")
            #: The headers the application accepted with.
            self.headers = response_headers(first, self._header_names)
            return
        self._refuse(first)

    def _refuse(self, first: SendEvent | None) -> None:
        status, headers, body = 403, ResponseHeaders(), b""
        if first is not None and first["type"] == "websocket.http.response.start":
            status = first["status"]
            headers = response_headers(first, self._header_names)
            while True:
                message = self._call.next(f"the refusal body of {self._path}")
                if message is None or message["type"] != "websocket.http.response.body":
                    break
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
        self._closed_by_app(_ABNORMAL_CLOSURE, "")
        raise HandshakeRefused(status, headers, body)

    # -- sending ---------------------------------------------------------------------

    def _put(self, message: ReceiveEvent) -> None:
        if self.close_code is not None:
            raise WebsocketClosed(self.close_code, self.close_reason)
        self._inbox.put_nowait(message)

    def send_text(self, data: str) -> None:
        """Send a text message."""
        self._put({"type": "websocket.receive", "bytes": None, "text": data})

    def send_bytes(self, data: bytes) -> None:
        """Send a binary message."""
        self._put({"type": "websocket.receive", "bytes": bytes(data), "text": None})

    def send_json(self, data: Any) -> None:
        """Send ``data`` as JSON in a text message."""
        self.send_text(json.dumps(data))

    # -- receiving -------------------------------------------------------------------

    def receive(self) -> str | bytes:
        """The application's next message: ``str`` for text, ``bytes`` for binary.

        :raises ~aiopyramid_ng.exceptions.WebsocketClosed: when the application
            closed the connection (or had closed it already).
        """
        if self.close_code is not None:
            raise WebsocketClosed(self.close_code, self.close_reason)
        message = self._call.next(f"a message from {self._path}")
        if message is None:
            # The application returned without closing: servers close with 1000.
            code, reason = 1000, ""
        elif message["type"] == "websocket.close":
            code, reason = message.get("code", 1000), message.get("reason") or ""
        elif message["type"] == "websocket.send":
            text = message.get("text")
            return text if text is not None else message.get("bytes") or b""
        else:
            raise RuntimeError(
                f"The application sent {message['type']!r} on the accepted WebSocket "
                f"connection to {self._path}: only 'websocket.send' and 'websocket.close' "
                "are valid there (ASGI)."
            )
        self._closed_by_app(code, reason)
        raise WebsocketClosed(code, reason)

    def receive_text(self) -> str:
        """The next message, which must be text."""
        data = self.receive()
        if not isinstance(data, str):
            raise TypeError(f"Expected a text message from {self._path}, got binary {data!r}.")
        return data

    def receive_bytes(self) -> bytes:
        """The next message, which must be binary."""
        data = self.receive()
        if not isinstance(data, bytes):
            raise TypeError(f"Expected a binary message from {self._path}, got text {data!r}.")
        return data

    def receive_json(self) -> Any:
        """The next message, text or binary, decoded from JSON."""
        return json.loads(self.receive())

    # -- closing ---------------------------------------------------------------------

    def close(self, code: int = 1000) -> None:
        """Close the connection with ``code``; waits for the application to end.  Idempotent."""
        if self.close_code is None:
            self.close_code = code
            self._inbox.put_nowait({"type": "websocket.disconnect", "code": code, "reason": ""})
        self._finish()

    def _closed_by_app(self, code: int, reason: str) -> None:
        self.close_code, self.close_reason = code, reason
        # As a server does once the close is sent: a view still reading sees the end.
        self._inbox.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self._finish()

    def _finish(self) -> None:
        self._call.finish(f"the view of {self._path} to end after its close")

    def __enter__(self) -> WebSocketSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
