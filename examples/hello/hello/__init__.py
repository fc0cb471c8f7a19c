"""hello: a small Pyramid application served asynchronously by aiopyramid_ng."""

from __future__ import annotations

from typing import Any

from pyramid.config import Configurator
from pyramid.router import Router

from .store import NoteStore


def main(global_config: dict[str, Any], **settings: Any) -> Router:
    """Build the WSGI application (the ``paste.app_factory`` entry point)."""
    with Configurator(settings=settings) as config:
        config.include("aiopyramid_ng")
        # One store per application, shared by every request it serves.
        store = NoteStore()
        config.add_request_method(lambda request: store, "notes", property=True)
        config.add_route("home", "/")
        config.add_route("blocking", "/blocking")
        config.add_route("events", "/events")
        config.add_route("notes", "/api/notes")
        config.add_route("form", "/form")
        config.add_route("echo", "/ws/echo")
        config.scan(".views")
    return config.make_wsgi_app()
