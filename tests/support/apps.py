"""Small applications built for one test, and calling one as the ASGI adapter does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.router import Router

from aiopyramid_ng.asgi import ASGIApplication
from aiopyramid_ng.bridge import spawn_greenlet


def make_app(setup: Callable[[Configurator], None], **settings: Any) -> Router:
    """Build an application with aiopyramid_ng included and ``setup`` applied."""
    with Configurator(settings=settings) as config:
        config.include("aiopyramid_ng")
        setup(config)
        return config.make_wsgi_app()


def make_asgi(setup: Callable[[Configurator], None]) -> ASGIApplication:
    """Build an application as :func:`make_app` does, through ``config.make_asgi_app()``."""
    with Configurator() as config:
        config.include("aiopyramid_ng")
        setup(config)
        asgi_app: ASGIApplication = config.make_asgi_app()
        return asgi_app


def make_one_view_app(view: Callable[..., Any], **settings: Any) -> Router:
    """Build an application, as :func:`make_app` does, that serves ``view`` alone at ``/``."""

    def setup(config: Configurator) -> None:
        config.add_route("view", "/")
        config.add_view(view, route_name="view")

    return make_app(setup, **settings)


async def get_response(app: Router, path: str = "/", **kwargs: Any) -> Any:
    """Call ``app`` as the ASGI adapter does: inside a request greenlet on this loop."""
    request = Request.blank(path, **kwargs)
    return await spawn_greenlet(request.get_response, app)


async def tick() -> None:
    """Suspend for real (a millisecond), so that concurrent requests interleave here."""
    await asyncio.sleep(0.001)
