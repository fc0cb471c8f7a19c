"""The greenlet bridge: synchronous code that waits on coroutines without blocking the loop.

:func:`~aiopyramid_ng.helpers.spawn_greenlet` is a coroutine.  Awaited in an asyncio Task, it runs a
synchronous function in a new :class:`RequestGreenlet` whose parent is the
greenlet running the Task (the *driver*).  When that synchronous code calls
:func:`~aiopyramid_ng.helpers.await_`, the awaitable is stepped right there,
in the request greenlet, until it has to suspend; only the object it suspends on (the future it
yields) is handed up to the driver, which yields it to the Task exactly as a
coroutine would.  When the Task wakes the driver, the driver switches back
into the request greenlet, which resumes stepping the awaitable.

Because the awaitable is stepped inside the request greenlet, on the Task's
own stack, ``asyncio.current_task()``, ``asyncio.timeout()``, cancellation and
tracebacks behave as in plain asyncio, and a coroutine can call synchronous
code that itself calls :func:`~aiopyramid_ng.helpers.await_` to any depth with no extra greenlet or
Task.  The request greenlet shares the Task's :class:`contextvars.Context`
object, so context variables set on either side are seen on the other.
"""

from __future__ import annotations

import asyncio
import threading
import types
from collections.abc import Awaitable, Callable, Generator
from contextvars import ContextVar
from time import perf_counter
from typing import Any, ParamSpec, TypeVar

from greenlet import GreenletExit, getcurrent, greenlet

from .exceptions import ScopeError, see

# The public names; the rest (await_in_greenlet, direct_call, ...) serve the
# other layers of the package and may change between releases.
__all__ = ["RequestGreenlet", "in_bridge", "spawn_greenlet"]

P = ParamSpec("P")
T = TypeVar("T")

#: The loop of the request being served in this context.  Set by every driver
#: so that a worker thread running with a copy of the request's context knows
#: which loop to hand coroutines to.
_request_loop: ContextVar[asyncio.AbstractEventLoop] = ContextVar("aiopyramid_ng.request_loop")


class RequestGreenlet(greenlet):
    """A greenlet whose parent is a driver running inside an asyncio Task.

    Code running in it (or in any greenlet it starts) may call
    :func:`~aiopyramid_ng.helpers.await_`.
    SQLAlchemy's asyncio extension recognises it as a greenlet it may wait
    from, so a synchronous ``Session`` over an async engine performs its I/O
    on the loop with no thread.
    """

    # SQLAlchemy's await_ switches the raw awaitable to this greenlet's parent
    # and expects its outcome back; _drive speaks that protocol too.
    __sqlalchemy_greenlet_provider__ = True


class _IdleGreenlet(greenlet):
    """A request greenlet between two requests, parked in its thread's pool.

    Creating a greenlet costs about ten times as much as switching into a
    parked one, so a greenlet whose function returned is kept and serves the
    next request of its thread.  While parked it is of this class, not a
    :class:`RequestGreenlet`: it serves no request, holds no request context
    (``gr_context`` is None) and nothing of its last request, and
    :func:`~aiopyramid_ng.helpers.await_` cannot wait from it.  A greenlet whose function raised is
    never reused: it dies as it always did.
    """


#: What a pooled greenlet hands its driver, with its function's result, when
#: that function returned: ``(_RETURNED, value)``.  A tuple, not an object of
#: a class of its own, since building it costs no Python call.
_RETURNED = object()


#: Parked greenlets kept per thread; more concurrent requests than this still
#: work, their extra greenlets simply end with their requests.
POOL_SIZE = 256


class _Pool(threading.local):
    # Greenlets cannot switch across threads: each thread parks its own.
    def __init__(self) -> None:
        self.idle: list[greenlet] = []


_pool = _Pool()


_Job = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


