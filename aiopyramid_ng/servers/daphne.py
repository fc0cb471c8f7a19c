"""The daphne runner: ``use = egg:aiopyramid_ng#daphne``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping
from types import FrameType
from typing import Any

from pyramid.registry import Registry

from ..asgi import make_asgi_app
from ..exceptions import see
from ..types import WSGIApp
from ..websocket.tracking import close_connections
from .options import (
    BOOLEAN,
    FILE,
    POSITIVE_SECONDS,
    SECONDS,
    Option,
    boolean,
    check_tls,
    existing_file,
    option_error,
    or_none,
    parse_addresses,
    parse_options,
    parse_unix_socket,
    positive_seconds,
    seconds,
    text,
)
from .sockets import remove_stale_socket
from .workers import SHUTDOWN_SIGNALS

__all__ = ["DAPHNE_OPTIONS", "LogStream", "daphne_kwargs", "daphne_runner", "stop_on_signals"]

#: The daphne options; ``proxy_headers`` trusts ``X-Forwarded-For``,
#: ``X-Forwarded-Port`` and ``X-Forwarded-Proto`` from any client, so enable
#: it only behind a proxy that sets them.
DAPHNE_OPTIONS: dict[str, Option] = {
    "root_path": Option(text, "a URL path prefix", "/app"),
    "proxy_headers": Option(boolean, BOOLEAN, "true"),
    "http_timeout": Option(seconds, SECONDS, "120"),
    "ssl_certfile": Option(existing_file, FILE, "/etc/ssl/certs/app.pem"),
    "ssl_keyfile": Option(existing_file, FILE, "/etc/ssl/private/app.key"),
    "websocket_timeout": Option(or_none(seconds), f"{SECONDS}, or none for no limit", "3600"),
    "ping_interval": Option(positive_seconds, POSITIVE_SECONDS, "20"),
    "ping_timeout": Option(positive_seconds, POSITIVE_SECONDS, "30"),
    "access_log": Option(boolean, BOOLEAN, "true"),
}


class LogStream:
    """A text stream that logs each line written to it, for daphne's access log.

    daphne writes its access log (``daphne.access.AccessLogGenerator``) to a
    stream; written here, its lines go through the ini file's logging, as
    the ``daphne.access`` logger at level INFO.
    """

    def __init__(self, logger: logging.Logger):
        self.logger = logger

    def write(self, text: str) -> None:
        for line in text.splitlines():
            self.logger.info("%s", line)


def _quote(argument: str) -> str:
    """Escape ``argument`` for a Twisted endpoint description (its ``:`` and ``\\``)."""
    from twisted.internet.endpoints import quoteStringArgument

    quoted: str = quoteStringArgument(argument)  # type: ignore[no-untyped-call]  # untyped
    return quoted


def _endpoint(host: str, port: int, certfile: str | None, keyfile: str | None) -> str:
    """Twisted's description of where daphne listens: TCP, or TLS with ``certfile``."""
    interface = _quote(host)
    if certfile is None:
        return f"tcp:port={port}:interface={interface}"
    # Without a key file, Twisted reads the key from the certificate's file.
    key = _quote(keyfile or certfile)
    endpoint = f"ssl:port={port}:interface={interface}:privateKey={key}:certKey={_quote(certfile)}"
    with open(certfile) as pem:
        chained = pem.read().count("-----BEGIN CERTIFICATE-----") > 1
    if chained:
        # Twisted sends the first certificate alone unless given a chain
        # file; given this one, it sends the first again among the
        # intermediates, which clients accept.
        endpoint += f":extraCertChain={_quote(certfile)}"
    return endpoint


