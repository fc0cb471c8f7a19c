"""Renderers that may be coroutine functions.

A renderer factory registered with ``config.add_renderer`` may return an
``async def render(value, system)``; it is awaited where Pyramid renders
(after a view, or in ``render()``/``render_to_response()`` called from
request code)::

    class TemplateRenderer:
        def __init__(self, info):
            self.template = info.name

        async def __call__(self, value, system):
            return await templates.render_async(self.template, value)

    config.add_renderer(".tmpl", TemplateRenderer)

``config.include('aiopyramid_ng')`` wraps every registered renderer factory
in a :class:`BridgedRendererFactory`: once in the commit that includes it
(after ``add_renderer`` actions) and again when the application is created,
for factories added by later commits.
"""

from __future__ import annotations

from typing import Any

from pyramid.config import Configurator
from pyramid.events import ApplicationCreated
from pyramid.interfaces import IRendererFactory, IRendererInfo
from pyramid.registry import Registry
from zope.interface import implementer

from .coroutines import is_coroutine_callable, resolve
from .orders import ORDERS

__all__ = ["AsyncRenderer", "BridgedRendererFactory", "includeme"]


_FIX = "Render from request code, or run the caller with `await spawn_greenlet(func, ...)`."


class AsyncRenderer:
    """The synchronous renderer Pyramid calls in place of an ``async def`` one."""

    __slots__ = ("renderer",)

    def __init__(self, renderer: Any):
        self.renderer = renderer

    def __call__(self, value: Any, system: dict[str, Any]) -> Any:
        return resolve(self.renderer(value, system), self.renderer, _FIX)

    @property
    def __wrapped__(self) -> Any:
        return self.renderer

    def __getattr__(self, name: str) -> Any:
        # Only reached for names the wrapper lacks: the renderer's own
        # attributes stay reachable through whoever looks the renderer up.
        # (Not for "renderer" itself, unset while copy or pickle rebuilds
        # the wrapper: that would recurse.)
        if name == "renderer":
            raise AttributeError(name)
        return getattr(self.renderer, name)


@implementer(IRendererFactory)
class BridgedRendererFactory:
    """A renderer factory whose ``async def`` renderers are awaited.

    Everything else is the factory's own: an attribute the wrapper does not
    have is looked up on the factory, since applications and add-ons fetch
    their factory back with ``queryUtility(IRendererFactory, name)`` and
    call its methods (Cornice's ``render_errors``).
    """

    def __init__(self, factory: Any):
        self.factory = factory

    @property
    def __wrapped__(self) -> Any:
        return self.factory

    def __getattr__(self, name: str) -> Any:
        if name == "factory":
            raise AttributeError(name)
        return getattr(self.factory, name)

    def __call__(self, info: IRendererInfo) -> Any:
        renderer = self.factory(info)
        if is_coroutine_callable(renderer):
            return AsyncRenderer(renderer)
        return renderer

    def __repr__(self) -> str:
        return f"<BridgedRendererFactory around {self.factory!r}>"


def wrap_renderer_factories(registry: Registry) -> None:
    """Wrap every renderer factory of ``registry`` not wrapped yet."""
    for name, factory in list(registry.getUtilitiesFor(IRendererFactory)):
        if not isinstance(factory, BridgedRendererFactory):
            registry.registerUtility(BridgedRendererFactory(factory), IRendererFactory, name=name)


def includeme(config: Configurator) -> None:
    """Wrap renderer factories now and when the application is created."""
    registry = config.registry

    def on_created(event: ApplicationCreated) -> None:
        wrap_renderer_factories(registry)

    config.action(
        None, lambda: wrap_renderer_factories(registry), order=ORDERS["wrap_renderer_factories"]
    )
    config.add_subscriber(on_created, ApplicationCreated)
