"""Work after the response: ``request.add_background_task(func, *args, **kwargs)``.

::

    async def notify(user_id):
        await mailer.send_welcome(user_id)

    def signup(request):
        user = create_user(request)
        request.add_background_task(notify, user.id)
        return HTTPFound(location=request.route_url("home"))

A task runs once the client has the whole response: under ASGI after the
final ``http.response.body`` message was sent, in WSGI mode when the server
closes the response (``app_iter.close()``).  The tasks of one request run
one after the other, in the order they were added; a coroutine function is
awaited on the event loop, a plain function runs in the application's
thread pool.  Each runs with a copy of the context variables taken when it
was added, with its request current (``get_current_request()``).

A task runs only if its request succeeded: the response was not rendered by
an exception view (``request.exception`` is None, as pyramid_tm decides
whether to commit) and, when pyramid_tm manages the request, the transaction
current when the task was added committed.  ``background_always=True`` runs
it whenever the application's response was sent completely.  A client that
disconnects before the end of the response gets no tasks run.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pyramid.config import Configurator
from pyramid.interfaces import IRequest
from pyramid.registry import Registry
from pyramid.threadlocal import manager

from .bridge import await_in_greenlet, spawn_greenlet
from .coroutines import describe, is_coroutine_callable
from .exceptions import ScopeError, see
from .executor import executor_of
from .requestmethods import WeakRequestMethod
from .settings import BACKGROUND_SHUTDOWN_TIMEOUT
from .threads import run_in_thread
from .types import Environ, StartResponse

__all__ = ["ApplicationTasks", "add_background_task", "includeme", "wsgi_response"]

logger = logging.getLogger(__name__)

#: The environ key by which a server that runs background tasks marks the
#: requests it serves (its value says how: ``ApplicationTasks`` under ASGI,
#: ``_WSGI`` in WSGI mode, ``_CLOSED`` once it is too late to add one).
SERVED = "aiopyramid_ng.background.served"
#: The environ key holding a request's :class:`RequestTasks`, from its first task on.
_TASKS = "aiopyramid_ng.background.tasks"
_WSGI = "wsgi"
_CLOSED = "closed"


class _Outcome:
    """Whether one transaction committed, told by its after-commit hook."""

    __slots__ = ("committed",)

    def __init__(self) -> None:
        self.committed = False

    def __call__(self, status: bool) -> None:
        self.committed = status


@dataclass(slots=True)
class _Task:
    func: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    context: contextvars.Context
    #: The transaction the task waits on; None when it runs whatever happens to one.
    outcome: _Outcome | None
    always: bool

    @property
    def name(self) -> str:
        return describe(self.func)


class RequestTasks:
    """The background tasks of one request, in the order they were added."""

    def __init__(self, request: IRequest):
        self.request = request
        self.registry: Registry = request.registry
        # Kept as strings: the log lines must not depend on the request's state.
        self.method: str = request.method
        self.path: str = request.path
        self.tasks: list[_Task] = []
        #: Tasks chosen to run and not finished yet (the first one may be running).
        self.remaining: deque[_Task] = deque()
        self._transaction: object = None
        self._outcome: _Outcome | None = None

    def add(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], always: bool
    ) -> None:
        outcome = None if always else self._transaction_outcome()
        context = contextvars.copy_context()
        # The request is made current in the task's own context: get_current_request()
        # then works in the task even when it was added while no request was current
        # (from a streamed body, whose iteration Pyramid runs after popping it).
        context.run(manager.push, {"request": self.request, "registry": self.registry})
        self.tasks.append(_Task(func, args, kwargs, context, outcome, always))

    def _transaction_outcome(self) -> _Outcome | None:
        """The outcome of the transaction pyramid_tm manages for this request, if any."""
        environ = self.request.environ
        tm = environ.get("tm.manager")
        if tm is None or not environ.get("tm.active"):
            return None
        from transaction.interfaces import NoTransaction  # only reached with pyramid_tm

        try:
            current = tm.get()
        except NoTransaction:
            return None  # an explicit manager between transactions: none to wait for
        if current is not self._transaction:
            # One hook per transaction: every task added while it is current waits on it.
            self._transaction, self._outcome = current, _Outcome()
            current.addAfterCommitHook(self._outcome)
        return self._outcome

    def runnable(self) -> list[_Task]:
        """The tasks to run now that the response was sent completely."""
        failed = getattr(self.request, "exception", None) is not None
        return [
            task
            for task in self.tasks
            if task.always or (not failed and (task.outcome is None or task.outcome.committed))
        ]

    async def run(self, tasks: Iterable[_Task]) -> None:
        """Run ``tasks`` one after the other, logging each failure."""
        self.remaining.extend(tasks)
        loop = asyncio.get_running_loop()
        while self.remaining:
            task = self.remaining[0]
            try:
                # A Task per background task, so each runs in its own context.
                await loop.create_task(self._call(task), context=task.context)
            except Exception:
                logger.exception(
                    "Background task %s of %s %r failed", task.name, self.method, self.path
                )
            self.remaining.popleft()

    async def _call(self, task: _Task) -> None:
        if is_coroutine_callable(task.func):
            # In a request greenlet, as a coroutine view is: synchronous code the
            # coroutine calls may wait with await_() too.
            await spawn_greenlet(await_in_greenlet, task.func(*task.args, **task.kwargs))
        else:
            # The application's pool, with a copy of this (the task's) context.
            await run_in_thread(executor_of(self.registry), task.func, *task.args, **task.kwargs)

    def log_unfinished(self, timeout: float, when: str) -> None:
        for task in self.remaining:
            logger.warning(
                "Background task %s of %s %r did not finish within %s s %s: cancelled",
                task.name,
                self.method,
                self.path,
                timeout,
                when,
            )


async def _wait_then_cancel(
    running: dict[asyncio.Task[None], RequestTasks], timeout: float, when: str
) -> None:
    """Wait up to ``timeout`` s for ``running`` (which may grow meanwhile), then cancel the rest."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (pending := [runner for runner in running if not runner.done()]) and (
        left := deadline - loop.time()
    ) > 0:
        await asyncio.wait(pending, timeout=left)
    late = {runner: tasks for runner, tasks in running.items() if not runner.done()}
    for runner, tasks in late.items():
        tasks.log_unfinished(timeout, when)
        runner.cancel()
    if late:
        # A plain function already running in a thread cannot be interrupted:
        # its task ends when the function returns; this wait is bounded too,
        # so nothing here blocks forever.
        _, stuck = await asyncio.wait(list(late), timeout=timeout)
        for runner in stuck:
            logger.error(
                "Background tasks of %s %r are still running in a thread after their "
                "cancellation; left to finish there",
                late[runner].method,
                late[runner].path,
            )


