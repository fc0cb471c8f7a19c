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
from pyramid.events import (
    ApplicationCreated,
    BeforeRender,
    BeforeTraversal,
    ContextFound,
    NewRequest,
    NewResponse,
)
from pyramid.registry import Registry
from zope.interface import implementedBy, providedBy

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
        # Not gated by ``registry.has_listeners``, which the add-on keeps for
        # the request events (see _notify_request_events_only_if_heard):
        # an application event with subscribers is always delivered.
        # subscriptions() rather than subscribers(): the latter calls every
        # subscriber before returning and drops their results.
        subscriptions = self.registry.adapters.subscriptions(list(map(providedBy, events)), None)
        for subscriber in subscriptions:
            resolve(subscriber(*events), subscriber, _FIX)

    def __repr__(self) -> str:
        return f"<AwaitingNotify of {self.registry!r}>"


#: The events Pyramid's Router notifies only while ``registry.has_listeners``
#: is true, and ``BeforeRender``, which keeps it true when subscribed.
REQUEST_EVENTS = (NewRequest, BeforeTraversal, ContextFound, NewResponse, BeforeRender)


def _heard(registry: Registry, event_class: type) -> bool:
    return bool(registry.adapters.subscriptions([implementedBy(event_class)], None))


def _notify_request_events_only_if_heard(registry: Registry) -> None:
    """Let the Router skip the request events when nothing subscribes to them.

    Pyramid sets ``registry.has_listeners`` on the first subscriber of any
    event, and from then on the Router builds and notifies four events per
    request.  The add-on's own subscribers are all for start-up and shutdown
    events, so it would otherwise make every application pay for request
    events nobody hears.  Once the application is created the flag is
    recomputed for the request events alone; a subscriber registered later
    sets it again (``Registry.registerHandler`` does), so nothing is missed.
    """
    registry.has_listeners = any(_heard(registry, kind) for kind in REQUEST_EVENTS)


def includeme(config: Configurator) -> None:
    """Make the registry's ``notify`` wait for async subscribers.

    Done at include time, before any Router exists, because the Router looks
    ``notify`` up on the registry once per request.
    """
    registry = config.registry
    if not isinstance(registry.__dict__.get("notify"), AwaitingNotify):
        registry.notify = AwaitingNotify(registry)

        def on_created(event: ApplicationCreated) -> None:
            _notify_request_events_only_if_heard(registry)

        config.add_subscriber(on_created, ApplicationCreated)
