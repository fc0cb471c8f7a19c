"""Map an ASGI ``http`` scope to a PEP 3333 WSGI environ.

WSGI carries every string as a "bytes-as-latin-1" ``str``: the request's raw
bytes, each byte one code point.  WebOb and Pyramid decode paths as UTF-8
from that form, so non-ASCII paths and header values survive unchanged.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from io import BytesIO
from typing import IO
from urllib.parse import unquote_to_bytes

from ..types import Environ, HTTPScope, WebSocketScope

__all__ = ["FileWrapper", "build_environ", "handshake_environ", "wsgi_path"]

#: The smallest read :class:`FileWrapper` asks for; WebOb's ``FileResponse``
#: suggests 4 KiB, which would cost one thread hop per 4 KiB of file.
MIN_FILE_CHUNK = 64 * 1024

_DEFAULT_PORTS = {"http": "80", "https": "443"}


class FileWrapper:
    """``wsgi.file_wrapper``: marks a file-like object as a response body.

    The ASGI adapter recognises it and reads the file in chunks of at least
    :data:`MIN_FILE_CHUNK` bytes in a worker thread, so neither the whole
    file nor the blocking reads land on the event loop.  Iterating it
    directly (as a WSGI server would) reads synchronously.
    """

    def __init__(self, file: IO[bytes], block_size: int = MIN_FILE_CHUNK):
        self.file = file
        self.block_size = max(block_size, MIN_FILE_CHUNK)

    def read_chunk(self) -> bytes:
        """Read the next chunk; ``b""`` at the end of the file."""
        return self.file.read(self.block_size)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.read_chunk, b"")

    def close(self) -> None:
        self.file.close()


def _latin1(text: str) -> str:
    return text.encode("utf-8").decode("latin-1")


def wsgi_path(scope: HTTPScope | WebSocketScope) -> tuple[str, str]:
    """Return ``(SCRIPT_NAME, PATH_INFO)`` for ``scope``, bytes-as-latin-1.

    ``raw_path`` is preferred when the server sends it: it holds the bytes the
    client sent, whatever their encoding.  ASGI servers disagree on whether
    ``path`` includes ``root_path`` (uvicorn: yes, hypercorn and daphne: no),
    so the prefix is stripped only where it matches a whole leading segment.
    """
    script_name = _latin1(scope.get("root_path", "")).rstrip("/")
    raw_path = scope.get("raw_path")
    path_info = unquote_to_bytes(raw_path).decode("latin-1") if raw_path else _latin1(scope["path"])
    if script_name and (path_info == script_name or path_info.startswith(script_name + "/")):
        path_info = path_info[len(script_name) :]
    return script_name, path_info


#: WSGI key of each header name seen so far ("" for a name that is dropped).
#: Clients send the same few dozen names over and over; the cache is bounded
#: so that a client inventing names cannot grow it without end.
_header_keys: dict[bytes, str] = {}
_HEADER_KEYS_MAX = 512


def _header_key(raw_name: bytes) -> str:
    name = raw_name.decode("latin-1").lower()
    if "_" in name:
        # "X-User_Id" and "X-User-Id" would both become HTTP_X_USER_ID; a
        # client could then smuggle a value past a proxy that strips or
        # sets the dashed one.  Such headers are dropped, as nginx does.
        key = ""
    elif name == "content-type":
        key = "CONTENT_TYPE"
    elif name == "content-length":
        key = "CONTENT_LENGTH"
    else:
        key = "HTTP_" + name.upper().replace("-", "_")
    if len(_header_keys) < _HEADER_KEYS_MAX:
        _header_keys[raw_name] = key
    return key


def _add_headers(environ: Environ, raw_headers: Iterable[tuple[bytes, bytes]]) -> None:
    keys = _header_keys
    for raw_name, raw_value in raw_headers:
        key = keys.get(raw_name)
        if key is None:
            key = _header_key(raw_name)
        if not key:
            continue
        value = raw_value.decode("latin-1")
        if key in environ:
            # RFC 9110 joins repeated fields with commas; Cookie is the
            # exception (RFC 6265 section 5.4), its pairs are separated by
            # semicolons.
            separator = "; " if key == "HTTP_COOKIE" else ", "
            value = environ[key] + separator + value
        environ[key] = value


def build_environ(scope: HTTPScope, body: IO[bytes], content_length: int) -> Environ:
    """Build the WSGI environ of an ``http`` scope whose body was fully read.

    ``body`` is positioned at its start and holds ``content_length`` bytes;
    ``CONTENT_LENGTH`` states that length even for a chunked upload, so
    WebOb reads the body without needing ``wsgi.input_terminated``.
    """
    return _environ(scope, scope["method"], scope.get("scheme", "http"), body, content_length)


def handshake_environ(scope: WebSocketScope) -> Environ:
    """Build the WSGI environ of a WebSocket handshake: a ``GET`` without a body."""
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    return _environ(scope, "GET", scheme, BytesIO(), 0)


#: ``SERVER_PROTOCOL`` of each ASGI ``http_version``.
_PROTOCOLS = {"1.0": "HTTP/1.0", "1.1": "HTTP/1.1", "2": "HTTP/2", "3": "HTTP/3"}


def _environ(
    scope: HTTPScope | WebSocketScope,
    method: str,
    scheme: str,
    body: IO[bytes],
    content_length: int,
) -> Environ:
    raw_path = scope.get("raw_path")
    if raw_path and b"%" not in raw_path and not scope.get("root_path"):
        # The common case, without a call: nothing to unquote or strip.
        script_name, path_info = "", raw_path.decode("latin-1")
    else:
        script_name, path_info = wsgi_path(scope)
    http_version = scope.get("http_version", "1.1")
    environ: Environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path_info,
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_PROTOCOL": _PROTOCOLS.get(http_version) or f"HTTP/{http_version}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": body,
        "wsgi.input_terminated": True,
        # The body is already buffered and rewound: WebOb may seek it instead
        # of copying it into a second temporary file on make_body_seekable().
        "webob.is_body_seekable": True,
        "wsgi.errors": sys.stderr,
        # Requests of one process interleave on the loop and executor views
        # run in threads: code must be as careful as under a threaded server.
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": FileWrapper,
        "asgi.scope": scope,
    }
    _add_headers(environ, scope.get("headers", ()))
    environ["CONTENT_LENGTH"] = str(content_length) if content_length else ""
    environ.setdefault("CONTENT_TYPE", "")
    server = scope.get("server")
    if server is not None:
        host, server_port = server
        environ["SERVER_NAME"] = host
        environ["SERVER_PORT"] = (
            str(server_port) if server_port is not None else _DEFAULT_PORTS.get(scheme, "80")
        )
    else:
        # A server on a Unix socket sends no address; PEP 3333 still requires
        # both keys, and the Host header is the best name the request has.
        host_header = environ.get("HTTP_HOST", "localhost")
        name, colon, port = host_header.rpartition(":")
        if not colon or not port.isdigit():
            name, port = host_header, _DEFAULT_PORTS.get(scheme, "80")
        environ["SERVER_NAME"] = name
        environ["SERVER_PORT"] = port
    client = scope.get("client")
    if client is not None:
        environ["REMOTE_ADDR"] = client[0]
        environ["REMOTE_PORT"] = str(client[1])
    return environ
