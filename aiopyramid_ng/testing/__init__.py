"""Test an application in-process through the ASGI path, with WebTest's API.

::

    from aiopyramid_ng.testing import TestApp

    def test_hello():
        with TestApp(main({})) as app:       # a Router, a pipeline, or an ASGI app
            assert app.get("/hello").json == {"hello": "world"}
            with app.websocket_connect("/echo") as ws:
                ws.send_text("hi")
                assert ws.receive_text() == "hi"

:class:`TestApp` is a drop-in for :class:`webtest.TestApp`: it accepts what
WebTest accepts and answers with WebTest's responses, but every request goes
through the ASGI path a server would take (scope, body messages, the
response messages), on an event loop the ``TestApp`` owns.

==============  ==============================================================
``scope``       the ASGI scope a server would build for WebTest's environ
``harness``     what WebTest hands a WSGI application that HTTP cannot carry
``loop``        the event loop, the lifespan on it, the bound on every wait
``http``        one buffered exchange; a streamed response
``websocket``   the WebSocket client
==============  ==============================================================
"""

from __future__ import annotations

import atexit
import os
import urllib.request
import warnings
import weakref
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import quote

import webtest

from ..asgi import ASGIApplication, find_registry, make_asgi_app
from ..coroutines import is_coroutine_callable
from ..types import ASGIApp, Environ, StartResponse
from .harness import Harness, local_entries
from .http import StreamedResponse, exchange, response_headers, status_line
from .loop import TestLoop
from .scope import scope_from_environ, websocket_scope_from_environ
from .websocket import WebSocketSession

__all__ = [
    "StreamedResponse",
    "TestApp",
    "WebSocketSession",
    "scope_from_environ",
    "websocket_scope_from_environ",
]


def _is_asgi(app: Any) -> bool:
    return is_coroutine_callable(app) and not isinstance(app, type)


class _ASGIAsWSGI:
    """The WSGI callable WebTest drives: each call is one ASGI exchange on the TestApp's loop."""

    def __init__(self, test_app: TestApp):
        # A weak reference: the TestApp must stay collectable (its finalizer
        # closes the loop), and WebTest keeps this callable on responses.
        self._test_app = weakref.proxy(test_app)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        test_app = self._test_app
        length = environ.get("CONTENT_LENGTH")
        body = environ["wsgi.input"].read(int(length)) if length else b""
        scope = scope_from_environ(environ)
        messages = test_app._run_exchange(scope, body, environ)
        if not messages or messages[0]["type"] != "http.response.start":
            raise RuntimeError(f"The ASGI application sent no response start: {messages!r}")
        start = messages[0]
        headers = response_headers(start, test_app._header_names)
        start_response(status_line(start["status"]), list(headers.items()))
        return [
            b"".join(m.get("body", b"") for m in messages[1:] if m["type"] == "http.response.body")
        ]


