"""Session factories that do I/O: an ``async def`` factory.

Pyramid computes ``request.session`` synchronously, by calling the
registered session factory the first time the property is read.  A factory
that loads the session from a store (Redis, a database) with an async client
can be a coroutine function: :func:`async_session_factory` wraps it into the
synchronous factory Pyramid expects, which waits for it with
:func:`aiopyramid_ng.helpers.await_` (only the request waits, in the request
greenlet; a worker thread serving the request blocks while the request's loop
runs it).  ``config.set_session_factory`` given a coroutine function wraps it
the same way.

Persist the session from an async response callback
(``request.add_response_callback``), which aiopyramid_ng awaits.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from pyramid.config import Configurator
from pyramid.interfaces import IRequest, ISessionFactory

from .helpers import await_
from .orders import ORDERS

__all__ = ["async_session_factory", "includeme"]

AsyncSessionFactory = Callable[[IRequest], Awaitable[Any]]


def async_session_factory(factory: AsyncSessionFactory) -> Callable[[IRequest], Any]:
    """Return a session factory that waits for ``factory(request)``, a coroutine."""

    @functools.wraps(factory)
    def session_factory(request: IRequest) -> Any:
        return await_(factory(request))

    return session_factory


def includeme(config: Configurator) -> None:
    """Wrap a coroutine function registered with ``config.set_session_factory``."""
    registry = config.registry

    def wrap_session_factory() -> None:
        factory = registry.queryUtility(ISessionFactory)
        if inspect.iscoroutinefunction(factory):
            registry.registerUtility(async_session_factory(factory), ISessionFactory)

    config.action(None, wrap_session_factory, order=ORDERS["wrap_session_factory"])
