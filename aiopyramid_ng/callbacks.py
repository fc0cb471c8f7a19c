"""Response and finished callbacks that may be coroutine functions.

::

    async def audit(request, response):
        await log.write(request.path, response.status)

    request.add_response_callback(audit)

    async def release(request):
        await pool.release(request.connection)

    request.add_finished_callback(release)

``config.include('aiopyramid_ng')`` replaces the request's
``add_response_callback`` and ``add_finished_callback`` (through
``config.add_request_method``) with versions that accept coroutine
functions; Pyramid runs the callbacks at their usual points and in their
usual order, and each awaitable is waited for before the next callback runs.
Plain callbacks are stored unchanged.

Pyramid binds every ``add_request_method`` callable to each new request and
stores the bound method in the request's ``__dict__``: a reference cycle that
only the cyclic garbage collector can free.  Under load those cycles made the
collector run about five times as often as it does without them, so the two
methods here are bound through a weak reference to the request instead.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any

from pyramid.config import Configurator
from pyramid.interfaces import IRequest

from .coroutines import is_coroutine_callable, resolve
from .exceptions import see

__all__ = ["add_finished_callback", "add_response_callback", "includeme"]

_FIX = "Callbacks run inside requests; add them from request code only."


def _awaiting(callback: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(callback)
    def awaiting_callback(*args: Any) -> Any:
        return resolve(callback(*args), callback, _FIX)

    return awaiting_callback


def add_response_callback(request: IRequest, callback: Callable[[IRequest, Any], Any]) -> None:
    """Pyramid's ``request.add_response_callback``, also for ``async def`` callbacks."""
    if is_coroutine_callable(callback):
        callback = _awaiting(callback)
    type(request).add_response_callback(request, callback)


def add_finished_callback(request: IRequest, callback: Callable[[IRequest], Any]) -> None:
    """Pyramid's ``request.add_finished_callback``, also for ``async def`` callbacks."""
    if is_coroutine_callable(callback):
        callback = _awaiting(callback)
    type(request).add_finished_callback(request, callback)


class _WeaklyBound:
    """``function`` called with a request it holds only weakly."""

    __slots__ = ("_function", "_request")

    def __init__(self, function: Callable[..., None], request: IRequest):
        self._function = function
        self._request = weakref.ref(request)

    def __call__(self, callback: Callable[..., Any]) -> None:
        request = self._request()
        if request is None:
            raise ReferenceError(
                f"{self._function.__name__}() was kept past the end of its request; "
                f"call request.{self._function.__name__}() on the request that is running, "
                f"not on one kept from an earlier request. {see('events-callbacks')}"
            )
        self._function(request, callback)


class _WeakRequestMethod:
    """What Pyramid binds per request: a ``_WeaklyBound`` instead of a bound method."""

    def __init__(self, function: Callable[..., None]):
        self.function = function
        functools.update_wrapper(self, function)

    def __get__(self, request: IRequest, cls: type | None = None) -> _WeaklyBound:
        return _WeaklyBound(self.function, request)

    def __call__(self, request: IRequest, callback: Callable[..., Any]) -> None:
        self.function(request, callback)


def includeme(config: Configurator) -> None:
    """Give requests the callback methods above."""
    for method in (add_response_callback, add_finished_callback):
        config.add_request_method(_WeakRequestMethod(method), method.__name__)
