"""The ASGI scopes a server would build for a request WebTest describes as a WSGI environ."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypedDict
from urllib.parse import quote_from_bytes

from asgiref.typing import ASGIVersions

from ..types import Environ, HTTPScope, WebSocketScope

__all__ = ["scope_from_environ", "websocket_scope_from_environ"]

# Characters a client leaves unescaped in a path (RFC 3986 pchar and "/").
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def _latin1(value: str | bytes) -> bytes:
    # WebTest lets a test put bytes in a header; a server sees bytes anyway.
    return value if isinstance(value, bytes) else value.encode("latin-1")


class _Connection(TypedDict):
    """The keys an ``http`` and a ``websocket`` scope share."""

    asgi: ASGIVersions
    http_version: str
    path: str
    raw_path: bytes
    query_string: bytes
    root_path: str
    headers: list[tuple[bytes, bytes]]
    client: tuple[str, int] | None
    server: tuple[str, int | None] | None
    state: dict[str, Any]


def _connection(environ: Environ) -> _Connection:
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
    return {
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": environ.get("SERVER_PROTOCOL", "HTTP/1.1").partition("/")[2] or "1.1",
        "path": path.decode("utf-8", "replace"),
        "raw_path": quote_from_bytes(path, safe=_PATH_SAFE).encode("ascii"),
        "root_path": script_name.decode("utf-8", "replace"),
        "query_string": _latin1(environ.get("QUERY_STRING", "")),
        "headers": headers,
        "server": (environ.get("SERVER_NAME", "localhost"), int(environ.get("SERVER_PORT", 80))),
        "client": (remote, int(environ.get("REMOTE_PORT", 0))) if remote else None,
        "state": {},
    }


def scope_from_environ(environ: Environ) -> HTTPScope:
    """Build the ASGI ``http`` scope a server would make for this environ.

    Like uvicorn, ``path`` and ``raw_path`` include ``root_path``.  Header
    values may be ``str`` or ``bytes``.
    """
    return {
        **_connection(environ),
        "type": "http",
        "method": environ["REQUEST_METHOD"],
        "scheme": environ.get("wsgi.url_scheme", "http"),
        "extensions": {},
    }


def websocket_scope_from_environ(
    environ: Environ, subprotocols: Iterable[str] = ()
) -> WebSocketScope:
    """Build the ASGI ``websocket`` scope a server would make for this handshake.

    As :func:`scope_from_environ`, plus the requested ``subprotocols``; the
    scope offers the ``websocket.http.response`` extension, so the
    application can refuse a handshake with a full HTTP response.
    """
    return {
        **_connection(environ),
        "type": "websocket",
        "scheme": "wss" if environ.get("wsgi.url_scheme") == "https" else "ws",
        "subprotocols": list(subprotocols),
        "extensions": {"websocket.http.response": {}},
    }
