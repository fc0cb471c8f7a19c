"""The ASGI scope a server would build for a request WebTest describes as a WSGI environ."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import quote_from_bytes

from ..types import Environ, Scope

__all__ = ["scope_from_environ"]

# Characters a client leaves unescaped in a path (RFC 3986 pchar and "/").
_PATH_SAFE = "/:@!$&'()*+,;=-._~"

_ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}


def _latin1(value: str | bytes) -> bytes:
    # WebTest lets a test put bytes in a header; a server sees bytes anyway.
    return value if isinstance(value, bytes) else value.encode("latin-1")


def scope_from_environ(
    environ: Environ, kind: str = "http", subprotocols: Iterable[str] = ()
) -> Scope:
    """Build the ASGI ``http`` (or ``websocket``) scope a server would make for this environ.

    Like uvicorn, ``path`` and ``raw_path`` include ``root_path``.  Header
    values may be ``str`` or ``bytes``.  A ``websocket`` scope carries
    ``subprotocols`` and offers the ``websocket.http.response`` extension,
    so the application can refuse a handshake with a full HTTP response.
    """
    script_name = _latin1(environ.get("SCRIPT_NAME", ""))
    path = script_name + _latin1(environ.get("PATH_INFO", ""))
    headers: list[tuple[bytes, bytes]] = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").lower()
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            name = key.replace("_", "-").lower()
        else:
            continue
        headers.append((name.encode("latin-1"), _latin1(value)))
    remote = environ.get("REMOTE_ADDR")
    scheme = environ.get("wsgi.url_scheme", "http")
    scope: dict[str, Any] = {
        "type": kind,
        "asgi": dict(_ASGI_VERSION),
        "http_version": environ.get("SERVER_PROTOCOL", "HTTP/1.1").partition("/")[2] or "1.1",
        "scheme": scheme,
        "path": path.decode("utf-8", "replace"),
        "raw_path": quote_from_bytes(path, safe=_PATH_SAFE).encode("ascii"),
        "root_path": script_name.decode("utf-8", "replace"),
        "query_string": _latin1(environ.get("QUERY_STRING", "")),
        "headers": headers,
        "server": (environ.get("SERVER_NAME", "localhost"), int(environ.get("SERVER_PORT", 80))),
        "client": (remote, int(environ.get("REMOTE_PORT", 0))) if remote else None,
        "state": {},
    }
    if kind == "http":
        scope["method"] = environ["REQUEST_METHOD"]
    else:
        scope["scheme"] = {"http": "ws", "https": "wss"}.get(scheme, scheme)
        scope["subprotocols"] = list(subprotocols)
        scope["extensions"] = {"websocket.http.response": {}}
    return scope
