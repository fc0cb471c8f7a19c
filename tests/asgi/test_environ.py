"""The ASGI scope to WSGI environ mapping (PEP 3333) and ``wsgi.file_wrapper``."""

from __future__ import annotations

import io
from typing import Any, cast

import pytest

from aiopyramid_ng.asgi.environ import (
    MIN_FILE_CHUNK,
    FileWrapper,
    build_environ,
    handshake_environ,
    wsgi_path,
)
from aiopyramid_ng.types import HTTPScope, WebSocketScope


def scope(**overrides: Any) -> HTTPScope:
    """An ``http`` scope; servers leave out keys that asgiref's type requires, as some here do."""
    base: dict[str, Any] = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": b"a=1&b=%C3%A9",
        "headers": [],
        "server": ("example.org", 8443),
        "client": ("10.0.0.7", 51000),
    }
    base.update(overrides)
    return cast(HTTPScope, base)


def environ_of(**overrides: Any) -> dict[str, Any]:
    return build_environ(scope(**overrides), io.BytesIO(b"body"), 4)


def test_required_keys() -> None:
    body = io.BytesIO(b"body")
    environ = build_environ(scope(), body, 4)
    assert environ["wsgi.input"] is body
    expected = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/",
        "QUERY_STRING": "a=1&b=%C3%A9",
        "CONTENT_LENGTH": "4",
        "CONTENT_TYPE": "",
        "SERVER_NAME": "example.org",
        "SERVER_PORT": "8443",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "10.0.0.7",
        "REMOTE_PORT": "51000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https",
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": FileWrapper,
    }
    assert {key: environ[key] for key in expected} == expected
    assert hasattr(environ["wsgi.errors"], "write")


@pytest.mark.parametrize(
    ("root_path", "path", "raw_path", "expected"),
    [
        # uvicorn: path and raw_path include root_path
        ("/app", "/app/caf\u00e9", b"/app/caf%C3%A9", ("/app", "/caf\u00c3\u00a9")),
        # hypercorn, daphne: they do not
        ("/app", "/caf\u00e9", b"/caf%C3%A9", ("/app", "/caf\u00c3\u00a9")),
        # only whole segments are stripped
        ("/app", "/application", b"/application", ("/app", "/application")),
        ("/app/", "/app", b"/app", ("/app", "")),
        # no raw_path: the decoded path, re-encoded as WSGI wants
        ("", "/caf\u00e9", None, ("", "/caf\u00c3\u00a9")),
        # an escaped slash stays a slash, as under any WSGI server
        ("", "/a%2Fb", b"/a%2Fb", ("", "/a/b")),
    ],
)
def test_script_name_and_path_info(
    root_path: str, path: str, raw_path: bytes | None, expected: tuple[str, str]
) -> None:
    assert wsgi_path(scope(root_path=root_path, path=path, raw_path=raw_path)) == expected


def test_non_utf8_path_bytes_survive() -> None:
    assert wsgi_path(scope(path="/\ufffd", raw_path=b"/%FF")) == ("", "/\xff")


def test_headers() -> None:
    environ = environ_of(
        headers=[
            (b"content-type", b"application/json"),
            (b"content-length", b"4"),
            (b"x-name", "caf\u00e9".encode()),
            (b"accept", b"text/html"),
            (b"accept", b"application/json"),
            (b"cookie", b"a=1"),
            (b"cookie", b"b=2"),
            (b"x-user_id", b"smuggled"),
            (b"x-user-id", b"real"),
        ]
    )
    assert environ["CONTENT_TYPE"] == "application/json"
    assert "HTTP_CONTENT_TYPE" not in environ and "HTTP_CONTENT_LENGTH" not in environ
    assert environ["HTTP_X_NAME"].encode("latin-1").decode("utf-8") == "caf\u00e9"
    assert environ["HTTP_ACCEPT"] == "text/html, application/json"
    assert environ["HTTP_COOKIE"] == "a=1; b=2"
    assert environ["HTTP_X_USER_ID"] == "real"


def test_content_length_is_what_was_read() -> None:
    # A chunked upload has no Content-Length header; the buffered body's size is it.
    chunked = build_environ(
        scope(headers=[(b"transfer-encoding", b"chunked")]), io.BytesIO(b"abc"), 3
    )
    assert (chunked["CONTENT_LENGTH"], chunked["HTTP_TRANSFER_ENCODING"]) == ("3", "chunked")
    assert build_environ(scope(method="GET"), io.BytesIO(), 0)["CONTENT_LENGTH"] == ""


@pytest.mark.parametrize(
    ("host", "scheme", "expected"),
    [
        ("example.org:8000", "http", ("example.org", "8000")),
        ("example.org", "https", ("example.org", "443")),
        ("[::1]:8000", "http", ("[::1]", "8000")),
        ("[::1]", "http", ("[::1]", "80")),
        (None, "http", ("localhost", "80")),
    ],
)
def test_server_from_host_header_without_server(
    host: str | None, scheme: str, expected: tuple[str, str]
) -> None:
    headers = [(b"host", host.encode())] if host else []
    environ = environ_of(server=None, client=None, scheme=scheme, headers=headers)
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == expected
    assert "REMOTE_ADDR" not in environ


def test_server_without_port() -> None:
    environ = environ_of(server=("/run/app.sock", None), scheme="https")
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("/run/app.sock", "443")


def test_file_wrapper_reads_in_large_chunks_and_closes() -> None:
    data = b"x" * (MIN_FILE_CHUNK * 2 + 1)
    file = io.BytesIO(data)
    wrapper = FileWrapper(file, 4096)
    assert wrapper.block_size == MIN_FILE_CHUNK
    assert [len(chunk) for chunk in wrapper] == [MIN_FILE_CHUNK, MIN_FILE_CHUNK, 1]
    wrapper.close()
    assert file.closed


def test_handshake_environ_is_a_get_without_body() -> None:
    handshake = cast(
        WebSocketScope,
        {**scope(), "type": "websocket", "scheme": "wss", "subprotocols": ["chat"]},
    )
    del handshake["method"]  # type: ignore[typeddict-item]
    environ = handshake_environ(handshake)
    assert (environ["REQUEST_METHOD"], environ["wsgi.url_scheme"]) == ("GET", "https")
    assert (environ["CONTENT_LENGTH"], environ["wsgi.input"].read()) == ("", b"")
    assert environ["asgi.scope"] is handshake
