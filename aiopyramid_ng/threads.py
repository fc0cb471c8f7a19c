"""The hop between the event loop and worker threads, in both directions.

:func:`run_in_thread` runs blocking work in a pool from a coroutine (or a
request greenlet), with a copy of the caller's context variables, so
``get_current_request()`` and :func:`~aiopyramid_ng.helpers.synchronize`
work in the thread.  :func:`wait_from_worker` is the way back: a worker
thread serving a request blocks while the request's loop runs a coroutine
for it.  Which pool runs an application's work is
:mod:`aiopyramid_ng.executor`'s business; nothing here knows of Pyramid.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, Future
from time import perf_counter
from typing import Any, ParamSpec, TypeVar

from .bridge import await_in_greenlet, bind_loop, discard, request_loop, spawn_greenlet
from .deadlines import expired_deadline
from .exceptions import ScopeError, see

__all__ = ["run_in_thread", "thread_observer", "wait_from_thread", "wait_from_worker"]

P = ParamSpec("P")
T = TypeVar("T")


_Work = tuple["Future[Any]", contextvars.Context, Callable[[], Any]]


class _WaitingWorker:
    """A worker thread blocked until a coroutine it started on the loop is done."""

    def __init__(self) -> None:
        self.inbox: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        # Only read and written on the loop thread, so it needs no lock.
        self.waiting = True

    def stop_waiting(self) -> None:
        self.waiting = False
        self.inbox.put(None)


#: Set in the context of a coroutine that a worker thread is blocked waiting
#: for (see wait_from_worker).  Blocking work that coroutine hands to an
#: executor runs in the waiting thread instead: otherwise a pool whose threads
#: all wait this way (a one-thread pool, say) could never run it.
_waiting_worker: contextvars.ContextVar[_WaitingWorker] = contextvars.ContextVar(
    "aiopyramid_ng.waiting_worker"
)


class _ThreadCall:
    """The coroutines a thread started by run_in_thread waits for on the loop.

    Only touched on the loop thread, so it needs no lock.
    """

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.cancelled = False
        # A subrequest's deadline passed while the thread ran it: its waits
        # are cancelled until the subrequest is done (resume).
        self.interrupted = False

    def track(self, task: asyncio.Task[Any]) -> None:
        if self.cancelled or self.interrupted:
            task.cancel()
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def cancel(self) -> None:
        self.cancelled = True
        for task in self.tasks:
            task.cancel()

    def interrupt(self) -> None:
        self.interrupted = True
        for task in list(self.tasks):
            task.cancel()

    def resume(self) -> None:
        self.interrupted = False


#: Set in the context of every run_in_thread call, so that cancelling the
#: caller also cancels what the thread waits for on the loop.
_thread_call: contextvars.ContextVar[_ThreadCall] = contextvars.ContextVar(
    "aiopyramid_ng.thread_call"
)


#: Told, in the worker thread once ``func`` has returned or raised, how long
#: each run_in_thread call of the context waited for a worker and then ran
#: (seconds); told instead on the loop, with the time run so far, when a
#: request over its deadline leaves the thread running, since the request
#: is over before the thread.  Once per call either way.  Unset unless
#: something (aiopyramid_ng.otel) asked: a call then costs one lookup and
#: no clock read.
thread_observer: contextvars.ContextVar[Callable[[float, float], None]] = contextvars.ContextVar(
    "aiopyramid_ng.thread_observer"
)


class _Timing:
    """One call's wait for a worker and its run, told to the observer once."""

    __slots__ = ("_untold", "observer", "queued", "started")

    def __init__(self, observer: Callable[[float, float], None]):
        self.observer = observer
        self.queued = perf_counter()
        self.started = 0.0
        # Popped by whichever tells first: the worker, or the loop abandoning it.
        self._untold = [True]

    def start(self) -> None:
        self.started = perf_counter()

    def tell(self) -> None:
        try:
            self._untold.pop()
        except IndexError:
            return
        now = perf_counter()
        started = self.started or now  # abandoned before the worker read the clock
        self.observer(started - self.queued, now - started)