def _serve() -> None:
    """The run function of every request greenlet: one request per job, then park."""
    # Started without a job (see _unpark), then handed each job as the value
    # of a switch: the arguments a greenlet is first switched with stay
    # referenced for as long as it runs, and a parked greenlet runs forever;
    # they would keep its first request's environ and application alive.
    parent = getcurrent().parent
    assert parent is not None
    job: _Job = parent.switch()
    while True:
        func, args, kwargs = job
        del job
        value = func(*args, **kwargs)
        # Nothing of the request may stay alive in a parked greenlet's frame.
        del func, args, kwargs
        parent = getcurrent().parent
        assert parent is not None
        # Two arguments reach the driver as one tuple: (_RETURNED, value).
        job = parent.switch(_RETURNED, value)
        del value


#: Told, in the request's context, how long each uninterrupted run of a
#: request greenlet took (see aiopyramid_ng.debug).
segment_observer: ContextVar[Callable[[float], None]] = ContextVar("aiopyramid_ng.segment_observer")
# Timing costs two clock reads per switch: only done once an application
# asked for it, which is checked with one global lookup.
_timed = False


def time_segments() -> None:
    """Start timing request greenlet runs for :data:`segment_observer`."""
    global _timed
    _timed = True


#: How many times request greenlets have switched out to wait on their loop
#: (through await_ or SQLAlchemy's greenlet protocol alike).  Read before and
#: after a call made in a request greenlet, it tells whether the call
#: suspended: only a call that never did ran on the loop thread with no
#: other request in between, so that its wall time is its own (see
#: aiopyramid_ng.adaptive).  A global increment costs a few ns beside the
#: switch it counts, where a per-thread counter would cost a lookup on every
#: read.  Loops of other threads (WSGI mode) count here too: a call may look
#: suspended when it was not, which only skips judging that call.
suspensions = 0


def _observe(resumed: float) -> None:
    observer = segment_observer.get(None)
    if observer is not None:
        observer(perf_counter() - resumed)


def _driver_of(current: greenlet) -> greenlet | None:
    """Return the driver greenlet that serves ``current``, or None outside a bridge."""
    # Walking up lets greenlets started from inside a request greenlet use the
    # bridge too; the driver switches back to whichever greenlet suspended.
    node: greenlet | None = current
    while node is not None:
        if type(node) is RequestGreenlet:
            return node.parent
        node = node.parent
    return None


def direct_call(function: Callable[P, T]) -> Callable[P, T]:
    """Return ``function``, or its bound ``__call__`` when that is a Python function.

    The interpreter runs a bound method of a Python function in its caller's
    own loop, while calling an instance (a Pyramid Router, an execution
    policy, most WSGI middleware) nests a C frame: one more on the saved
    stack of every suspended request greenlet, and time on every call.
    """
    if isinstance(type(function).__call__, types.FunctionType):
        bound: Callable[P, T] = function.__call__  # type: ignore[operator]
        return bound
    return function


def in_bridge() -> bool:
    """Return True when the caller runs where :func:`~aiopyramid_ng.helpers.await_` can wait."""
    current = getcurrent()
    # The request greenlet itself, the common case, without a walk.
    return type(current) is RequestGreenlet or _driver_of(current) is not None


def request_loop() -> asyncio.AbstractEventLoop | None:
    """Return the event loop of the request whose context the caller runs in."""
    return _request_loop.get(None)


