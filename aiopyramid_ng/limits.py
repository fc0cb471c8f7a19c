"""Where the request limits apply: the application's, when a request starts; a view's, once found.

====================================  ========================================================
``aiopyramid_ng.max_concurrency``     requests in flight for the application; beyond it, 503
                                      before the router, tweens and traversal run
``aiopyramid_ng.timeout``             the deadline of every request, from its start
view option ``max_concurrency=``      requests in flight for the view; beyond it, 503 before
                                      the view's permission check and other derivers
view option ``timeout=``              the view's deadline, which *replaces* the application's
                                      from the moment the view is found
``aiopyramid_ng.executor.max_queue``  work waiting for a pool thread (see :mod:`.shedding`)
====================================  ========================================================

A view's ``timeout=`` replaces the setting rather than taking the smaller of
the two, so a slow report can be given more time than the rest of the
application as well as less; the time spent before its view was found
(tweens, traversal) is then not counted against it.  The view of a
subrequest is the exception: its ``timeout=`` bounds the subrequest within
its request's deadline, which it never replaces.

:class:`RequestLimits` applies the application's limits inside the
execution policy (see :class:`~aiopyramid_ng.execution.GreenletExecutionPolicy`),
in the request greenlet, and turns an expired deadline into the 504 answer
*outside* the tween chain: the cancellation has unwound every tween first,
so pyramid_tm aborts and the finished callbacks run.  Each answer it or a
view gate gives is marked in the environ under :data:`LIMIT_KEY`
(``"deadline"`` for a 504, ``"shed"`` for a 503) for observers such as
tracing.  A WebSocket view stops being subject to the application's
limits once it accepts its connection (:func:`release`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any

from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError
from pyramid.interfaces import IRequest
from pyramid.registry import Registry
from pyramid.response import Response
from pyramid.util import object_description
from pyramid.viewderivers import INGRESS

from . import deadlines
from .deadlines import Deadline
from .exceptions import ExecutorQueueFull, see
from .settings import MAX_CONCURRENCY, MAX_QUEUE, RETRY_AFTER, TIMEOUT
from .shedding import Gate, shed_response
from .threadlocal import outermost_request
from .threads import thread_waits
from .types import Environ

__all__ = [
    "DEADLINE",
    "LIMIT_KEY",
    "SHED",
    "RequestLimits",
    "includeme",
    "limited_view",
    "limits_of",
    "release",
    "timed_view",
]

log = logging.getLogger(__name__)

#: The environ key marking a response the limits gave: :data:`DEADLINE` or :data:`SHED`.
LIMIT_KEY = "aiopyramid_ng.limit"
#: A 504: the request was over its deadline.
DEADLINE = "deadline"
#: A 503: the request was refused for load (a gate, or the executor's queue).
SHED = "shed"

# The request's admission by the application's limits, for release().
_ADMISSION_KEY = "aiopyramid_ng.limits.admission"

Call = Callable[[Environ, Any], Any]


class _Admission:
    """One request admitted by the application's limits; released once."""

    __slots__ = ("deadline", "gate")

    def __init__(self, deadline: Deadline, gate: Gate | None):
        self.deadline = deadline
        self.gate = gate

    def release(self) -> None:
        self.deadline.close()
        gate, self.gate = self.gate, None
        if gate is not None:
            gate.exit()


class RequestLimits:
    """The application's limits, read from its settings."""

    def __init__(self, settings: Any):
        self.timeout = TIMEOUT.read(settings)
        self.retry_after = RETRY_AFTER.read(settings)
        limit = MAX_CONCURRENCY.read(settings)
        self.gate = Gate(limit) if limit is not None else None
        self._queue_bounded = MAX_QUEUE.read(settings) is not None
        #: Whether a request needs :meth:`serve` at all: the check is made
        #: per request, and most applications set no limit.
        self.active = False
        self._update(view_timeouts=False)

    def _update(self, view_timeouts: bool) -> None:
        self.active = (
            view_timeouts
            or self.timeout is not None
            or self.gate is not None
            or self._queue_bounded
        )

    def allow_view_timeouts(self) -> None:
        """A view has ``timeout=``: every request gets a deadline to arm."""
        self._update(view_timeouts=True)

    def serve(self, environ: Environ, router: Any, call: Call) -> Any:
        """Run ``call(environ, router)`` (the rest of the pipeline) within the limits."""
        gate = self.gate
        if gate is not None and not gate.enter():
            return self.shed(environ, f"{MAX_CONCURRENCY.name} = {gate.limit} requests in flight")
        task = asyncio.current_task()
        assert task is not None  # the policy runs in a request greenlet, inside a Task
        deadline = Deadline(task)
        admission = environ[_ADMISSION_KEY] = _Admission(deadline, gate)
        token = deadlines.enter(deadline)
        if self.timeout is not None:
            deadline.arm(self.timeout, f"setting {TIMEOUT.name}")
        try:
            response = call(environ, router)
        except (Exception, asyncio.CancelledError) as exc:
            if deadline.expired:
                if not deadline.absorb():
                    raise  # the server's cancellation (or a disconnect's) as well
                environ[LIMIT_KEY] = DEADLINE
                return deadline.answer(environ, exc)
            if isinstance(exc, ExecutorQueueFull):
                return self.shed(environ, f"{MAX_QUEUE.name} reached")
            raise
        finally:
            admission.release()
            deadlines.leave(token)
        if deadline.expired:
            # Code of the pipeline caught the CancelledError and answered
            # anyway: the request is still over its deadline.
            if not deadline.absorb():
                raise asyncio.CancelledError()
            environ[LIMIT_KEY] = DEADLINE
            return deadline.answer(environ, None)
        return response

    def shed(self, environ: Environ, why: str) -> Response:
        """Answer 503 for load, marked in the environ; logged at DEBUG (there may be many)."""
        environ[LIMIT_KEY] = SHED
        log.debug(
            "%s %s answered 503: %s",
            environ.get("REQUEST_METHOD", ""),
            environ.get("PATH_INFO", ""),
            why,
        )
        return shed_response(self.retry_after)


