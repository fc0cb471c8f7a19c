"""Application startup and shutdown: the ASGI lifespan protocol, or lazily.

Servers with lifespan support (uvicorn, hypercorn) drive :meth:`Lifecycle.serve`.
A server without it (daphne) never does, so the first HTTP request calls
:meth:`Lifecycle.ensure_started` and startup happens then, exactly once.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

from pyramid.registry import Registry
from pyramid.threadlocal import manager

from ..background import ApplicationTasks
from ..bridge import spawn_greenlet
from ..events import ApplicationShutdown, ApplicationStartup
from ..interfaces import IAppExecutor
from ..settings import GC_FREEZE
from ..types import Receive, Send

__all__ = ["Lifecycle"]

logger = logging.getLogger(__name__)


def _notify(registry: Registry, event: object) -> None:
    # Subscribers expect get_current_registry() to be their application's,
    # as during a request.  The push lands in the Task's context only.
    manager.push({"registry": registry, "request": None})
    try:
        registry.notify(event)
    finally:
        manager.pop()


def _freeze_survivors() -> None:
    """Keep what startup left alive out of every later collection.

    Modules, the configuration, the registry and its views are tracked
    objects that every full collection would traverse again while requests
    churn out garbage of their own.  ``gc.freeze()`` moves them to the
    permanent generation; the collection before it keeps startup's own
    garbage from being frozen with them.  Process-wide, hence opt-in.
    """
    gc.collect()
    gc.freeze()
    logger.info("Froze %d objects alive after startup (gc.freeze())", gc.get_freeze_count())


class Lifecycle:
    """Starts and stops one ASGI application.

    :param app: the ASGI application, passed to the events.
    :param registry: its Pyramid registry; without one there is nothing to
        notify and startup/shutdown only change state.
    """

    def __init__(self, app: Any, registry: Registry | None):
        self.app = app
        self.registry = registry
        self.started = False
        #: The background tasks of the requests it served.
        self.background = ApplicationTasks()
        # Created unlocked and bound to a loop only if ever contended, so one
        # application object may serve on successive loops (tests do).
        self._lock = asyncio.Lock()

    async def ensure_started(self) -> None:
        """Notify :class:`~aiopyramid_ng.events.ApplicationStartup` unless done already.

        Concurrent callers wait for one startup; if it fails, the exception
        propagates to every waiter and the next call tries again.
        """
        if self.started:
            return
        async with self._lock:
            if self.started:
                return
            if self.registry is not None:
                # In a request greenlet: subscribers may use synchronize(),
                # and the event loop keeps running while they wait.
                await spawn_greenlet(
                    _notify, self.registry, ApplicationStartup(self.app, self.registry)
                )
                if GC_FREEZE.read(self.registry.settings):
                    _freeze_survivors()
            self.started = True

    async def shutdown(self) -> None:
        """Wait for background tasks, notify ``ApplicationShutdown``, then stop the pool.

        Background tasks come first, as they may use what the event's
        subscribers close, and plain ones need the pool.  Does nothing if the
        application was never started.
        """
        async with self._lock:
            if not self.started:
                return
            self.started = False
            await self.background.shutdown(self.registry)
            if self.registry is None:
                return
            try:
                await spawn_greenlet(
                    _notify, self.registry, ApplicationShutdown(self.app, self.registry)
                )
            finally:
                holder = self.registry.queryUtility(IAppExecutor)
                if holder is not None:
                    # Joining the pool's threads blocks: do it off the loop.
                    await asyncio.to_thread(holder.shutdown)

    async def serve(self, receive: Receive, send: Send) -> None:
        """Speak the ASGI lifespan protocol until the server asks for shutdown."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.ensure_started()
                except Exception as exc:
                    logger.exception("Application startup failed")
                    await send({"type": "lifespan.startup.failed", "message": _failure(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                except Exception as exc:
                    logger.exception("Application shutdown failed")
                    await send({"type": "lifespan.shutdown.failed", "message": _failure(exc)})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                return
            else:
                raise RuntimeError(f"Unexpected ASGI lifespan message {message['type']!r}.")


def _failure(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"
