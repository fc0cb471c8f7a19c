"""Where the default mapper runs a plain view: the thread pool until it proves quick, then inline.

A hop to the thread pool costs a plain view more than the view itself when
the view only computes for a few microseconds; running it in the request
greenlet, on the loop thread, costs nothing, but a view that blocks there
stalls every request of the loop.  With ``aiopyramid_ng.plain_views =
adaptive`` (the default), each plain view mapped by
:class:`~aiopyramid_ng.mappers.CoroutineOrExecutorMapper` has a
:class:`Placement` that decides from what its runs show:

=============  ===========================================================
state          what happens to a call, and what ends the state
=============  ===========================================================
probation      runs in the pool, measured in the worker thread.  After
               :data:`PROMOTE_AFTER` quick runs in a row (none slept more
               than :data:`BRIEF_WAIT`, none computed longer than the
               limit, ``aiopyramid_ng.plain_views.inline_ms``) the view is
               promoted (logged at DEBUG).  A run that waited longer than
               the limit while nothing else ran keeps it in the pool for
               good.
inline         runs in the request greenlet, timed.  One run that computed
               longer than the limit, or waited longer than the limit while
               nothing else ran, or :data:`DEMOTE_AFTER` runs in a row that
               waited more than :data:`CLEAR_WAIT`, or a nested event loop,
               demote it for good, with one WARNING.  A run that suspended
               through the bridge (``await_``, a synchronized coroutine) is
               not judged: the loop served other requests meanwhile.
pool           runs in the pool, unmeasured, as every plain view does with
               ``aiopyramid_ng.plain_views = executor``.
=============  ===========================================================

A run is told from the clocks of the thread that ran it (see :class:`Run`):
its CPU time says how long the view computed; its count of voluntary
context switches (Linux) whether it slept at all, for a thread that was only
preempted (another process had the core) never slept, however long its wall
time; and the process's CPU time, whether other threads ran meanwhile.  A
thread can sleep waiting for I/O, a lock, ``time.sleep``, or the
interpreter lock while another thread computes: the last one is not the
view's doing, and looks like the others, except that other threads ran
during it.  A single wait decides at once only when it outlasted the limit
with nothing else running; shorter ones, or ones while other threads ran,
must recur.

The state is a handful of plain attributes, read on every call and written
on the loop threads (worker threads only measure); the transitions take a
lock, so that however many loops (one per server thread in WSGI mode) call
the view at once, each transition happens and is logged once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial
from time import process_time, thread_time
from typing import NamedTuple, Protocol

from pyramid.registry import Registry

from .exceptions import see
from .settings import INLINE_MS, PLAIN_VIEWS

__all__ = ["Placement", "PoolRun", "Run", "thread_usage"]

log = logging.getLogger(__name__)

#: Quick runs in a row in the pool that promote a view into the request greenlet.
PROMOTE_AFTER = 16
#: A run that slept longer than this, in seconds, was not quick: it waited on something.
BRIEF_WAIT = 0.0001
#: A run that slept longer than this, in seconds, waited clearly: on I/O, a lock, a sleep,
#: or the interpreter lock.
CLEAR_WAIT = 0.001
#: Runs in a row in the request greenlet that waited clearly and so demote a view, when
#: none alone does: any of them may have been a wait for the interpreter lock.
DEMOTE_AFTER = 3


class Usage(Protocol):
    """What ``thread_usage()`` returns: the fields of ``resource.getrusage()`` it reads."""

    @property
    def ru_utime(self) -> float: ...

    @property
    def ru_stime(self) -> float: ...

    @property
    def ru_nvcsw(self) -> int: ...


class _ThreadTime(NamedTuple):
    """The calling thread's CPU time alone, where no count of its sleeps is kept."""

    ru_utime: float
    ru_stime: float = 0.0
    ru_nvcsw: int = -1  # unknown: every wait counts as a sleep


#: Return the calling thread's CPU time and (on Linux) how many times it
#: slept, its voluntary context switches: one system call, about as cheap
#: as ``time.thread_time()`` alone.
thread_usage: Callable[[], Usage]
try:
    from resource import RUSAGE_THREAD, getrusage
except ImportError:  # pragma: no cover - not Linux: CPU time only

    def _thread_time() -> Usage:
        return _ThreadTime(thread_time())

    thread_usage = _thread_time
else:
    thread_usage = partial(getrusage, RUSAGE_THREAD)


class Run:
    """How one call of a view went, from the clocks of the thread that ran it.

    Made right after the call, from what ``thread_usage()`` and
    ``time.process_time()`` read right before it.
    """

    __slots__ = ("cpu", "explained", "slept", "waited", "wall")

    def __init__(self, wall: float, start: Usage, process_start: float):
        end = thread_usage()
        process = process_time() - process_start
        #: Seconds from call to return.
        self.wall = wall
        #: Seconds the thread computed.
        self.cpu = (end.ru_utime + end.ru_stime) - (start.ru_utime + start.ru_stime)
        #: Did the thread sleep at all?  One that did not was only preempted.
        self.slept = start.ru_nvcsw < 0 or end.ru_nvcsw != start.ru_nvcsw
        #: Seconds the thread slept (or was preempted, if it slept too); 0 if it never slept.
        self.waited = max(wall - self.cpu, 0.0) if self.slept else 0.0
        #: Did other threads of the process compute for at least half the wait?  Then it may
        #: have been a wait for the interpreter lock, which is not the view's doing.
        self.explained = process - self.cpu >= self.waited / 2


