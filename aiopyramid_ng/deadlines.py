"""A request's deadline: past it, the request is cancelled where it waits and answered 504.

A :class:`Deadline` belongs to one request and to the asyncio Task serving it
(the request greenlet runs inside that Task).  When it expires it cancels the
Task, exactly as a client disconnect does: the ``CancelledError`` is thrown
where the request waits (a coroutine view's ``await``, ``synchronize``'d
code, a wait for a pool thread), unwinds Pyramid's pipeline (finished
callbacks run, a pyramid_tm transaction is aborted) and is then told apart
from any other cancellation by the Task's cancellation count, so a server's
own cancellation is never swallowed.  Where deadlines apply and how the
view option and the setting combine is :mod:`aiopyramid_ng.limits`.

A thread cannot be cancelled: :func:`~aiopyramid_ng.threads.run_in_thread`
leaves a thread running for a request over its deadline to finish alone
(:meth:`Deadline.abandon`) rather than make the request wait for it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import Future
from contextvars import ContextVar, Token
from time import monotonic
from types import TracebackType
from typing import Any

import pyramid
from pyramid.response import Response

from .types import Environ

__all__ = ["Deadline", "current_deadline", "expired_deadline"]

log = logging.getLogger(__name__)

#: The deadline of the request whose context the caller runs in: the request
#: greenlet shares its Task's context, and a worker thread gets a copy.
_current: ContextVar[Deadline] = ContextVar("aiopyramid_ng.deadline")

# Frames of asyncio, Pyramid and this package say nothing about where the
# application waited.
_PLUMBING = tuple(
    os.path.dirname(path) + os.sep for path in (asyncio.__file__, pyramid.__file__, __file__)
)


class Deadline:
    """The deadline of the request served by ``task``; unarmed until :meth:`arm`.

    ``seconds`` and ``source`` say which deadline is armed (the setting's, or
    a view's ``timeout=``), ``view`` the view found for the request, once it is.
    """

    __slots__ = (
        "_baseline",
        "_closed",
        "_handle",
        "_loop",
        "_task",
        "_thread",
        "expired",
        "seconds",
        "source",
        "view",
    )

    def __init__(self, task: asyncio.Task[Any]):
        self._task = task
        self._loop = task.get_loop()
        self._thread = threading.get_ident()
        # Cancellations requested before the request started are not its own.
        self._baseline = task.cancelling()
        self._handle: asyncio.TimerHandle | None = None
        self._closed = False
        self.expired = False
        self.seconds = 0.0
        self.source = ""
        self.view: str | None = None

    def arm(self, seconds: float, source: str) -> None:
        """Give the request ``seconds`` from now, replacing the deadline armed before."""
        if threading.get_ident() != self._thread:
            # A view deriver running in a pool thread (pipeline = executor):
            # timers belong to the loop's thread.
            self._loop.call_soon_threadsafe(self.arm, seconds, source)
            return
        if self._closed or self.expired:
            return
        if self._handle is not None:
            self._handle.cancel()
        self.seconds, self.source = seconds, source
        self._handle = self._loop.call_later(seconds, self._expire)

    def close(self) -> None:
        """Disarm for good: the request answered, or stopped being subject to deadlines."""
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _expire(self) -> None:
        self._handle = None
        self.expired = True
        self._task.cancel()

    def absorb(self) -> bool:
        """Take back the cancellation of an expired deadline.

        :returns: True when no other cancellation (the server's, a client
            disconnect's) is pending, so the request may answer 504; False
            when one is, which the caller must let propagate.
        """
        return self._task.uncancel() <= self._baseline

    def answer(self, environ: Environ, exc: BaseException | None) -> Response:
        """Log the expiry (one line) and return the 504 response."""
        view = f"view {self.view}" if self.view else "before its view was found"
        log.warning(
            "%s %s answered 504: over its deadline of %g s (%s; %s)%s",
            environ.get("REQUEST_METHOD", ""),
            environ.get("PATH_INFO", ""),
            self.seconds,
            self.source,
            view,
            _where(exc),
        )
        return Response(
            status=504,
            content_type="text/plain",
            charset="utf-8",
            text=f"Gateway Timeout: the request took longer than its {self.seconds:g} s.\n",
        )

    def abandon(self, work: Future[Any], func: object) -> None:
        """Log when ``work``, running ``func`` in a pool thread past the deadline, ends at last."""
        left = monotonic()
        code = getattr(func, "__code__", None)
        running = (
            f" (running {getattr(func, '__qualname__', func)})"
            if code is None or not code.co_filename.startswith(_PLUMBING)
            else ""
        )
        view = self.view or "its request"

        def finished(_: Future[Any]) -> None:
            log.warning(
                "A pool thread working for %s%s, left running at its deadline of %g s, "
                "finished %.2f s later; its result was discarded.",
                view,
                running,
                self.seconds,
                monotonic() - left,
            )

        work.add_done_callback(finished)


def _where(exc: BaseException | None) -> str:
    """Where the application waited when it was cancelled: its innermost own frame."""
    tb: TracebackType | None = exc.__traceback__ if exc is not None else None
    found = ""
    while tb is not None:
        code = tb.tb_frame.f_code
        if not code.co_filename.startswith(_PLUMBING):
            found = f", cancelled at {code.co_filename}:{tb.tb_lineno} in {code.co_name}"
        tb = tb.tb_next
    return found


def current_deadline() -> Deadline | None:
    """The deadline of the current request, or None outside requests with deadlines."""
    return _current.get(None)


def expired_deadline() -> Deadline | None:
    """The current request's deadline if it has expired, else None."""
    deadline = _current.get(None)
    return deadline if deadline is not None and deadline.expired else None


def enter(deadline: Deadline) -> Token[Deadline]:
    """Make ``deadline`` the current request's; reset with the token returned."""
    return _current.set(deadline)


def leave(token: Token[Deadline]) -> None:
    """Undo :func:`enter`."""
    _current.reset(token)