async def run_in_thread(
    executor: Executor, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
) -> T:
    """Run blocking ``func`` in ``executor`` with a copy of the caller's context.

    Cancellation never abandons a running thread: work that has not started
    is withdrawn; work that has started is let finish (its result discarded)
    before the ``CancelledError`` propagates, so whatever runs after the
    caller unwinds (Pyramid's finished callbacks, a transaction manager) never
    races the thread.  The one exception is a request over its deadline (see
    :mod:`aiopyramid_ng.deadlines`), which answers on time and leaves the
    thread to finish alone.  Coroutines the thread is waiting for on the loop are
    cancelled with the caller, so the thread sees ``CancelledError`` there
    and can unwind early.
    """
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    thread_call = _ThreadCall()
    # The thread may wait on coroutines (synchronize, await_): they go to this
    # loop, and are cancelled with this call.  One context.run sets both.
    context.run(_enter_thread_call, loop, thread_call)
    # One loop future, resolved from the worker by a single
    # call_soon_threadsafe: cheaper by two futures and their callbacks than
    # asyncio.wrap_future plus asyncio.shield, on every plain view.
    outcome: asyncio.Future[T] = loop.create_future()
    observer = thread_observer.get(None)
    timing = _Timing(observer) if observer is not None else None

    def work() -> None:
        # In the worker thread.
        if timing is not None:
            timing.start()
        resolve: Callable[[asyncio.Future[Any], Any], None]
        try:
            value: Any = context.run(func, *args, **kwargs)
        except BaseException as exc:  # all of it is the caller's to see, as a call's would be
            resolve, value = _fail, exc
        else:
            resolve = _succeed
        if timing is not None:
            # Before the outcome is reported: the caller (and the request it
            # serves) still waits, so what the observer records is still open.
            timing.tell()
        _report(loop, resolve, outcome, value)

    worker = _waiting_worker.get(None)
    submitted: Future[None]
    if worker is None or not worker.waiting:
        submitted = executor.submit(work)
    else:
        submitted = Future()
        worker.inbox.put((submitted, contextvars.Context(), work))
    try:
        # Awaiting the loop future directly: a cancellation of the caller
        # cancels it, and the thread's late outcome is then dropped by
        # _succeed/_fail.  The thread itself is still waited for below.
        return await outcome
    except asyncio.CancelledError:
        if not submitted.cancel():
            thread_call.cancel()
            deadline = expired_deadline()
            if deadline is not None:
                # A request over its deadline answers on time: the thread,
                # which nothing can stop, is left to finish alone.
                if timing is not None:
                    timing.tell()  # while the request's record is still open
                deadline.abandon(submitted, func)
                raise
            await _finish_despite_cancellation(asyncio.wrap_future(submitted))
        raise


def thread_waits() -> _ThreadCall | None:
    """What the calling worker thread, started by :func:`run_in_thread`, waits for on the loop.

    None elsewhere.  Its ``interrupt()`` (on the loop's thread) cancels those
    waits, and any begun until its ``resume()``: see
    :meth:`aiopyramid_ng.deadlines.Deadline.narrow`.
    """
    return _thread_call.get(None)


def _enter_thread_call(loop: asyncio.AbstractEventLoop, thread_call: _ThreadCall) -> None:
    bind_loop(loop)
    _thread_call.set(thread_call)


def _report(
    loop: asyncio.AbstractEventLoop,
    resolve: Callable[[asyncio.Future[Any], Any], None],
    outcome: asyncio.Future[Any],
    value: Any,
) -> None:
    # From the worker thread.  A loop closed while the thread ran has nobody
    # left waiting for the outcome.
    try:
        loop.call_soon_threadsafe(resolve, outcome, value)
    except RuntimeError:
        if not loop.is_closed():
            raise


def _succeed(outcome: asyncio.Future[T], result: T) -> None:
    if not outcome.done():  # cancelled while the thread ran
        outcome.set_result(result)


