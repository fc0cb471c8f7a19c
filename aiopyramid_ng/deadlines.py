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

A subrequest (``request.invoke_subrequest``) whose view has ``timeout=``
runs within a :class:`Scope` of its request's deadline
(:meth:`Deadline.narrow`): the earlier of the two expires first, the
request's own deadline is never moved, and the scope is gone when the
subrequest returns.  A scope that expires cancels only the subrequest's
work: the Task it runs in, told apart from every other cancellation in the
same way, or, for a subrequest run in a worker thread, what that thread
waits for on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
from concurrent.futures import Future
from contextvars import ContextVar, Token
from time import monotonic
from types import TracebackType
from typing import Any, Protocol

import pyramid
from pyramid.response import Response

from .exceptions import SubrequestTimeout
from .types import Environ

__all__ = ["Deadline", "Scope", "Waits", "current_deadline", "expired_deadline"]

log = logging.getLogger(__name__)

#: The deadline of the request whose context the caller runs in: the request
#: greenlet shares its Task's context, and a worker thread gets a copy.
_current: ContextVar[Deadline] = ContextVar("aiopyramid_ng.deadline")

# Frames of asyncio, Pyramid and this package say nothing about where the
# application waited.
_PLUMBING = tuple(
    os.path.dirname(path) + os.sep for path in (asyncio.__file__, pyramid.__file__, __file__)
)


#: How early a timer may find its deadline (seconds) and still take it as due.
_EARLY = 0.001


class Waits(Protocol):
    """What a worker thread waits for on the loop (see :mod:`aiopyramid_ng.threads`)."""

    def interrupt(self) -> None:
        """Cancel the waits, and every one begun until :meth:`resume`."""

    def resume(self) -> None:
        """Let waits begun from now on run."""


class Scope:
    """A subrequest's own deadline within its request's: see :meth:`Deadline.narrow`.

    ``expired`` tells whether this deadline (not an earlier one around it)
    passed while the subrequest ran.
    """

    __slots__ = (
        "_baseline",
        "_task",
        "_waits",
        "closed",
        "expired",
        "seconds",
        "source",
        "view",
        "when",
    )

    def __init__(
        self,
        when: float,
        seconds: float,
        source: str,
        view: str,
        task: asyncio.Task[Any] | None,
        waits: Waits | None,
    ):
        self.when = when
        self.seconds = seconds
        self.source = source
        self.view = view
        self._task = task
        self._baseline = task.cancelling() if task is not None else 0
        self._waits = waits
        self.expired = False
        self.closed = False

    def _cancel(self) -> None:
        # On the loop's thread.
        self.expired = True
        if self._task is not None:
            self._task.cancel()
        elif self._waits is not None:
            self._waits.interrupt()

    def absorb(self) -> bool:
        """Take back the cancellation of this expired scope (see :meth:`Deadline.absorb`)."""
        if self._task is None:
            return True  # the waits of a thread it interrupted ended with their own Tasks
        return self._task.uncancel() <= self._baseline