def bind_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Record ``loop`` as the one serving the current context (see :func:`request_loop`)."""
    if _request_loop.get(None) is not loop:
        _request_loop.set(loop)


def discard(awaitable: object) -> None:
    """Close ``awaitable`` if it is a coroutine nobody will await.

    Python would otherwise warn that it was "never awaited", while the
    ScopeError raised next is the real diagnostic.
    """
    if isinstance(awaitable, types.CoroutineType):
        awaitable.close()


def await_in_greenlet(awaitable: Awaitable[T]) -> T:
    """Wait for ``awaitable`` from synchronous code and return its result.

    Only the current request greenlet is suspended while the awaitable is
    pending; the event loop keeps serving other requests.  An exception raised
    by the awaitable propagates unchanged (same object, with the coroutine's
    frames in its traceback).  Cancellation of the request's Task is thrown
    into the awaitable at its suspension point.

    :raises ScopeError: when called outside a request greenlet.
    """
    current = getcurrent()
    driver = current.parent if type(current) is RequestGreenlet else _driver_of(current)
    if driver is None:
        discard(awaitable)
        raise ScopeError(
            f"await_() cannot wait for {awaitable!r}: the caller is not running in a "
            "request greenlet, so waiting would block the event loop. This happens when "
            "synchronous code that uses synchronize() or await_() is called directly on the "
            "loop (from a plain asyncio task, a callback, or at import time). Run it through a "
            "view mapped by aiopyramid_ng, or from a coroutine with "
            "`await aiopyramid_ng.helpers.spawn_greenlet(func, ...)`, or await the coroutine "
            f"directly. {see('synchronize-errors')}"
        )
    steps = awaitable.__await__()
    thrown: BaseException | None = None
    while True:
        try:
            suspended_on = steps.send(None) if thrown is None else steps.throw(thrown)
        except StopIteration as stop:
            result: T = stop.value
            return result
        finally:
            thrown = None
        # Hand the suspension to the driver and sleep until the Task wakes it.
        # Whatever the Task throws (the future's exception, a cancellation) is
        # thrown into the awaitable on the next step, as the Task would do.
        try:
            driver.switch((current, suspended_on))
        except BaseException as exc:
            thrown = exc


@types.coroutine
def _drive(
    child: RequestGreenlet,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    task: asyncio.Task[Any] | None,
    on_suspend: Callable[[], object] | None = None,
) -> Generator[Any, None, Any]:
    global suspensions
    # A request that never waits (most short ones) switches into its greenlet
    # once and gets its result back at once: that path does no more than it
    # must.  What a suspension needs (the Task's cancellation count, the
    # on_suspend call) is only done once the greenlet first waits: a
    # CancelledError can only be thrown into it at a suspension point.
    job = (func, args, kwargs)
    if _timed:
        resumed = perf_counter()
        try:
            message = child.switch(job)
        finally:
            _observe(resumed)
    else:
        message = child.switch(job)
    del job
    if type(message) is tuple and message[0] is _RETURNED:
        _park(child)
        return message[1]
    cancelling = task.cancelling() if task is not None else 0
    if on_suspend is not None:
        on_suspend()
    while not child.dead:
        if type(message) is tuple and message[0] is _RETURNED:
            _park(child)
            message = message[1]
            break
        suspensions += 1
        resume: Callable[[Any], Any]
        sent: Any
        if type(message) is tuple:
            waiter, suspended_on = message
            # From await_in_greenlet: the greenlet that suspended, and what it waits on.
            try:
                yield suspended_on
            except GeneratorExit:
                _unwind(child, waiter, func)
                raise
            except BaseException as exc:
                resume, sent = _thrower(waiter), exc
            else:
                resume, sent = waiter.switch, None
        else:
            # From SQLAlchemy's await_: an awaitable to run to completion
            # here, whose value or exception goes back to the request greenlet.
            try:
                value = yield from message.__await__()
            except GeneratorExit:
                _unwind(child, child, func)
                raise
            except BaseException as exc:
                resume, sent = _thrower(child), exc
            else:
                resume, sent = child.switch, value
        if _timed:
            resumed = perf_counter()
            try:
                message = resume(sent)
            finally:
                _observe(resumed)
        else:
            message = resume(sent)
    if task is not None and task.cancelling() > cancelling:
        # The synchronous code swallowed the CancelledError thrown into it.
        # The Task was still asked to stop: end it cancelled, as asyncio would
        # if the coroutine had re-raised.
        raise asyncio.CancelledError()
    return message


def _thrower(target: greenlet) -> Callable[[BaseException], Any]:
    """Return a function that raises an exception in ``target`` with its traceback.

    ``greenlet.throw(exc)`` raises ``exc`` with no traceback, which would
    drop every frame the exception came through before it reached the loop
    (a worker thread's, a coroutine's): the three-argument form keeps them.
    """

    def throw(exc: BaseException) -> Any:
        return target.throw(type(exc), exc, exc.__traceback__)

    return throw


def _unwind(child: RequestGreenlet, waiter: greenlet, func: Callable[..., Any]) -> None:
    """Unwind a suspended request greenlet whose driver is being closed.

    A driver is closed when its coroutine is closed or garbage-collected
    before it finishes.  The greenlet gets ``GeneratorExit`` at its suspension
    point now, so its ``finally`` blocks run before the driver goes away.
    """
    try:
        waiter.throw(GeneratorExit)
    except GeneratorExit:
        return
    if not child.dead:
        # It caught GeneratorExit and tried to wait again: stop it for good.
        child.throw(GreenletExit)
    if not child.dead:
        raise RuntimeError(
            f"{func!r} kept waiting after its request was closed: it caught the GeneratorExit "
            "and GreenletExit thrown into it. Let both propagate (re-raise them from any "
            f"`except BaseException:` around the wait). {see('synchronize-errors')}"
        )


async def spawn_greenlet(func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run synchronous ``func`` in a new request greenlet and return its result.

    Usable from any Task.  ``func`` (and everything it calls) may use
    :func:`~aiopyramid_ng.helpers.await_` and functions decorated with
    :func:`~aiopyramid_ng.helpers.synchronize`; it shares the calling Task's
    context variables.
    """
    loop = asyncio.get_running_loop()
    bind_loop(loop)
    parent = getcurrent()
    child = _unpark(parent)
    # Share the Task's Context object itself (a new greenlet would start with
    # an empty one): values set on either side of the bridge are seen on the
    # other, and a ContextVar token made on one side resets on the other.
    child.gr_context = parent.gr_context
    result: T = await _drive(child, func, args, kwargs, asyncio.current_task(loop))
    return result


