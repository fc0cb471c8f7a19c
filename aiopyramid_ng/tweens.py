"""Tweens that may be coroutine functions.

A tween factory registered with ``config.add_tween`` may return an
``async def`` tween.  Inside it, ``await handler(request)`` runs the rest of
the chain (sync and async tweens below, then the router), and the tween may
await I/O before and after without blocking other requests::

    def timing_tween_factory(handler, registry):
        async def timing_tween(request):
            await audit.start(request)
            response = await handler(request)
            await audit.finish(request, response)
            return response
        return timing_tween

    config.add_tween("myapp.tweens.timing_tween_factory")

Async and sync tweens mix in any order (``under``/``over`` and the explicit
``pyramid.tweens`` setting work as usual), and exceptions reach Pyramid's
exception view tween as they would from a sync tween.  A sync tween calling
``@synchronize``\\ d coroutines (aiopyramid's way) keeps working.

``config.include('aiopyramid_ng')`` registers a :class:`BridgedTweens` as
Pyramid's :class:`~pyramid.interfaces.ITweens`: when the Router builds the
chain, each factory gets a handler that a sync tween calls as usual and an
async tween awaits.
"""

from __future__ import annotations

from typing import Any

from pyramid.config import Configurator
from pyramid.config.tweens import Tweens
from pyramid.interfaces import IRequest, ITweens
from pyramid.registry import Registry
from pyramid.response import Response
from pyramid.tweens import excview_tween_factory
from zope.interface import implementer

from .bridge import in_bridge, spawn_greenlet
from .coroutines import is_coroutine_callable, resolve

__all__ = ["BridgedTweens", "TweenHandler", "includeme"]

Handler = Any
TweenFactory = Any

_FIX = "Tweens run inside requests; call the tween chain from request code only."


class TweenHandler:
    """The ``handler`` given to a tween factory: the rest of the chain.

    A sync tween calls it and gets the response.  For an async tween the
    call returns an awaitable: awaited from the tween itself (the tween's
    coroutine is stepped in the request greenlet), the rest of the chain
    runs right there; awaited from another Task (``asyncio.wait_for`` in
    Python 3.11, ``create_task``), it runs in a new request greenlet of that
    Task, sharing its context.
    """

    __slots__ = ("awaitable", "handler")

    def __init__(self, handler: Handler):
        self.handler = handler
        self.awaitable = False

    def __call__(self, request: IRequest) -> Any:
        if self.awaitable:
            return self._run(request)
        return self.handler(request)

    async def _run(self, request: IRequest) -> Response:
        if in_bridge():
            response: Response = self.handler(request)
            return response
        return await spawn_greenlet(self.handler, request)

    def __repr__(self) -> str:
        return f"<TweenHandler of {self.handler!r}>"


class AsyncTween:
    """The synchronous tween Pyramid calls in place of an ``async def`` tween."""

    __slots__ = ("tween",)

    def __init__(self, tween: Any):
        self.tween = tween

    def __call__(self, request: IRequest) -> Response:
        response: Response = resolve(self.tween(request), self.tween, _FIX)
        return response

    def __repr__(self) -> str:
        return f"<AsyncTween {self.tween!r}>"


def make_tween(factory: TweenFactory, handler: Handler, registry: Registry) -> Any:
    """Call a tween factory; wrap what it returns if it is an async tween."""
    if factory is excview_tween_factory:
        # Pyramid's own, in every chain, is known to be synchronous: it gets
        # the handler itself, and every request saves one call.
        return factory(handler, registry)
    given = TweenHandler(handler)
    tween = factory(given, registry)
    if not is_coroutine_callable(tween):
        return tween
    given.awaitable = True
    return AsyncTween(tween)


@implementer(ITweens)
class BridgedTweens:
    """Pyramid's tween registry, building chains in which tweens may be async.

    Tweens are added to, ordered and listed (``ptweens``) by the wrapped
    :class:`~pyramid.config.tweens.Tweens`; only building the chain differs:
    every factory, whenever it was added, goes through :func:`make_tween`.
    """

    def __init__(self, tweens: Tweens):
        self.tweens = tweens

    def add_explicit(self, name: str, factory: TweenFactory) -> None:
        self.tweens.add_explicit(name, factory)

    def add_implicit(
        self, name: str, factory: TweenFactory, under: Any = None, over: Any = None
    ) -> None:
        self.tweens.add_implicit(name, factory, under=under, over=over)

    def implicit(self) -> list[tuple[str, TweenFactory]]:
        chain: list[tuple[str, TweenFactory]] = self.tweens.implicit()
        return chain

    @property
    def explicit(self) -> list[tuple[str, TweenFactory]]:
        chain: list[tuple[str, TweenFactory]] = self.tweens.explicit
        return chain

    def __call__(self, handler: Handler, registry: Registry) -> Handler:
        # Outermost last: each tween wraps the chain built below it.
        for _name, factory in reversed(self.explicit or self.implicit()):
            handler = make_tween(factory, handler, registry)
        return handler


def includeme(config: Configurator) -> None:
    """Register :class:`BridgedTweens` around the application's tween registry.

    Done at include time: ``add_tween`` registers with the utility it finds
    when it is called, and Pyramid's own exception view tween is added when
    the Configurator is made.
    """
    registry = config.registry
    tweens = registry.queryUtility(ITweens)
    if isinstance(tweens, BridgedTweens):
        return
    registry.registerUtility(BridgedTweens(tweens or Tweens()), ITweens)