class TestApp(webtest.TestApp):  # type: ignore[misc]
    """A :class:`webtest.TestApp` that serves ``app`` through the ASGI path, in-process.

    :param app: what :class:`webtest.TestApp` accepts — a Pyramid Router or
        any WSGI pipeline, or a PasteDeploy URI (``"config:test.ini"``,
        with ``relative_to``) — or an ASGI application such as
        ``config.make_asgi_app()``.  A WSGI application is served by
        :func:`~aiopyramid_ng.asgi.make_asgi_app`.  :attr:`app` is ``app``
        itself, as under WebTest (``testapp.app.registry``).
    :param extra_environ: as WebTest's.  Entries that an HTTP request
        cannot carry (``{"tm.manager": tm}``, ``paste.testing_variables``)
        reach the application's environ as they are.
    :param lifespan: run the ASGI lifespan protocol: startup now, shutdown
        when the ``TestApp`` is closed.  An application that rejects
        lifespan scopes is served anyway, as servers do.
    :param raise_app_exceptions: an exception the application raises
        reaches the test, as under WebTest; ``False`` lets the server answer
        500 instead, as it would in production.
    :param timeout: seconds one request, message or lifespan step may take
        before it fails with :exc:`TimeoutError` (a hung view fails its test
        instead of freezing the suite).
    :raises RuntimeError: when the application's lifespan startup fails.

    A request returns once the background tasks the application is running
    (``request.add_background_task``) have finished, so a test sees their
    effects; a :meth:`stream` leaves them to run later.

    Close it (or use it as a context manager) to run the lifespan shutdown
    and close its loop; one never closed is closed at the next safe point
    after it is garbage-collected (when another ``TestApp`` is made, after
    the test under ``pytest --aiopyramid-ng=asgi``, at exit), never by the
    garbage collector itself.  Use it from plain ``def`` tests: it runs its own
    event loop, which cannot run inside another.
    """

    __test__ = False

    def __init__(
        self,
        app: Any,
        extra_environ: dict[str, Any] | None = None,
        relative_to: str | None = None,
        *args: Any,
        lifespan: bool = True,
        raise_app_exceptions: bool = True,
        timeout: float = 30.0,
        **kwargs: Any,
    ):
        app = _load(app, relative_to)
        self.raise_app_exceptions = raise_app_exceptions
        self._harness: Harness | None = None
        if isinstance(app, ASGIApplication):
            # The same application, with the harness between it and the server side.
            self._harness = Harness(app.wsgi_app)
            served: ASGIApp = make_asgi_app(
                self._harness, app.registry, max_body_size=app.max_body_size
            )
        elif _is_asgi(app):
            served = app
        else:
            self._harness = Harness(app)
            served = make_asgi_app(self._harness, find_registry(app))
        #: The ASGI application every request goes to.
        self.asgi_app = served
        # A safe point to close the loops of TestApps collected since the last one.
        close_orphaned()
        self._loop = TestLoop(served, timeout)
        _unclosed.add(self._loop)
        self._finalizer = weakref.finalize(self, _orphaned.append, self._loop)
        # Closed at exit by _close_at_exit instead, in one place.
        self._finalizer.atexit = False
        # What WebTest calls, built once: do_request lends it ``self.app``.
        self._adapter = _ASGIAsWSGI(self)
        super().__init__(self._adapter, extra_environ, relative_to, *args, **kwargs)
        #: The application the test handed over.
        self.app = app
        if lifespan:
            try:
                self._loop.start()
            except BaseException:
                self.close()
                raise

    @property
    def loop(self) -> Any:
        """The event loop the application runs on (it persists across requests)."""
        return self._loop.loop

    # -- WebTest's request path ------------------------------------------------------

    def do_request(self, req: Any, *args: Any, **kwargs: Any) -> Any:
        # WebTest calls ``self.app``; for the length of the call that is the
        # ASGI adapter, and the application the test handed over otherwise.
        app, self.app = self.app, self._adapter
        try:
            return super().do_request(req, *args, **kwargs)
        finally:
            self.app = app

    def _run_exchange(self, scope: Any, body: bytes, environ: Environ) -> Any:
        self._hand_over(environ)
        request = f"{scope['method']} {scope['path']}"
        try:
            messages = self._loop.run(
                exchange(self.asgi_app, scope, body), f"the response to {request}"
            )
            if isinstance(self.asgi_app, ASGIApplication):
                # The loop runs only while a test waits: the request's background
                # tasks would otherwise run at some later request (or at close()).
                background = self.asgi_app.lifecycle.background
                self._loop.run(background.join(), f"the background tasks of {request}")
            return messages
        finally:
            self._check()

    def _hand_over(self, environ: Environ) -> None:
        if self._harness is not None:
            self._harness.entries = local_entries(environ)

    @property
    def _header_names(self) -> dict[str, str]:
        return self._harness.header_names if self._harness is not None else {}

    def _check(self) -> None:
        """Raise the exception the application raised in the last request, if asked to."""
        if self._harness is None:
            return
        self._harness.entries = {}
        error = self._harness.take_error()
        if error is not None and self.raise_app_exceptions:
            raise error

    def _environ(
        self, url: str, method: str, headers: Mapping[str, str] | None, body: bytes
    ) -> Environ:
        """The environ WebTest would send: ``extra_environ``, its cookies, the headers."""
        req = self.RequestClass.blank(
            url, dict(self.extra_environ), method=method, headers=headers or {}
        )
        if body:
            req.body = body
        # The cookie jar's own matching (domain, path, expiry), on the stdlib's request type.
        # Built from the raw environ: a path that is not UTF-8 is a test's to send.
        path = quote(req.environ["SCRIPT_NAME"] + req.environ["PATH_INFO"], encoding="latin-1")
        probe = urllib.request.Request(f"{req.scheme}://{req.host}{path}")
        self.cookiejar.add_cookie_header(probe)
        cookie = probe.get_header("Cookie")
        if cookie:
            req.headers["Cookie"] = cookie
        environ: Environ = req.environ
        return environ

    # -- beyond WebTest --------------------------------------------------------------

    def stream(
        self,
        url: str,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> StreamedResponse:
        """Send a request and return its response as soon as its headers arrive.

        Read the body as it is produced with
        :meth:`StreamedResponse.iter_body`; leave before its end with
        :meth:`StreamedResponse.disconnect` or the end of a ``with`` block::

            with app.stream("/events") as response:
                assert response.status_code == 200
                first = next(response.iter_body())
            # the client left: the view was cancelled where it waited
        """
        environ = self._environ(url, method, headers, body)
        self._hand_over(environ)
        scope = scope_from_environ(environ)
        return StreamedResponse(
            self._loop, self.asgi_app, scope, body, self._check, self._header_names
        )

    def websocket_connect(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        subprotocols: Iterable[str] = (),
    ) -> WebSocketSession:
        """Open a WebSocket connection to ``url``; use the session as a context manager.

        ::

            with app.websocket_connect("/chat", subprotocols=["chat.v1"]) as ws:
                ws.send_json({"say": "hi"})
                assert ws.receive_json() == {"said": "hi"}

        :raises ~aiopyramid_ng.exceptions.HandshakeRefused: when the
            application refuses the handshake (its status, headers and body).
        """
        environ = self._environ(url, "GET", headers, b"")
        self._hand_over(environ)
        scope = websocket_scope_from_environ(environ, subprotocols)
        return WebSocketSession(self._loop, self.asgi_app, scope, self._check, self._header_names)

    # -- closing ---------------------------------------------------------------------

    def close(self) -> None:
        """Run the lifespan shutdown, then close the loop.  Idempotent.

        :raises RuntimeError: when the application's lifespan shutdown fails.
        """
        self._finalizer.detach()
        _unclosed.discard(self._loop)
        self._loop.close()

    def __enter__(self) -> TestApp:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


#: The loop of every TestApp not closed yet, held so that none is collected
#: with its lifespan Task and request greenlets still on it.
_unclosed: set[TestLoop] = set()
#: The loops of TestApps collected without being closed.  The collector only
#: appends here: it may run inside anything (a compile(), another object's
#: finalizer), where running a loop, its Tasks and its greenlets would
#: corrupt the interrupted code.  :func:`close_orphaned` closes them later.
_orphaned: list[TestLoop] = []


def close_orphaned() -> None:
    """Close the loops of TestApps collected without being closed.

    Called at safe points: when a TestApp is created, after each test under
    ``pytest --aiopyramid-ng=asgi``, and at exit.
    """
    while _orphaned:
        loop = _orphaned.pop()
        _unclosed.discard(loop)
        _close_unclosed(loop)


@atexit.register
def _close_at_exit() -> None:
    """Close the loops of the TestApps never closed, collected or still alive."""
    _orphaned.clear()
    while _unclosed:
        _close_unclosed(_unclosed.pop())


def _close_unclosed(loop: TestLoop) -> None:
    """Close the loop of a TestApp collected (or alive at exit) without being closed."""
    try:
        loop.close()
    except Exception as exc:
        # Nobody is there to catch it: at exit, the pool the shutdown may
        # need can already be gone.
        warnings.warn(
            f"A TestApp that was never closed failed to close: {exc}; "
            "close it (or use it as a context manager) to see its lifespan shutdown fail.",
            RuntimeWarning,
            stacklevel=1,
        )


def _load(app: Any, relative_to: str | None) -> Any:
    """The application ``app`` names, as WebTest resolves it; refuses remote targets."""
    target = os.environ.get("WEBTEST_TARGET_URL")
    if target is None and isinstance(app, str) and app.startswith("http"):
        target = app
    if target is not None:
        raise ValueError(
            f"aiopyramid_ng.testing.TestApp serves applications in-process and cannot "
            f"drive the remote server {target!r}; use webtest.TestApp for that "
            "(or unset WEBTEST_TARGET_URL)."
        )
    if isinstance(app, str):
        from paste.deploy import loadapp

        return loadapp(app, relative_to=relative_to)
    return app
