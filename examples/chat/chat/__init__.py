"""chat: a chat room whose WebSocket endpoint is an ordinary Pyramid view.

Log in with a name (a signed cookie remembers it), and every message sent
from any browser in the room appears in all of them.
"""

from __future__ import annotations

from typing import Any

from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError
from pyramid.router import Router

from .security import ChatSecurityPolicy


def main(global_config: dict[str, Any], **settings: Any) -> Router:
    """Build the WSGI application (the ``paste.app_factory`` entry point)."""
    secret = settings.get("chat.secret")
    if not secret:
        raise ConfigurationError("Set chat.secret: it signs the login cookie.")
    with Configurator(settings=settings) as config:
        config.include("aiopyramid_ng")
        config.set_security_policy(ChatSecurityPolicy(secret))
        config.add_route("home", "/")
        config.add_route("login", "/login")
        config.add_route("logout", "/logout")
        config.add_route("chat", "/ws")
        config.scan(".views")
    return config.make_wsgi_app()