async def spawn_greenlet_watched(
    on_suspend: Callable[[], object], func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
) -> T:
    """:func:`spawn_greenlet`, calling ``on_suspend()`` when the greenlet first waits on the loop.

    Work that only matters while the loop runs other code (watching for a
    client disconnect) can start there: a request that never waits never
    pays for it.
    """
    task = asyncio.current_task()
    assert task is not None, "spawn_greenlet_watched() runs in a Task"
    result: T = await drive_greenlet(task, on_suspend, func, *args, **kwargs)
    return result


def drive_greenlet(
    task: asyncio.Task[Any],
    on_suspend: Callable[[], object],
    func: Callable[P, T],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> Awaitable[T]:
    """:func:`spawn_greenlet_watched` for a caller that knows its Task: ``task``, running.

    Returns the driver itself, for the caller to await: the path of every
    request, kept free of a coroutine of its own and of ``current_task()``.
    """
    loop = task.get_loop()
    if _request_loop.get(None) is not loop:
        _request_loop.set(loop)
    parent = getcurrent()
    child = _unpark(parent)
    child.gr_context = parent.gr_context  # shared, as in spawn_greenlet
    return _drive(child, func, args, kwargs, task, on_suspend)


def _unpark(parent: greenlet) -> RequestGreenlet:
    """Return a request greenlet of ``parent``: a parked one of this thread, or a new one."""
    idle = _pool.idle
    while idle:
        child = idle.pop()
        try:
            child.parent = parent
        except ValueError:
            continue  # parent runs below it: a cycle; it ends when dropped
        child.__class__ = RequestGreenlet
        assert isinstance(child, RequestGreenlet)
        return child
    child = RequestGreenlet(_serve, parent)
    child.switch()  # to where _serve waits for its first job
    return child


def _park(child: greenlet) -> None:
    """Keep ``child``, whose function returned, for a later request of this thread."""
    child.gr_context = None
    idle = _pool.idle
    if len(idle) < POOL_SIZE:
        child.__class__ = _IdleGreenlet
        idle.append(child)
    else:
        # Thrown at its parking point, GreenletExit ends it at once.
        child.throw(GreenletExit)
