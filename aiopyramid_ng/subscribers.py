"""Event subscribers that may be coroutine functions.

``config.include('aiopyramid_ng')`` gives the application's registry a
``notify`` that calls the subscribers of an event one after the other and
waits for each awaitable one returns before calling the next, so::

    async def log_request(event: NewRequest) -> None:
        await audit.write(event.request.path)

    config.add_subscriber(log_request, NewRequest)

works for every event (``NewRequest``, ``BeforeTraversal``,
``ContextFound``, ``NewResponse``, ``BeforeRender``, ``ApplicationCreated``
and the lifespan events of :mod:`aiopyramid_ng.events`), with predicates and
with event-only or ``(event, *objects)`` signatures.  ``notify`` returns
once every subscriber is done.  Where nothing can wait (the event is
notified on the event loop outside any request greenlet) an async
subscriber raises :class:`~aiopyramid_ng.exceptions.ScopeError` naming it;
notify such events with ``await spawn_greenlet(registry.notify, event)``.
"""

from __future__ import annotations

from typing import Any

from pyramid.config import Configurator
from pyramid.registry import Registry
from zope.interface import providedBy

from .coroutines import resolve

__all__ = ["AwaitingNotify", "includeme"]

_FIX = (
    "Notify the event from request code, or from a coroutine with "
    "`await aiopyramid_ng.helpers.spawn_greenlet(registry.notify, event)`."
)


class AwaitingNotify:
    """``registry.notify`` that waits for the awaitables its subscribers return.

    Subscribers run in registration order; each one's awaitable is waited for
    before the next subscriber is called, so a later subscriber sees the work
    of an earlier one, as with plain subscribers.
    """

    def __init__(self, registry: Registry):
        self.registry = registry

    def __call__(self, *events: Any) -> None:
        registry = self.registry
        if not registry.has_listeners:
            return
        # subscriptions() rather than subscribers(): the latter calls every
        # subscriber before returning and drops their results.
        subscriptions = registry.adapters.subscriptions(list(map(providedBy, events)), None)
        for subscriber in subscriptions:
            resolve(subscriber(*events), subscriber, _FIX)

    def __repr__(self) -> str:
        return f"<AwaitingNotify of {self.registry!r}>"


def includeme(config: Configurator) -> None:
    """Make the registry's ``notify`` wait for async subscribers.

    Done at include time, before any Router exists, because the Router looks
    ``notify`` up on the registry once per request.
    """
    registry = config.registry
    if not isinstance(registry.__dict__.get("notify"), AwaitingNotify):
        registry.notify = AwaitingNotify(registry)