class ApplicationTasks:
    """The background tasks of one application under ASGI.

    Each request's tasks run in a Task of their own, started when its
    response was sent; :meth:`shutdown` (the lifespan shutdown) waits for them.
    """

    def __init__(self) -> None:
        self.running: dict[asyncio.Task[None], RequestTasks] = {}

    def start(self, environ: Environ) -> None:
        """Start the tasks the request of ``environ`` added; its response was sent completely."""
        environ[SERVED] = _CLOSED
        # Popped: the environ no longer refers to the tasks, which refer to the request.
        tasks: RequestTasks | None = environ.pop(_TASKS, None)
        if tasks is None:
            return
        runnable = tasks.runnable()
        if not runnable:
            return
        # An empty context: the runner itself needs none, each task has its own.
        runner = asyncio.get_running_loop().create_task(
            tasks.run(runnable), context=contextvars.Context()
        )
        self.running[runner] = tasks
        runner.add_done_callback(self.running.pop)

    async def join(self) -> None:
        """Wait until no background task runs (tests)."""
        while self.running:
            await asyncio.wait(list(self.running))

    async def shutdown(self, registry: Registry | None) -> None:
        """Wait for the running tasks up to the setting's timeout, then cancel and log the rest."""
        timeout = BACKGROUND_SHUTDOWN_TIMEOUT.read(registry.settings if registry else None)
        await _wait_then_cancel(self.running, timeout, "of the shutdown")


