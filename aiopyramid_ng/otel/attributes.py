"""The names and values of what a server span records, from an ASGI scope or a WSGI environ.

The HTTP semantic conventions' attributes are spelt out here rather than
imported from ``opentelemetry-semantic-conventions``, which the add-on
therefore does not need.  The add-on's own attributes and events start
with ``aiopyramid_ng.``.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.propagators.textmap import Getter
from opentelemetry.util.types import AttributeValue

from ..types import Environ, HTTPScope, WebSocketScope

__all__ = [
    "BLOCKING_CALLABLE",
    "BLOCKING_DURATION",
    "BLOCKING_EVENT",
    "LIMIT",
    "POOL_CALLS",
    "POOL_RUN",
    "POOL_WAIT",
    "VIEW",
    "WEBSOCKET_ACCEPT_EVENT",
    "WEBSOCKET_CLOSE_CODE",
    "EnvironGetter",
    "HeadersGetter",
    "environ_attributes",
    "scope_attributes",
]

#: The view Pyramid called for the request (``pyramid.util.object_description``).
VIEW = "aiopyramid_ng.view"
#: Seconds the request's work waited for a thread of the pool, summed.
POOL_WAIT = "aiopyramid_ng.pool.wait"
#: Seconds the request's work ran in the pool, summed.
POOL_RUN = "aiopyramid_ng.pool.run"
#: How many times the request handed work to the pool.
POOL_CALLS = "aiopyramid_ng.pool.calls"
#: The event of a run of the request greenlet that held the loop too long.
BLOCKING_EVENT = "aiopyramid_ng.blocking"
#: What ran: the view, or where the run was before the view was called.
BLOCKING_CALLABLE = "aiopyramid_ng.blocking.callable"
#: Seconds the run held the loop.
BLOCKING_DURATION = "aiopyramid_ng.blocking.duration"
#: The request limit that answered: ``"deadline"`` (a 504) or ``"shed"`` (a 503 for load),
#: as :data:`aiopyramid_ng.limits.LIMIT_KEY` marks the environ.
LIMIT = "aiopyramid_ng.limit"
#: The event of a WebSocket connection being accepted.
WEBSOCKET_ACCEPT_EVENT = "aiopyramid_ng.websocket.accept"
#: The close code the application closed a WebSocket connection with.
WEBSOCKET_CLOSE_CODE = "aiopyramid_ng.websocket.close_code"

Attributes = dict[str, AttributeValue]

#: The methods the semantic conventions know; any other is reported as ``_OTHER``.
KNOWN_METHODS = frozenset(
    ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE")
)
DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


class HeadersGetter(Getter[Iterable[tuple[bytes, bytes]]]):
    """Reads propagation headers (``traceparent``, ...) from an ASGI scope's headers."""

    def get(self, carrier: Iterable[tuple[bytes, bytes]], key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [value.decode("latin-1") for header, value in carrier if header == name]
        return values or None

    def keys(self, carrier: Iterable[tuple[bytes, bytes]]) -> list[str]:
        return [header.decode("latin-1") for header, _value in carrier]


class EnvironGetter(Getter[Environ]):
    """Reads propagation headers from a WSGI environ's ``HTTP_*`` keys."""

    def get(self, carrier: Environ, key: str) -> list[str] | None:
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return None if value is None else [value]

    def keys(self, carrier: Environ) -> list[str]:
        return [key[5:].lower().replace("_", "-") for key in carrier if key.startswith("HTTP_")]


def method_attributes(method: str, attributes: Attributes) -> str:
    """Add ``http.request.method`` (and ``_original`` when unknown); return the span's name."""
    if method in KNOWN_METHODS:
        attributes["http.request.method"] = method
        return method
    attributes["http.request.method"] = "_OTHER"
    attributes["http.request.method_original"] = method
    return "HTTP"


def _host_and_port(host: str) -> tuple[str, int | None]:
    # "example.com", "example.com:8080", "[::1]", "[::1]:8080"
    name, colon, port = host.rpartition(":")
    if not colon or name.endswith(":") or not port.isdigit():
        return host.strip("[]"), None
    return name.strip("[]"), int(port)


def _server(
    attributes: Attributes, host: str | None, fallback: tuple[str, int | None] | None
) -> None:
    # The Host header names the server as the client addressed it (the
    # conventions prefer it); the socket's own address is the fallback.
    port: int | None
    if host:
        address, port = _host_and_port(host)
        if port is None:
            port = DEFAULT_PORTS.get(str(attributes["url.scheme"]))
    elif fallback is not None:
        address, port = fallback
    else:
        return
    attributes["server.address"] = address
    if port is not None:
        attributes["server.port"] = port


def scope_attributes(scope: HTTPScope | WebSocketScope) -> tuple[str, Attributes]:
    """Return the span's name and attributes for an ASGI ``http`` or ``websocket`` scope."""
    attributes: Attributes = {}
    # A WebSocket handshake is a GET.
    method = scope["method"] if scope["type"] == "http" else "GET"
    name = method_attributes(method, attributes)
    attributes["url.path"] = scope["path"]
    # Optional in ASGI, with these defaults.
    attributes["url.scheme"] = scope.get("scheme") or (
        "ws" if scope["type"] == "websocket" else "http"
    )
    if query := scope.get("query_string"):
        attributes["url.query"] = query.decode("latin-1")
    host = agent = None
    for header, value in scope.get("headers", ()):
        if header == b"host":
            host = value.decode("latin-1")
        elif header == b"user-agent":
            agent = value.decode("latin-1")
    _server(attributes, host, scope.get("server"))
    if client := scope.get("client"):
        attributes["client.address"] = client[0]
    attributes["network.protocol.version"] = scope.get("http_version", "1.1")
    if agent is not None:
        attributes["user_agent.original"] = agent
    return name, attributes


def environ_attributes(environ: Environ) -> tuple[str, Attributes]:
    """Return the span's name and attributes for a WSGI request."""
    attributes: Attributes = {}
    name = method_attributes(environ.get("REQUEST_METHOD", "GET"), attributes)
    attributes["url.path"] = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    attributes["url.scheme"] = environ.get("wsgi.url_scheme", "http")
    if query := environ.get("QUERY_STRING"):
        attributes["url.query"] = query
    server = environ.get("SERVER_NAME")
    port = environ.get("SERVER_PORT", "")
    fallback = (server, int(port)) if server and port.isdigit() else None
    _server(attributes, environ.get("HTTP_HOST"), fallback)
    if client := environ.get("REMOTE_ADDR"):
        attributes["client.address"] = client
    protocol = environ.get("SERVER_PROTOCOL", "")
    if protocol.startswith("HTTP/"):
        attributes["network.protocol.version"] = protocol[5:]
    if agent := environ.get("HTTP_USER_AGENT"):
        attributes["user_agent.original"] = agent
    return name, attributes