def _fail(outcome: asyncio.Future[Any], exc: BaseException) -> None:
    if not outcome.done():
        outcome.set_exception(exc)


async def _finish_despite_cancellation(future: asyncio.Future[Any]) -> None:
    while not future.done():
        # A cancellation repeated while the thread runs changes nothing: the
        # caller is already unwinding and re-raises once the thread is done.
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            continue
        except BaseException:
            break
    if not future.cancelled():
        future.exception()  # retrieved, so asyncio does not log it as lost


def wait_from_worker(loop: asyncio.AbstractEventLoop, awaitable: Awaitable[T]) -> T:
    """Wait for ``awaitable`` on ``loop`` from a worker thread, blocking the thread.

    The awaitable is awaited in a bridged greenlet (so synchronous code it
    calls may wait too), in a Task with a copy of this thread's context.
    Meanwhile this thread executes any blocking work the awaitable sends to
    an executor.  If the request that started this thread is cancelled, the
    Task is cancelled and this raises :class:`asyncio.CancelledError` once the
    Task has finished unwinding.
    """
    worker = _WaitingWorker()
    thread_call = _thread_call.get(None)
    outcome: Future[T] = Future()
    context = contextvars.copy_context()
    context.run(_waiting_worker.set, worker)

    def start() -> None:
        # On the loop thread.
        task = loop.create_task(spawn_greenlet(await_in_greenlet, awaitable), context=context)
        task.add_done_callback(lambda _: _copy_outcome(task, outcome))
        task.add_done_callback(lambda _: worker.stop_waiting())
        if thread_call is not None:
            thread_call.track(task)

    loop.call_soon_threadsafe(start)
    while (work := worker.inbox.get()) is not None:
        submitted, work_context, call = work
        if submitted.set_running_or_notify_cancel():
            try:
                submitted.set_result(work_context.run(call))
            except BaseException as exc:
                submitted.set_exception(exc)
    if outcome.cancelled():
        raise asyncio.CancelledError()
    return outcome.result()


def _copy_outcome(task: asyncio.Task[T], outcome: Future[T]) -> None:
    if task.cancelled():
        outcome.cancel()
    elif (exc := task.exception()) is not None:
        outcome.set_exception(exc)
    else:
        outcome.set_result(task.result())


def _name(awaitable: object) -> str:
    return str(getattr(awaitable, "__qualname__", awaitable))


def wait_from_thread(awaitable: Awaitable[T], strict: bool) -> T | Awaitable[T]:
    """Wait for ``awaitable`` from code that runs outside any request greenlet.

    In a worker thread serving a request, the request's loop runs it while
    the thread blocks.  On the loop thread nothing can wait: ``strict``
    raises, otherwise the awaitable is returned for the caller to await.

    :raises ScopeError: where nothing can wait for it; the awaitable is closed first.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        # A thread with no loop of its own.  If it serves a request (it runs
        # with a copy of the request's context), the request's loop can run
        # the awaitable while this thread blocks; the loop is free to do so
        # because the request greenlet is itself waiting for this thread.
        loop = request_loop()
        if loop is not None and loop.is_running():
            return wait_from_worker(loop, awaitable)
        discard(awaitable)
        raise ScopeError(
            f"Cannot wait for {_name(awaitable)} from this thread: it has no event loop and "
            "serves no request. Call it from a request (a view, a hook, or a function run with "
            "use_executor), or start a loop for it: asyncio.run(spawn_greenlet(func, ...)). "
            f"{see('synchronize-errors')}"
        ) from None
    if not strict:
        return awaitable
    discard(awaitable)
    raise ScopeError(
        f"Cannot wait for {_name(awaitable)} here: the caller runs on the event loop "
        "but outside any request greenlet, so waiting would block the loop. Await it directly "
        "from a coroutine, run the calling code with `await spawn_greenlet(func, ...)`, or "
        "decorate with synchronize(strict=False) to get the coroutine back in this case. "
        f"{see('synchronize-errors')}"
    )
