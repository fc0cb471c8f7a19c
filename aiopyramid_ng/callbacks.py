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
Plain callbacks are stored unchanged.  Both methods are bound through a
weak reference to the request (:mod:`aiopyramid_ng.requestmethods`), so
that requests do not become reference cycles.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from pyramid.config import Configurator
from pyramid.interfaces import IRequest

from .coroutines import is_coroutine_callable, resolve
from .exceptions import see
from .requestmethods import WeakRequestMethod

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


def includeme(config: Configurator) -> None:
    """Give requests the callback methods above."""
    for method in (add_response_callback, add_finished_callback):
        config.add_request_method(
            WeakRequestMethod(method, see("events-callbacks")), method.__name__
        )
