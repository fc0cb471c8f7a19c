"""The ASGI side of one WebSocket connection.

A :class:`Connection` holds the server's ``receive``/``send`` of one
``websocket`` scope and what happened so far (accepted, closed, with which
code).  Views never see it directly: they get the objects of
:mod:`aiopyramid_ng.websocket.endpoints`, which read and write through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from asgiref.typing import WebSocketSendEvent

from ..exceptions import NORMAL_CLOSURE, ConnectionClosedError
from ..types import Receive, ResponseEvent, Send, WebSocketScope

__all__ = [
    "ABNORMAL_CLOSURE",
    "ENVIRON_KEY",
    "GOING_AWAY",
    "INTERNAL_ERROR",
    "NORMAL_CLOSURE",
    "Connection",
    "Data",
]

#: The WSGI environ key holding the :class:`Connection` of a WebSocket handshake.
ENVIRON_KEY = "aiopyramid_ng.websocket"

#: The name of the Task that receives messages for an accepted connection.
READER_NAME = "aiopyramid_ng.websocket reader"
#: Received messages held for a view before the reader stops receiving.
INBOX_SIZE = 16

#: RFC 6455 close codes this module sends or reports (and NORMAL_CLOSURE, 1000).
GOING_AWAY = 1001
NO_STATUS_RECEIVED = 1005
ABNORMAL_CLOSURE = 1006
INTERNAL_ERROR = 1011

Data = str | bytes

logger = logging.getLogger(__name__)


class Connection:
    """The ASGI side of one ``websocket`` scope, shared by its Task and request greenlet.

    Once accepted, a reader Task receives from the server on the connection's
    behalf, so that a peer that leaves is noticed whatever the view is doing:
    a view waiting in ``recv()`` gets None; a view waiting on anything else
    (a queue, a sleep) is cancelled where it waits, so its ``finally`` blocks
    run and the server is not left waiting for it.  The reader stops reading
    while :data:`INBOX_SIZE` messages wait for the view, so a fast client
    cannot fill the process's memory.

    :param scope: the ASGI scope.
    :param receive: the server's ``receive``, after ``websocket.connect``.
    :param send: the server's ``send``.
    """

    def __init__(self, scope: WebSocketScope, receive: Receive, send: Send):
        self.scope = scope
        self._receive = receive
        self._send = send
        #: The Task serving the connection, cancelled by :meth:`interrupt`.
        self.task: asyncio.Task[Any] | None = None
        self.accepted = False
        self.closed = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.subprotocol: str | None = None
        #: Set by :meth:`interrupt`: a cancellation of the Task is this module's own.
        self.interrupted = False
        #: The close code and reason :meth:`interrupt` asks the view's wrapper to close with.
        self.interrupt_close: tuple[int, str] = (GOING_AWAY, "")
        #: The view's exception that was already logged and answered with 1011.
        self.reported: BaseException | None = None
        #: The server refused to send close code 1011 (see :meth:`close`).
        self.close_refused = False
        self._replaced = False
        self._reader: asyncio.Task[None] | None = None
        self._inbox: deque[Data] = deque()
        # Resolved by the reader when a message or the end arrives (view side),
        # and by receive() when the inbox has room again (reader side).
        self._waiter: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None

    @property
    def path(self) -> str:
        path: str = self.scope.get("path", "")
        return path

    @property
    def requested_subprotocols(self) -> list[str]:
        """The client's ``Sec-WebSocket-Protocol`` values, in its order of preference."""
        return list(self.scope.get("subprotocols") or ())

    @property
    def can_respond(self) -> bool:
        """True when the server can send an HTTP response instead of accepting."""
        return "websocket.http.response" in (self.scope.get("extensions") or {})

    def _mark_closed(self, code: int, reason: str) -> None:
        self.closed = True
        self.close_code = code
        self.close_reason = reason

    async def accept(self, subprotocol: str | None) -> None:
        """Complete the handshake, selecting ``subprotocol`` (or none), and start reading."""
        await self._send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": []})
        self.accepted = True
        self.subprotocol = subprotocol
        self._reader = asyncio.get_running_loop().create_task(
            self._read(), name=f"{READER_NAME} {self.path}"
        )

    async def _read(self) -> None:
        while True:
            while len(self._inbox) >= INBOX_SIZE:
                self._room = asyncio.get_running_loop().create_future()
                await self._room
            try:
                message = await self._receive()
            except Exception:
                logger.exception("Receiving from the WebSocket connection to %r failed", self.path)
                self._peer_left(ABNORMAL_CLOSURE, "")
                return
            if message["type"] == "websocket.receive":
                text = message.get("text")
                self._inbox.append(text if text is not None else message.get("bytes") or b"")
                self._wake()
            elif message["type"] == "websocket.disconnect":
                self._peer_left(
                    message.get("code", NO_STATUS_RECEIVED), message.get("reason") or ""
                )
                return
            else:
                logger.warning(
                    "Ignored the ASGI message %r on a WebSocket connection", message["type"]
                )

    def _wake(self) -> bool:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
            return True
        return False

    def _peer_left(self, code: int, reason: str) -> None:
        if self.closed:
            return  # the close this side sent, answered (or a send already found it gone)
        self._mark_closed(code, reason)
        if self._wake():
            return
        task = self.task
        if task is not None and not task.done() and asyncio.current_task() is not task:
            # The view waits on something else than recv(): end it there.
            # Not when the view itself found the peer gone (its send()
            # failed): it gets ConnectionClosedError right away.
            self.interrupt()

    def interrupt(self, code: int = GOING_AWAY, reason: str = "") -> None:
        """Cancel the view where it waits; its ``finally`` blocks and ``on_close`` run.

        An open connection then closes with ``code`` and ``reason`` (by
        default 1001, "going away").  Only the first interruption counts.
        """
        if self.task is not None and not self.interrupted:
            self.interrupted = True
            self.interrupt_close = (code, reason)
            self.task.cancel()

    async def stop_reading(self) -> None:
        """Stop the reader Task (when the view has ended)."""
        reader = self._reader
        if reader is not None:
            reader.cancel()
            # wait() never raises the reader's CancelledError, only this Task's.
            await asyncio.wait({reader})

    async def receive(self) -> Data | None:
        """Wait for the next message; None once the connection is closed.

        A peer that disconnects while this waits makes it return None.
        """
        if not self._inbox and not self.closed:
            if self._waiter is not None:
                raise RuntimeError(
                    f"Two callers wait on recv() of the WebSocket connection to {self.path!r} "
                    "at once; only one may: messages would go to either at random."
                )
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if not self._inbox:
            return None
        message = self._inbox.popleft()
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)
        return message

    async def send(self, data: Data) -> None:
        """Send one text (``str``) or binary (``bytes``) message.

        :raises ConnectionClosedError: when the connection is closed.
        :raises TypeError: for any other type of ``data``.
        """
        message: WebSocketSendEvent
        if isinstance(data, str):
            message = {"type": "websocket.send", "bytes": None, "text": data}
        elif isinstance(data, bytes | bytearray | memoryview):
            message = {"type": "websocket.send", "bytes": bytes(data), "text": None}
        else:
            raise TypeError(
                f"A WebSocket message is str (text) or bytes (binary), not {type(data).__name__}."
            )
        if self.closed:
            raise ConnectionClosedError(self)
        try:
            await self._send(message)
        except OSError as exc:
            # uvicorn reports a vanished peer this way; others drop the
            # message.  The sender may be another Task than the view's (a
            # group's sender): the view, waiting in recv() or elsewhere,
            # must learn it too, since the reader's disconnect, coming
            # after this, finds the connection closed already.
            self._peer_left(ABNORMAL_CLOSURE, "")
            raise ConnectionClosedError(self) from exc

    async def close(self, code: int = NORMAL_CLOSURE, reason: str = "") -> None:
        """Close the connection with ``code``; does nothing if it is closed already.

        A server may refuse some codes: daphne lets applications send only
        1000 and 3000-4999.  The connection then closes with 1000 instead,
        except for 1011, which :attr:`close_refused` asks the caller to
        obtain by letting the view's exception reach the server (every
        server closes with 1011 when the application fails).
        """
        if self.closed:
            return
        self._mark_closed(code, reason)
        try:
            await self._send({"type": "websocket.close", "code": code, "reason": reason})
        except OSError:
            pass  # a peer that is gone leaves the connection closed either way
        except Exception:
            if code == INTERNAL_ERROR:
                self.close_refused = True
                return
            logger.debug("The server refused close code %d; closing with 1000", code)
            self.close_code = NORMAL_CLOSURE
            with contextlib.suppress(OSError):
                await self._send({"type": "websocket.close", "code": NORMAL_CLOSURE, "reason": ""})

    async def respond(self, message: ResponseEvent) -> None:
        """Send part of the HTTP response the pipeline produced for the handshake.

        ``message`` is ``http.response.start`` or ``http.response.body``.  Once
        the connection was accepted, the view's response is meaningless and
        dropped.  Otherwise it becomes the refusal of the handshake: the
        response itself where the server offers ``websocket.http.response``
        (a 1xx/2xx response, from a view that is not a WebSocket view, becomes
        a 404), else a close before accepting (the server answers 403).
        """
        if self.accepted or self._replaced:
            return
        if not self.can_respond:
            if message["type"] == "http.response.start":
                await self.deny()
            return
        if message["type"] == "http.response.start" and message["status"] < 300:
            # A view that is not a WebSocket view answered the handshake: its
            # page means nothing to a WebSocket client.
            self._replaced = True
            body = f"No WebSocket endpoint at {self.path}.".encode()
            headers = [(b"content-type", b"text/plain; charset=utf-8")]
            await self._send(
                {"type": "websocket.http.response.start", "status": 404, "headers": headers}
            )
            await self._send(
                {"type": "websocket.http.response.body", "body": body, "more_body": False}
            )
        elif message["type"] == "http.response.start":
            await self._send(
                {
                    "type": "websocket.http.response.start",
                    "status": message["status"],
                    "headers": message["headers"],
                }
            )
        else:
            await self._send(
                {
                    "type": "websocket.http.response.body",
                    "body": message["body"],
                    "more_body": message.get("more_body", False),
                }
            )

    async def deny(self) -> None:
        """Refuse the handshake by closing before accepting."""
        if not self.closed:
            self._mark_closed(NORMAL_CLOSURE, "")
            await self._send({"type": "websocket.close", "code": NORMAL_CLOSURE, "reason": ""})