def daphne_kwargs(local_conf: Mapping[str, str]) -> dict[str, Any]:
    """Return the keyword arguments of :class:`daphne.server.Server` that ``local_conf`` describes.

    Building them does not import :mod:`daphne.server`, which installs
    Twisted's asyncio reactor as a side effect of being imported.

    :raises ConfigurationError: for a bad option (see
        :func:`~aiopyramid_ng.servers.options.parse_options`).
    """
    uds = parse_unix_socket("daphne", local_conf)
    options = parse_options("daphne", local_conf, DAPHNE_OPTIONS)
    certfile, keyfile = options.pop("ssl_certfile", None), options.pop("ssl_keyfile", None)
    check_tls("daphne", certfile, keyfile)
    if uds is None:
        ((host, port),) = parse_addresses("daphne", local_conf, many=False)
        endpoints = [_endpoint(host, port, certfile, keyfile)]
    elif certfile is not None:
        raise option_error(
            "daphne",
            f"uds = {uds!r} and ssl_certfile = {certfile!r}: daphne serves TLS over TCP only; "
            "listen on `listen = host:port` for TLS, or use the uvicorn or hypercorn runner.",
            see("runner-tls"),
        )
    else:
        endpoints = [f"unix:{_quote(uds)}"]
    if "websocket_timeout" in options and options["websocket_timeout"] is None:
        options["websocket_timeout"] = -1  # daphne's "no limit"
    if options.pop("access_log", False):
        from daphne.access import AccessLogGenerator

        options["action_logger"] = AccessLogGenerator(LogStream(logging.getLogger("daphne.access")))
    if options.pop("proxy_headers", False):
        options.update(
            proxy_forwarded_address_header="X-Forwarded-For",
            proxy_forwarded_port_header="X-Forwarded-Port",
            proxy_forwarded_proto_header="X-Forwarded-Proto",
        )
    return {"endpoints": endpoints, **options}


def stop_on_signals(server: Any, registry: Registry | None) -> None:
    """Have ``SIGINT`` and ``SIGTERM`` close the WebSockets, then stop ``server``.

    ``server`` is a :class:`daphne.server.Server` built with
    ``signal_handlers=False``; call this in the main thread before it runs.
    On the first signal the application's open WebSocket connections close,
    their views unwound and ``on_close`` run
    (``aiopyramid_ng.websocket.tracking.close_connections``), and the
    server stops; a second signal stops it without waiting.  daphne lets an
    application close only with 1000 or 3000-4999, so the clients get 1000
    where the other runners send 1001.  Left to itself, daphne 4.2 would stop
    with the views still suspended: its clients would see 1006.
    """
    from twisted.internet import reactor
    from twisted.internet.error import ReactorNotRunning

    closing: asyncio.Future[None] | None = None

    def stop(*args: object) -> None:
        with contextlib.suppress(ReactorNotRunning):  # stopped already
            server.stop()

    def close_then_stop() -> None:
        nonlocal closing
        if closing is not None:
            stop()
            return
        closing = asyncio.ensure_future(close_connections(registry))
        closing.add_done_callback(stop)

    def handle(sig: int, frame: FrameType | None) -> None:
        reactor.callFromThread(close_then_stop)

    for sig in SHUTDOWN_SIGNALS:
        signal.signal(sig, handle)


def daphne_runner(wsgi_app: WSGIApp, global_conf: Mapping[str, str], **local_conf: str) -> None:
    """Serve ``wsgi_app`` with daphne until it stops (``egg:aiopyramid_ng#daphne``).

    Options: ``listen`` (one address), ``host``/``port`` or ``uds``, and
    :data:`DAPHNE_OPTIONS`.  Daphne sends no ASGI lifespan events; the
    application starts its resources on first use.  ``SIGINT`` and
    ``SIGTERM`` close the WebSocket connections, then stop the server (see
    :func:`stop_on_signals`).
    """
    kwargs = daphne_kwargs(local_conf)
    uds = parse_unix_socket("daphne", local_conf)
    if uds is not None:
        # Twisted removes its socket file when it stops, but binding over
        # one left by a killed server fails.
        remove_stale_socket(uds)
    from daphne.server import Server

    app = make_asgi_app(wsgi_app)
    server = Server(app, signal_handlers=False, **kwargs)
    stop_on_signals(server, app.registry)
    server.run()