class Deadline:
    """The deadline of the request served by ``task``; unarmed until :meth:`arm`.

    ``seconds`` and ``source`` say which deadline is armed (the setting's, or
    a view's ``timeout=``), ``view`` the view found for the request, once it is.
    """

    __slots__ = (
        "_baseline",
        "_closed",
        "_handle",
        "_lock",
        "_loop",
        "_scopes",
        "_task",
        "_thread",
        "_when",
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
        #: When the request's own deadline passes, on the loop's clock.
        self._when = math.inf
        #: The subrequests' deadlines in force, outermost first; guarded by
        #: the lock, since a subrequest may run in a worker thread.
        self._scopes: list[Scope] = []
        self._lock = threading.Lock()
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
        self.seconds, self.source = seconds, source
        self._when = self._loop.time() + seconds
        self._schedule()

    def close(self) -> None:
        """Disarm for good: the request answered, or stopped being subject to deadlines.

        The deadlines of subrequests it makes afterwards still apply.
        """
        self._closed = True
        self._when = math.inf
        if threading.get_ident() == self._thread:
            self._schedule()
        else:
            self._loop.call_soon_threadsafe(self._schedule)

    def narrow(self, seconds: float, source: str, view: str, waits: Waits | None) -> Scope:
        """Give a subrequest, for as long as it runs, ``seconds`` from now at most.

        The request's own deadline (and that of any subrequest around this
        one) still applies: whichever passes first expires, and this one
        cannot extend them.  Call :meth:`widen` with the scope returned when
        the subrequest is done.  ``waits`` are what the calling worker
        thread waits for on the loop, interrupted if the scope expires
        (ignored on the loop's thread, where the calling Task is cancelled).
        """
        on_loop = threading.get_ident() == self._thread
        task = asyncio.current_task(self._loop) if on_loop else None
        scope = Scope(
            self._loop.time() + seconds,
            seconds,
            source,
            view,
            task,
            None if on_loop else waits,
        )
        with self._lock:
            self._scopes.append(scope)
        self._reschedule(on_loop)
        return scope

    def widen(self, scope: Scope) -> None:
        """End ``scope``: the subrequest is done (idempotent)."""
        with self._lock:
            if scope.closed:
                return
            scope.closed = True
            self._scopes.remove(scope)
        on_loop = threading.get_ident() == self._thread
        if not on_loop and scope._waits is not None and scope.expired:
            self._loop.call_soon_threadsafe(scope._waits.resume)
        self._reschedule(on_loop)

    def lapsed(self) -> bool:
        """Whether the request's deadline, or that of a subrequest in progress, has expired."""
        if self.expired:
            return True
        with self._lock:
            return any(scope.expired for scope in self._scopes)

    def _reschedule(self, on_loop: bool) -> None:
        if on_loop:
            self._schedule()
        else:
            self._loop.call_soon_threadsafe(self._schedule)

    def _next(self) -> tuple[float, Scope | None]:
        """The earliest deadline still to pass, and its scope (None: the request's own).

        On a tie the outer deadline wins: the one the subrequest may not
        extend.  The caller holds the lock.
        """
        when, owner = (math.inf, None) if self.expired else (self._when, None)
        for scope in self._scopes:
            if not scope.expired and scope.when < when:
                when, owner = scope.when, scope
        return when, owner

    def _schedule(self) -> None:
        # On the loop's thread: one timer, for the earliest deadline.
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        with self._lock:
            when, _ = self._next()
        if when != math.inf:
            self._handle = self._loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._handle = None
        with self._lock:
            # Under the lock: a scope ended (widen) is never cancelled after.
            when, owner = self._next()
            # The deadline this timer was for may have ended since (a
            # subrequest done in a worker thread, its rescheduling on its
            # way, or the request closed): then none is due yet.
            due = when - self._loop.time() <= _EARLY
            if due and owner is not None:
                owner._cancel()
        if not due:
            self._schedule()
            return
        if owner is None:
            self.expired = True
            self._task.cancel()
            return
        self._schedule()

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

    def answer_subrequest(
        self, environ: Environ, scope: Scope, exc: BaseException | None
    ) -> SubrequestTimeout:
        """Log the expiry of a subrequest's ``scope`` (one line); return the exception to raise."""
        log.warning(
            "Subrequest %s %s raised SubrequestTimeout (504): over its deadline of %g s "
            "(%s; view %s)%s",
            environ.get("REQUEST_METHOD", ""),
            environ.get("PATH_INFO", ""),
            scope.seconds,
            scope.source,
            scope.view,
            _where(exc),
        )
        return SubrequestTimeout(scope.seconds)

    def _expired_scope(self) -> Scope | None:
        """The innermost subrequest's deadline that expired, if the request's own has not."""
        if self.expired:
            return None
        with self._lock:
            for scope in reversed(self._scopes):
                if scope.expired:
                    return scope
        return None

    def abandon(self, work: Future[Any], func: object) -> None:
        """Log when ``work``, running ``func`` in a pool thread past the deadline, ends at last."""
        left = monotonic()
        code = getattr(func, "__code__", None)
        running = (
            f" (running {getattr(func, '__qualname__', func)})"
            if code is None or not code.co_filename.startswith(_PLUMBING)
            else ""
        )
        scope = self._expired_scope()
        seconds = self.seconds if scope is None else scope.seconds
        view = (self.view if scope is None else scope.view) or "its request"

        def finished(_: Future[Any]) -> None:
            log.warning(
                "A pool thread working for %s%s, left running at its deadline of %g s, "
                "finished %.2f s later; its result was discarded.",
                view,
                running,
                seconds,
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
    """The current request's deadline if it, or a subrequest's in progress, has expired."""
    deadline = _current.get(None)
    return deadline if deadline is not None and deadline.lapsed() else None


def enter(deadline: Deadline) -> Token[Deadline]:
    """Make ``deadline`` the current request's; reset with the token returned."""
    return _current.set(deadline)


def leave(token: Token[Deadline]) -> None:
    """Undo :func:`enter`."""
    _current.reset(token)
