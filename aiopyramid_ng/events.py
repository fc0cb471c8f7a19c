"""Events aiopyramid_ng notifies through the application's registry.

Subscribe with ``config.add_subscriber(handler, ApplicationStartup)``.
Subscribers run in a request greenlet on the server's event loop, so they
may use :func:`~aiopyramid_ng.helpers.synchronize`\\ d coroutines or be
``async def`` themselves.  Their interfaces live in :mod:`aiopyramid_ng.interfaces`.
"""

from __future__ import annotations

from typing import Any

from pyramid.registry import Registry
from zope.interface import implementer

from .interfaces import IApplicationShutdown, IApplicationStartup

__all__ = ["ApplicationShutdown", "ApplicationStartup"]


@implementer(IApplicationStartup)
class ApplicationStartup:
    """Notified once per server process before the first request is served.

    Under a server with ASGI lifespan support it is notified at
    ``lifespan.startup``; an exception raised by a subscriber fails the
    server's startup.  Under a server without it (daphne) it is notified when
    the first request arrives, before that request runs.
    """

    def __init__(self, app: Any, registry: Registry):
        self.app = app
        self.registry = registry


@implementer(IApplicationShutdown)
class ApplicationShutdown:
    """Notified at ``lifespan.shutdown``, after the last request, if startup succeeded.

    After the subscribers ran, the application's thread pool is shut down.
    Servers without lifespan support never notify it.
    """

    def __init__(self, app: Any, registry: Registry):
        self.app = app
        self.registry = registry