def limits_of(registry: Registry) -> RequestLimits:
    """The limits of the application of ``registry``, read from its settings on first use."""
    limits: RequestLimits | None = registry.__dict__.get("aiopyramid_ng_limits")
    if limits is None:
        limits = registry.__dict__["aiopyramid_ng_limits"] = RequestLimits(registry.settings)
    return limits


def release(environ: Environ) -> None:
    """Free the request of ``environ`` from the application's limits (deadline, concurrency).

    Called once a WebSocket view has accepted its connection, which then
    lasts as long as the view runs: it is no request in flight any more.
    """
    admission: _Admission | None = environ.get(_ADMISSION_KEY)
    if admission is not None:
        admission.release()


def _option_error(name: str, value: object, view: str, what: str, docs: str) -> Exception:
    error: Exception = ConfigurationError(
        f"The view option {name}={value!r} of {view} is not {what}; write for example "
        f"{name}=10, or leave it out. {docs}"
    )
    return error


def timed_view(view: Any, info: Any) -> Any:
    """View deriver: the view option ``timeout=`` (seconds) re-arms the request's deadline.

    With the setting ``aiopyramid_ng.timeout``, every view is also named to
    the deadline, so its 504 says which view was running.  The view of a
    subrequest (``request.invoke_subrequest``) never moves its request's
    deadline: its ``timeout=`` applies to the subrequest alone, within the
    request's deadline (see :meth:`~aiopyramid_ng.deadlines.Deadline.narrow`),
    and past it raises :class:`~aiopyramid_ng.exceptions.SubrequestTimeout`.
    """
    timeout = info.options.get("timeout")
    name = object_description(info.original_view)
    if timeout is not None:
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not (timeout > 0 and math.isfinite(timeout))
        ):
            raise _option_error(
                "timeout", timeout, name, "a positive number of seconds", see("load-deadlines")
            )
        limits_of(info.registry).allow_view_timeouts()
    elif TIMEOUT.read(info.settings) is None:
        return view
    source = "view option timeout="

    def timed(context: Any, request: IRequest) -> Any:
        deadline = deadlines.current_deadline()
        if deadline is None:  # called outside the application's pipeline
            return view(context, request)
        outermost = outermost_request()
        if outermost is not None and outermost is not request:
            if timeout is None:
                return _lapse_check(deadline, view(context, request))
            return _subrequest(deadline, view, context, request, timeout, source, name)
        deadline.view = name
        if timeout is not None:
            deadline.arm(timeout, source)
        return _lapse_check(deadline, view(context, request))

    return timed


def _lapse_check(deadline: Deadline, response: Any) -> Any:
    if deadline.lapsed():
        # The view caught the cancellation, or ran past the deadline in
        # a pool thread (pipeline = executor): its result must not count.
        raise asyncio.CancelledError()
    return response


def _subrequest(
    deadline: Deadline,
    view: Any,
    context: Any,
    request: IRequest,
    timeout: float,
    source: str,
    name: str,
) -> Any:
    """Call the view of a subrequest within its own deadline, ``timeout`` seconds."""
    scope = deadline.narrow(timeout, source, name, thread_waits())
    try:
        response = view(context, request)
    except (Exception, asyncio.CancelledError) as exc:
        deadline.widen(scope)
        if not scope.expired or not scope.absorb() or deadline.lapsed():
            raise  # not its deadline, or another cancellation (an outer deadline's) as well
        request.environ[LIMIT_KEY] = DEADLINE
        raise deadline.answer_subrequest(request.environ, scope, exc) from None
    finally:
        deadline.widen(scope)
    if scope.expired:
        # The view caught the cancellation, or ran past its deadline in a thread.
        if not scope.absorb() or deadline.lapsed():
            raise asyncio.CancelledError()
        request.environ[LIMIT_KEY] = DEADLINE
        raise deadline.answer_subrequest(request.environ, scope, None)
    return _lapse_check(deadline, response)


timed_view.options = ("timeout",)  # type: ignore[attr-defined]


def limited_view(view: Any, info: Any) -> Any:
    """View deriver: the view option ``max_concurrency=`` sheds requests beyond it with 503."""
    limit = info.options.get("max_concurrency")
    if limit is None:
        return view
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        name = object_description(info.original_view)
        raise _option_error(
            "max_concurrency", limit, name, "a positive whole number", see("load-shedding")
        )
    gate = Gate(limit)
    limits = limits_of(info.registry)

    def limited(context: Any, request: IRequest) -> Any:
        if not gate.enter():
            return limits.shed(request.environ, f"view option max_concurrency={limit}")
        try:
            return view(context, request)
        finally:
            gate.exit()

    return limited


limited_view.options = ("max_concurrency",)  # type: ignore[attr-defined]


def includeme(config: Configurator) -> None:
    """Add the view options ``max_concurrency`` and ``timeout``.

    Both derivers come first after the view's predicates, before its
    permission check (Pyramid's ``secured_view``): a shed request costs no
    security policy call, and a view's deadline covers its permission check.
    """
    config.add_view_deriver(limited_view, under=INGRESS, over="secured_view")
    config.add_view_deriver(timed_view, under="limited_view", over="secured_view")
