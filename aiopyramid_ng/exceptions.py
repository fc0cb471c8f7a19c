"""Every exception aiopyramid_ng raises for an application or its client to see.

Also the one owner of the documentation references that end error messages:
``see(label)`` words them, and ``DOCS_PAGES`` says which page of ``docs/``
holds each label (a test checks every label against its page).
"""

from __future__ import annotations

from typing import Any

from pyramid.httpexceptions import HTTPGatewayTimeout

__all__ = [
    "BroadcastError",
    "ClientDisconnected",
    "ConnectionClosedError",
    "ExecutorQueueFull",
    "HandshakeRefused",
    "NestedLoopError",
    "ScopeError",
    "SharedSessionError",
    "SubrequestTimeout",
    "WebsocketClosed",
]

#: Every Sphinx label (``.. _label:``) an error message refers to, and the
#: page of ``docs/`` that holds it.
DOCS_PAGES: dict[str, str] = {
    "settings": "configuration",
    "setting-max-workers": "configuration",
    "setting-pipeline": "configuration",
    "setting-plain-views": "configuration",
    "setting-plain-views-inline-ms": "configuration",
    "setting-blocking-ms": "configuration",
    "setting-max-body-size": "configuration",
    "setting-allowed-origins": "configuration",
    "setting-compat-disable": "configuration",
    "setting-gc-freeze": "configuration",
    "setting-broadcast-url": "configuration",
    "setting-broadcast-timeout": "configuration",
    "setting-broadcast-queue-size": "configuration",
    "setting-broadcast-overflow": "configuration",
    "setting-background-shutdown-timeout": "configuration",
    "setting-timeout": "configuration",
    "setting-max-concurrency": "configuration",
    "setting-retry-after": "configuration",
    "setting-max-queue": "configuration",
    "load-deadlines": "load",
    "load-shedding": "load",
    "load-executor-queue": "load",
    "include-first": "configuration",
    "quickstart-synchronize": "quickstart",
    "synchronize-errors": "quickstart",
    "quickstart-mappers": "quickstart",
    "howitworks-plain-views": "howitworks",
    "quickstart-wsgi": "quickstart",
    "security-policy-commit": "security",
    "security-acls": "security",
    "traversal-other-traversers": "traversal",
    "events-callbacks": "events",
    "background-tasks": "background",
    "compatibility-nested-loops": "compatibility",
    "sqlalchemy-session-per-request": "sqlalchemy",
    "websocket-origins": "websockets",
    "websocket-subprotocols": "websockets",
    "websocket-connection": "websockets",
    "websocket-class-views": "websockets",
    "websocket-groups": "websockets",
    "deployment-runners": "deployment",
    "runner-uvicorn": "deployment",
    "runner-hypercorn": "deployment",
    "runner-daphne": "deployment",
    "runner-workers": "deployment",
    "runner-unix-socket": "deployment",
    "runner-tls": "deployment",
    "pytest-plugin": "testing",
    "otel-setup": "opentelemetry",
}


def see(label: str) -> str:
    """The sentence that ends an error message: where the documentation explains it.

    ``label`` is a key of :data:`DOCS_PAGES`.  The reference is relative to
    the built HTML documentation (``page.html#label``).
    """
    return f"See {DOCS_PAGES[label]}.html#{label} in the aiopyramid_ng documentation."


#: RFC 6455's close code for a normal closure, the default of :class:`WebsocketClosed`.
NORMAL_CLOSURE = 1000


class ScopeError(RuntimeError):
    """Synchronous code asked to wait for a coroutine where nothing can wait for it.

    Waiting on a coroutine from synchronous code is possible only inside a
    request greenlet (or a greenlet started by
    :func:`aiopyramid_ng.helpers.spawn_greenlet`) or in a worker thread that
    serves a request.  The message names what was missing and how to fix it.
    """


class NestedLoopError(RuntimeError):
    """A view tried to run an event loop on the thread of the running one."""


#: Fragments of the messages asyncio and asgiref raise when code tries to run
#: an event loop on the thread of a running one (the RuntimeError that
#: :class:`NestedLoopError` replaces).
NESTED_LOOP_MESSAGES = (
    "cannot be called from a running event loop",
    "This event loop is already running",
    "You cannot use AsyncToSync in the same thread as an async event loop",
)


