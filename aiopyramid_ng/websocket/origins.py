"""The ``Origin`` check that stops cross-site WebSocket hijacking.

Browsers send cookies with a WebSocket handshake whatever page opens it, and
the same-origin policy does not apply to WebSockets: without a check, any
site a logged-in user visits could talk to the application as that user.
A handshake is therefore accepted when:

* it has no ``Origin`` header (browsers always send one; other clients
  usually do not), or
* the ``Origin`` names the host the request was sent to (its ``Host``), or
* the ``Origin`` is listed in the view's ``ws_allowed_origins`` option, or
  when the view has none, in the setting
  ``aiopyramid_ng.websocket.allowed_origins``; ``*`` allows any origin.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from pyramid.exceptions import ConfigurationError

from ..exceptions import see
from ..settings import WEBSOCKET_ALLOWED_ORIGINS

__all__ = [
    "AllowedOrigins",
    "allowed_origins_from_settings",
    "origin_allowed",
    "parse_origins",
]

#: Normalised origins (``scheme://host[:port]``, default port dropped), or "*".
AllowedOrigins = frozenset[str]

_DEFAULT_PORTS = {"http": "80", "ws": "80", "https": "443", "wss": "443"}


def _without_default_port(netloc: str, scheme: str) -> str:
    host, colon, port = netloc.rpartition(":")
    if colon and port == _DEFAULT_PORTS.get(scheme):
        return host
    return netloc


def _normalize(origin: str) -> str | None:
    """``scheme://host[:port]`` in lower case without a default port; None if not an origin."""
    parts = urlsplit(origin.strip().lower())
    if not parts.scheme or not parts.netloc or parts.path not in ("", "/"):
        return None
    if parts.query or parts.fragment or "@" in parts.netloc:
        return None
    return f"{parts.scheme}://{_without_default_port(parts.netloc, parts.scheme)}"


def parse_origins(value: Any, where: str) -> AllowedOrigins:
    """Check and normalise a list of origins (a string is split on whitespace).

    :param where: names the setting or view option in the error message.
    :raises ConfigurationError: for an entry that is neither ``*`` nor an origin.
    """
    entries: Iterable[Any] = value.split() if isinstance(value, str) else value
    allowed = set()
    for entry in entries:
        normalized = "*" if entry == "*" else _normalize(entry) if isinstance(entry, str) else None
        if normalized is None:
            raise ConfigurationError(
                f"{where}: {entry!r} is not an origin. Give origins as scheme://host[:port] "
                "(for example https://example.com or http://localhost:3000), or * for any. "
                f"{see('websocket-origins')}"
            )
        allowed.add(normalized)
    return frozenset(allowed)


def allowed_origins_from_settings(settings: Mapping[str, Any] | None) -> AllowedOrigins:
    """Read and check the setting ``aiopyramid_ng.websocket.allowed_origins``."""
    setting = WEBSOCKET_ALLOWED_ORIGINS
    return parse_origins(setting.read(settings), setting.name)


def origin_allowed(origin: str | None, host: str | None, allowed: AllowedOrigins) -> bool:
    """Tell whether a handshake with these ``Origin`` and ``Host`` headers may proceed."""
    if origin is None or "*" in allowed:
        return True
    normalized = _normalize(origin)
    if normalized is None:
        return False  # "null" (a sandboxed page, a file) or garbage
    if normalized in allowed:
        return True
    scheme, _, netloc = normalized.partition("://")
    return host is not None and _without_default_port(host.strip().lower(), scheme) == netloc
