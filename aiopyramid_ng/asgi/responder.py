"""The WSGI side of one response, produced inside a request greenlet.

The WSGI call *and the iteration of its body* happen in the same request
greenlet: Pyramid's response callbacks have run by the time the first chunk
exists, ``synchronize``/``await_`` keep working while a generator produces
the body, and every chunk is handed to the server with
``await_in_greenlet(send(...))`` as soon as it is produced, so a slow stream (SSE)
reaches the client piece by piece while the loop serves other requests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from typing import Any

from ..bridge import await_in_greenlet
from ..exceptions import ClientDisconnected
from ..threads import run_in_thread
from ..types import Environ, ExcInfo, ResponseEvent, ResponseSend, WSGIApp
from .environ import FileWrapper

__all__ = ["Responder"]


class Responder:
    """State of one request shared by the ASGI Task and its request greenlet.

    :param send: the ASGI ``send`` callable of the request.
    :param head: True for a ``HEAD`` request: headers are sent, a body never.
    :param executor: returns the thread pool that reads ``wsgi.file_wrapper``
        files (looked up only when one is served).
    """

    def __init__(self, send: ResponseSend, head: bool, executor: Callable[[], Executor]):
        self.send = send
        self.head = head
        self.executor = executor
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        #: ``http.response.start`` was sent: no error response is possible.
        self.started = False
        #: The final body message is being or was sent: a disconnect now is
        #: the normal end of the exchange, not a reason to cancel.
        self.complete = False
        #: The client went away before the response was complete.
        self.disconnected = False
        #: The disconnect watcher cancelled the request's Task (once).
        self.cancelled_on_disconnect = False

    # -- WSGI side: called in the request greenlet ------------------------

    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | None = None,
    ) -> Any:
        """PEP 3333 ``start_response``; returns the legacy ``write`` callable."""
        if exc_info is not None:
            if self.started:
                raise exc_info[1].with_traceback(exc_info[2])
        elif self.status is not None:
            raise RuntimeError("start_response() was called twice without exc_info (PEP 3333).")
        code, _, _reason = status.partition(" ")
        if len(code) != 3 or not code.isdigit():
            raise ValueError(f"Invalid WSGI status {status!r}: it must start with a 3-digit code.")
        self.status = int(code)
        self.headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers
        ]
        return self.write

    def write(self, data: bytes) -> None:
        """Send one body chunk (PEP 3333: headers go out with the first non-empty one)."""
        if not data:
            return
        self._start()
        if not self.head:
            self._send({"type": "http.response.body", "body": bytes(data), "more_body": True})

    def finish(self, last: bytes = b"") -> None:
        """Send the headers if still pending, then the final body message."""
        self._start()
        self.complete = True
        body = b"" if self.head else bytes(last)
        self._send({"type": "http.response.body", "body": body, "more_body": False})

    def run(self, app: WSGIApp, environ: Environ) -> None:
        """Call ``app`` and stream its response; must run in a request greenlet.

        ``app_iter.close()`` (``aclose()`` for an async iterator) is called
        exactly once, whatever happens, including cancellation.  Exceptions
        propagate to the caller, which knows whether an error response can
        still be sent.
        """
        app_iter: Any = app(environ, self.start_response)
        try:
            if self.head:
                # Headers only.  Chunks are pulled solely for a generator
                # application that calls start_response lazily, so an endless
                # stream never keeps a HEAD request open.
                if self.status is None:
                    for _chunk in self._chunks(app_iter):
                        if self.status is not None:
                            break
                self.finish()
            elif isinstance(app_iter, list | tuple) and app_iter:
                # The common case (a WebOb body): the last chunk is known, so
                # it travels with more_body=False and saves one message.
                for chunk in app_iter[:-1]:
                    self.write(chunk)
                self.finish(app_iter[-1])
            else:
                for chunk in self._chunks(app_iter):
                    self.write(chunk)
                self.finish()
        finally:
            _close(app_iter)

    # -- internals ----------------------------------------------------------

    def _start(self) -> None:
        if self.started:
            return
        if self.status is None:
            raise RuntimeError(
                "The WSGI application produced a body before calling start_response()."
            )
        self.started = True
        self._send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": self.headers,
                "trailers": False,
            }
        )

    def _send(self, message: ResponseEvent) -> None:
        try:
            await_in_greenlet(self.send(message))
        except OSError as exc:
            # Servers report a vanished client as OSError (uvicorn's
            # ClientDisconnected is one) or not at all; either way the
            # disconnect watcher and this path end the request alike.
            self.disconnected = True
            raise ClientDisconnected() from exc

    def _chunks(self, app_iter: Any) -> Iterator[bytes]:
        if isinstance(app_iter, FileWrapper):
            # Blocking reads go to the pool, one chunk at a time; run_in_thread
            # lets a started read finish before a cancellation closes the file.
            while chunk := await_in_greenlet(run_in_thread(self.executor(), app_iter.read_chunk)):
                yield chunk
        elif hasattr(app_iter, "__aiter__"):
            iterator = app_iter.__aiter__()
            while True:
                try:
                    chunk = await_in_greenlet(iterator.__anext__())
                except StopAsyncIteration:
                    return
                yield chunk
        else:
            yield from app_iter


def _close(app_iter: Any) -> None:
    aclose = getattr(app_iter, "aclose", None)
    if aclose is not None:
        await_in_greenlet(aclose())
        return
    close = getattr(app_iter, "close", None)
    if close is not None:
        close()