class PoolRun:
    """One measured call in the pool: the worker fills it in, the loop thread reads it."""

    __slots__ = ("run",)

    def __init__(self) -> None:
        #: None until the call is over in the worker (never, for a call its request abandoned).
        self.run: Run | None = None


#: Taken by every transition, so that each happens, and is logged, once.
_transitions = threading.Lock()


class Placement:
    """Where one plain view runs, and the evidence for it; see the module's table."""

    __slots__ = ("configured", "fast", "inline", "limit", "name", "probation", "streak", "strikes")

    def __init__(self, name: str):
        #: The view, for the log (``pyramid.util.object_description``).
        self.name = name
        #: Run the view in the request greenlet?  Read on every call.
        self.inline = False
        #: Measure its runs in the pool?  Until it is promoted or settled.
        self.probation = False
        #: Settings read?  On the first call, from the request's registry.
        self.configured = False
        #: The longest a run may compute on the loop, in seconds (``inline_ms``).
        self.limit = INLINE_MS.default / 1000
        #: An inline run no longer than this (seconds) is under every bound: not judged.
        self.fast = min(CLEAR_WAIT, self.limit)
        self.streak = 0  # quick runs in a row in the pool
        self.strikes = 0  # inline runs in a row that waited clearly

    def configure(self, registry: Registry) -> None:
        """Read the settings of the view's application (on its first call)."""
        settings = registry.settings
        adaptive = PLAIN_VIEWS.read(settings) == "adaptive"
        limit = INLINE_MS.read(settings) / 1000
        with _transitions:
            if self.configured:
                return
            self.limit = limit
            self.fast = min(CLEAR_WAIT, limit)
            self.probation = adaptive
            self.configured = True

    # -- in the pool -------------------------------------------------------------------------

    def record(self, pool_run: PoolRun) -> None:
        """Learn from a call on probation, once it is over (on the loop thread)."""
        run = pool_run.run
        if run is None or not self.probation:
            return  # abandoned by its request, or promoted or settled meanwhile
        if run.waited <= BRIEF_WAIT and run.cpu <= self.limit:
            self.streak += 1
            if self.streak >= PROMOTE_AFTER:
                self._promote()
            return
        self.streak = 0
        if run.wall > self.limit and run.waited > CLEAR_WAIT and not run.explained:
            self._settle(run)

    def _promote(self) -> None:
        with _transitions:
            if not self.probation:
                return
            self.probation = False
            self.inline = True
        log.debug(
            "plain view %s ran %d times in a row in the thread pool without waiting, each "
            "computing under %g ms: it runs in the request greenlet from now on",
            self.name,
            PROMOTE_AFTER,
            self.limit * 1000,
        )

    def _settle(self, run: Run) -> None:
        with _transitions:
            if not self.probation:
                return
            self.probation = False
        log.debug(
            "plain view %s waited %.1f ms in the thread pool, on I/O, a lock or a sleep: it "
            "stays in the thread pool",
            self.name,
            run.waited * 1000,
        )

    # -- in the request greenlet -------------------------------------------------------------

    def judge(self, run: Run) -> None:
        """Judge an inline run that never suspended through the bridge (on the loop thread)."""
        if run.cpu > self.limit:
            self._demote(
                run,
                f"computed for {run.cpu * 1000:.1f} ms on the event loop, more than the "
                f"{self.limit * 1000:g} ms {INLINE_MS.name} allows",
            )
        elif run.waited <= CLEAR_WAIT:
            self.strikes = 0
        elif run.wall > self.limit and not run.explained:
            self._demote(
                run,
                f"waited {run.waited * 1000:.1f} ms on the event loop (on I/O, a lock or a "
                "sleep) while nothing else ran",
            )
        else:
            self.strikes += 1
            if self.strikes >= DEMOTE_AFTER:
                self._demote(
                    run,
                    f"waited on the event loop {DEMOTE_AFTER} times in a row, the last time "
                    f"{run.waited * 1000:.1f} ms (on I/O, a lock, a sleep, or the interpreter "
                    "lock while other threads ran)",
                )

    def started_a_loop(self, exc: BaseException) -> None:
        """The view tried to run an event loop of its own on the loop thread (on the loop)."""
        with _transitions:
            if not self.inline:
                return
            self.inline = False
        log.warning(
            "plain view %s tried to start an event loop of its own (%s) on the thread of the "
            "running one, so this request failed with NestedLoopError. It runs in the thread "
            "pool from now on, where a loop of its own is allowed. %s %s",
            self.name,
            exc,
            self._fix(),
            see("howitworks-plain-views"),
        )

    def _demote(self, run: Run, what: str) -> None:
        with _transitions:
            if not self.inline:
                return  # demoted by another thread's call meanwhile
            self.inline = False
        log.warning(
            "plain view %s %s, holding the loop %.1f ms: under an ASGI server every other "
            "request on the loop waits meanwhile. It runs in the thread pool from now on. %s %s",
            self.name,
            what,
            run.wall * 1000,
            self._fix(),
            see("howitworks-plain-views"),
        )

    @staticmethod
    def _fix() -> str:
        return (
            "To run it there from the start, register it with mapper=ExecutorMapper (add_view "
            f"or view_config), or set {PLAIN_VIEWS.name} = executor for every plain view."
        )
