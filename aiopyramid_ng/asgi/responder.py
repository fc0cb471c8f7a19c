"""The WSGI side of one response, produced inside a request greenlet.

The WSGI call *and the iteration of its body* happen in the same request
greenlet: Pyramid's response callbacks have run by the time the first chunk
exists, ``synchronize``/``await_`` keep working while a generator produces
the body, and every chunk is handed to the server with
``await_in_greenlet(send(...))`` as soon as it is produced, so a slow stream (SSE)
reaches the client piece by piece while the loop serves other requests.

The one exception is the most common body, a single chunk in a plain list
(what a WebOb response returns): nothing of the application is left to run
once it exists, so the greenlet returns it and the request's Task sends the
two messages itself (:meth:`Responder.send_whole`), without handing each one
from the greenlet to the loop.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable, Generator, Iterator
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

    __slots__ = (
        "cancelled_on_disconnect",
        "complete",
        "disconnected",
        "executor",
        "head",
        "headers",
        "send",
        "started",
        "status",
    )

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
        code = _status_codes.get(status)
        if code is None:
            code = _status_code(status)
        self.status = code
        names = _header_names
        encoded = []
        for name, value in headers:
            raw_name = names.get(name)
            if raw_name is None:
                raw_name = _header_name(name)
            encoded.append((raw_name, value.encode("latin-1")))
        self.headers = encoded
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

    def run(self, app: WSGIApp, environ: Environ) -> bytes | None:
        """Call ``app`` and stream its response; must run in a request greenlet.

        ``app_iter.close()`` (``aclose()`` for an async iterator) is called
        exactly once, whatever happens, including cancellation.  Exceptions
        propagate to the caller, which knows whether an error response can
        still be sent.

        :returns: None once the whole response was sent; or, for a body of
            one chunk in a plain list (what a WebOb response is), that chunk,
            for the caller to send with :meth:`send_whole`.
        """
        app_iter: Any = app(environ, self.start_response)
        if type(app_iter) is list and len(app_iter) == 1 and not self.started and self.status:
            # A plain list has nothing to close, and nothing is left to run
            # in the greenlet: the request's Task sends the response itself,
            # without two hand-offs from the greenlet to the loop.
            chunk = app_iter[0]
            return b"" if self.head else chunk if type(chunk) is bytes else bytes(chunk)
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
                # The last chunk is known, so it travels with more_body=False
                # and saves one message.
                for chunk in app_iter[:-1]:
                    self.write(chunk)
                self.finish(app_iter[-1])
            else:
                for chunk in self._chunks(app_iter):
                    self.write(chunk)
                self.finish()
        finally:
            _close(app_iter)
        return None

    # -- ASGI side: called in the request's Task ---------------------------

    async def send_whole(self, body: bytes, on_suspend: Callable[[], object] | None = None) -> None:
        """Send the response :meth:`run` returned: the headers, then ``body``, the whole of it.

        ``on_suspend()`` is called if the final send has to wait (a slow
        client), as it would have been had the request greenlet sent the
        response.  The start message is awaited plainly: a server writes it at
        once unless the transport is still paused by an earlier response, and
        watching a send costs an exception per call.

        :raises ClientDisconnected: when the server reports the client gone.
        """
        status = self.status
        assert status is not None  # run() returns a body only after start_response
        start: ResponseEvent = {
            "type": "http.response.start",
            "status": status,
            "headers": self.headers,
            "trailers": False,
        }
        last: ResponseEvent = {"type": "http.response.body", "body": body, "more_body": False}
        self.started = True
        try:
            await self.send(start)
            self.complete = True
            if on_suspend is None:
                await self.send(last)
            else:
                await _noting_suspension(self.send(last), on_suspend)
        except OSError as exc:
            self.disconnected = True
            raise ClientDisconnected() from exc

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


#: The code of each WSGI status line seen so far, and the ASGI name of each
#: header name: applications answer with the same few over and over.  Both
#: bounded, so that an application inventing names cannot grow them forever.
_status_codes: dict[str, int] = {}
_header_names: dict[str, bytes] = {}
_CACHE_MAX = 512


def _status_code(status: str) -> int:
    code, _, _reason = status.partition(" ")
    if len(code) != 3 or not code.isdigit():
        raise ValueError(f"Invalid WSGI status {status!r}: it must start with a 3-digit code.")
    if len(_status_codes) < _CACHE_MAX:
        _status_codes[status] = int(code)
    return int(code)


def _header_name(name: str) -> bytes:
    raw_name = name.lower().encode("latin-1")
    if len(_header_names) < _CACHE_MAX:
        _header_names[name] = raw_name
    return raw_name


@types.coroutine
def _noting_suspension(
    awaitable: Awaitable[None], on_suspend: Callable[[], object]
) -> Generator[Any, Any, None]:
    """Await ``awaitable``, calling ``on_suspend()`` if it does not complete at once."""
    steps = awaitable.__await__()
    try:
        suspended_on = steps.send(None)
    except StopIteration:
        return
    on_suspend()
    # What `yield from steps` would do, from its second step on.
    while True:
        try:
            sent = yield suspended_on
        except GeneratorExit:
            steps.close()
            raise
        except BaseException as exc:
            try:
                suspended_on = steps.throw(exc)
            except StopIteration:
                return
        else:
            try:
                suspended_on = steps.send(sent)
            except StopIteration:
                return


def _close(app_iter: Any) -> None:
    aclose = getattr(app_iter, "aclose", None)
    if aclose is not None:
        await_in_greenlet(aclose())
        return
    close = getattr(app_iter, "close", None)
    if close is not None:
        close()