def is_nested_loop_error(exc: BaseException) -> bool:
    """Return True when ``exc`` is asyncio's or asgiref's refusal to nest an event loop."""
    text = str(exc) if isinstance(exc, RuntimeError) else ""
    return any(fragment in text for fragment in NESTED_LOOP_MESSAGES)


class SharedSessionError(RuntimeError):
    """A SQLAlchemy session that belongs to one running request was used by another."""


class ClientDisconnected(BaseException):
    """The client went away before its request was complete.

    Raised where the application sends a response chunk (or the adapter reads
    the body) after the client left.  A ``BaseException`` so that Pyramid's
    exception views and ``except Exception`` in application code do not turn
    a vanished client into an error response nobody would receive.
    """


class WebsocketClosed(Exception):
    """Raise it anywhere in a WebSocket view to end the connection.

    The connection closes with ``code`` and ``reason`` (if still open) and the
    view ends normally: nothing is logged as an error.
    """

    def __init__(self, code: int = NORMAL_CLOSURE, reason: str = ""):
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class ConnectionClosedError(RuntimeError):
    """A message was sent on a WebSocket connection that is already closed.

    ``connection`` is the closed connection.  Escaping the view of that same
    connection it ends the view quietly (its peer is gone); escaping another
    connection's view (a broadcast to a peer that just left) it is an error
    of that view like any other.
    """

    def __init__(self, connection: Any):
        self.connection = connection
        super().__init__(
            f"Cannot send on the WebSocket connection to {connection.path!r}: it is closed "
            f"(close code {connection.close_code}). Check `ws.closed` first, or catch "
            "ConnectionClosedError where a peer may have left (a broadcast). "
            f"{see('websocket-connection')}"
        )


class BroadcastError(RuntimeError):
    """A message could not be handed to the broadcast backend in time; it is lost.

    Raised by ``request.broadcast()`` while the backend (Redis) is unreachable,
    after the setting ``aiopyramid_ng.broadcast.timeout``; never a hang.
    """


class ExecutorQueueFull(RuntimeError):
    """Blocking work was refused: as much as ``aiopyramid_ng.executor.max_queue`` already waits.

    Raised when the work is handed to the application's pool (a plain view,
    a ``use_executor`` function, the pipeline with ``aiopyramid_ng.pipeline =
    executor``) instead of queueing it without bound.  A request that lets it
    escape is answered ``503 Service Unavailable`` with a ``Retry-After``
    header; code that can do without the thread may catch it.
    """


class SubrequestTimeout(HTTPGatewayTimeout):  # type: ignore[misc]
    """A subrequest ran past its view's ``timeout=``: its work was cancelled.

    Raised where the subrequest's view was called, after its work unwound,
    so it reaches the caller as any exception of a subrequest's view does:
    with ``request.invoke_subrequest(..., use_tweens=False)`` it is raised
    by ``invoke_subrequest``; with ``use_tweens=True`` the subrequest's
    exception view tween turns it into its ``504 Gateway Timeout`` response
    (it is an :class:`~pyramid.httpexceptions.HTTPGatewayTimeout`).  The
    request that made the subrequest goes on under its own deadline.
    ``seconds`` is the subrequest's deadline.  Its body is short text, as
    the request's own 504 for a deadline.
    """

    def __init__(self, seconds: float):
        detail = f"the subrequest took longer than its {seconds:g} s."
        super().__init__(
            detail, content_type="text/plain", charset="utf-8", text=f"Gateway Timeout: {detail}\n"
        )
        self.seconds = seconds


class HandshakeRefused(Exception):
    """The application refused a WebSocket handshake made by a test client.

    Raised by :meth:`aiopyramid_ng.testing.TestApp.websocket_connect`.
    ``status``, ``headers`` and ``body`` are the HTTP response the
    application refused with; a refusal by closing before accepting is
    the ``403`` a server answers for it, with an empty body.
    """

    def __init__(self, status: int, headers: Any, body: bytes):
        super().__init__(status, body)
        self.status = status
        self.headers = headers
        self.body = body

    def __str__(self) -> str:
        detail = self.body.decode("utf-8", "replace")[:200]
        return f"The WebSocket handshake was refused with {self.status}" + (
            f": {detail}" if detail else "."
        )
