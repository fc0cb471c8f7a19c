"""The attribute values read from scopes and environs, edge cases included."""

from __future__ import annotations

from typing import Any

from aiopyramid_ng.otel.attributes import (
    EnvironGetter,
    HeadersGetter,
    environ_attributes,
    scope_attributes,
)
from tests.otel.support import http_scope


def test_the_host_header_names_the_server() -> None:
    cases = {
        b"example.com": ("example.com", 443),
        b"example.com:8443": ("example.com", 8443),
        b"[::1]": ("::1", 443),
        b"[::1]:9000": ("::1", 9000),
    }
    for host, expected in cases.items():
        scope = http_scope("/")
        scope["scheme"] = "https"
        scope["headers"] = [(b"host", host)]
        _name, attributes = scope_attributes(scope)
        assert (attributes["server.address"], attributes["server.port"]) == expected
    scope = http_scope("/")
    scope["scheme"] = "gopher"  # no default port known
    scope["headers"] = [(b"host", b"example.com")]
    _name, attributes = scope_attributes(scope)
    assert attributes["server.address"] == "example.com"
    assert "server.port" not in attributes


def test_the_socket_names_the_server_without_a_host_header() -> None:
    scope: Any = http_scope("/")
    scope["headers"] = []
    scope["client"] = None
    _name, attributes = scope_attributes(scope)
    assert (attributes["server.address"], attributes["server.port"]) == ("127.0.0.1", 8080)
    assert "client.address" not in attributes
    scope["server"] = None
    _name, attributes = scope_attributes(scope)
    assert "server.address" not in attributes


def test_a_websocket_scope_is_a_get() -> None:
    scope: Any = http_scope("/ws")
    scope["type"] = "websocket"
    del scope["method"], scope["scheme"]
    name, attributes = scope_attributes(scope)
    assert name == "GET"
    assert attributes["url.scheme"] == "ws"


def test_a_minimal_environ() -> None:
    name, attributes = environ_attributes({"REQUEST_METHOD": "PATCH"})
    assert name == "PATCH"
    assert attributes == {
        "http.request.method": "PATCH",
        "url.path": "",
        "url.scheme": "http",
    }
    _name, attributes = environ_attributes(
        {"SERVER_NAME": "10.0.0.1", "SERVER_PORT": "8000", "SCRIPT_NAME": "/app"}
    )
    assert (attributes["server.address"], attributes["server.port"]) == ("10.0.0.1", 8000)


def test_the_getters_read_propagation_headers() -> None:
    headers = [(b"traceparent", b"00-a-b-01"), (b"baggage", b"k=v"), (b"baggage", b"l=w")]
    getter = HeadersGetter()
    assert getter.get(headers, "Baggage") == ["k=v", "l=w"]
    assert getter.get(headers, "tracestate") is None
    assert getter.keys(headers) == ["traceparent", "baggage", "baggage"]
    environ = {"HTTP_TRACEPARENT": "00-a-b-01", "HTTP_X_FORWARDED_FOR": "x", "PATH_INFO": "/"}
    environ_getter = EnvironGetter()
    assert environ_getter.get(environ, "traceparent") == ["00-a-b-01"]
    assert environ_getter.get(environ, "tracestate") is None
    assert environ_getter.keys(environ) == ["traceparent", "x-forwarded-for"]