class _Closing:
    """WSGI mode: the response body; its ``close()`` runs the request's background tasks."""

    def __init__(self, app_iter: Iterable[bytes], tasks: RequestTasks):
        self._app_iter = app_iter
        self._tasks = tasks
        self._sent = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self._app_iter
        # The server took the last chunk: a server that stops iterating early
        # (its client left) closes a response whose tasks must not run.
        self._sent = True

    def close(self) -> None:
        close = getattr(self._app_iter, "close", None)
        try:
            if close is not None:
                close()
        finally:
            if self._sent:
                self._run()

    def _run(self) -> None:
        # Late imports: execution imports this module (for wsgi_response).
        from .execution import thread_loop

        tasks = self._tasks
        runnable = tasks.runnable()
        if not runnable:
            return
        timeout = BACKGROUND_SHUTDOWN_TIMEOUT.read(tasks.registry.settings)

        async def run() -> None:
            runner = asyncio.get_running_loop().create_task(tasks.run(runnable))
            await _wait_then_cancel({runner: tasks}, timeout, "of the response's close()")

        # The WSGI server's thread waits here, as it did for the request: a
        # WSGI server gives no later point to run on, and its thread's
        # persistent loop runs only while the thread waits for it.
        thread_loop().run_until_complete(run())


class _ClosingResponse:
    """What the Router calls to produce the WSGI response: ``response`` with :class:`_Closing`.

    Otherwise it is the response: what a layer around the execution policy
    reads or sets on it (``status_code``, ``headers``; the tracing layer of
    :mod:`aiopyramid_ng.otel.wsgi`) is the response's.
    """

    _OWN = frozenset(("_response", "_tasks"))

    def __init__(
        self, response: Callable[[Environ, StartResponse], Iterable[bytes]], tasks: RequestTasks
    ):
        object.__setattr__(self, "_response", response)
        object.__setattr__(self, "_tasks", tasks)

    def __call__(self, environ: Environ, start_response: StartResponse) -> _Closing:
        return _Closing(self._response(environ, start_response), self._tasks)

    def __getattr__(self, name: str) -> Any:
        # Only for what the wrapper itself lacks.
        try:
            response = self.__dict__["_response"]
        except KeyError:
            raise AttributeError(name) from None
        return getattr(response, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self._response, name, value)


def wsgi_response(environ: Environ, respond: Callable[[], Any]) -> Any:
    """WSGI mode: ``respond()``, with the request's background tasks run at ``close()``."""
    environ[SERVED] = _WSGI
    response = respond()
    environ[SERVED] = _CLOSED
    tasks: RequestTasks | None = environ.pop(_TASKS, None)
    if tasks is None:
        # Unwrapped: a server's own optimisations (a file wrapper's sendfile) still apply.
        return response
    return _ClosingResponse(response, tasks)


def add_background_task(
    request: IRequest,
    func: Callable[..., Any],
    /,
    *args: Any,
    background_always: bool = False,
    **kwargs: Any,
) -> None:
    """Run ``func(*args, **kwargs)`` once the response has been sent completely.

    :param func: a coroutine function (awaited on the event loop) or a plain
        function (run in the application's thread pool).
    :param background_always: run it even if the request failed (an
        exception view rendered its response) or its pyramid_tm transaction
        did not commit.
    :raises TypeError: for a ``func`` that is not callable.
    :raises ~aiopyramid_ng.exceptions.ScopeError: for a request that no
        server of aiopyramid_ng serves, or whose response is already complete.
    """
    if not callable(func):
        raise TypeError(
            f"request.add_background_task() takes a function to call later, not {func!r}: "
            "pass the function and its arguments, as in add_background_task(send_mail, "
            f"address), not the result of calling it. {see('background-tasks')}"
        )
    environ = request.environ
    served = environ.get(SERVED)
    if served is None or served == _CLOSED:
        why = (
            "its response is already complete"
            if served == _CLOSED
            else "no aiopyramid_ng server serves it (a request made by Request.blank(), "
            "pyramid.scripting.prepare() or a test's DummyRequest, or a WebSocket connection)"
        )
        raise ScopeError(
            f"request.add_background_task({describe(func)}) cannot run after this request: "
            f"{why}. Add tasks while an HTTP request served by aiopyramid_ng (under ASGI, "
            "or in WSGI mode) runs, or call the function directly here. "
            f"{see('background-tasks')}"
        )
    tasks: RequestTasks | None = environ.get(_TASKS)
    if tasks is None:
        tasks = environ[_TASKS] = RequestTasks(request)
    tasks.add(func, args, kwargs, background_always)


def includeme(config: Configurator) -> None:
    """Give requests ``add_background_task``."""
    config.add_request_method(
        WeakRequestMethod(add_background_task, see("background-tasks")), "add_background_task"
    )
