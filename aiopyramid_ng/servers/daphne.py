"""The daphne runner: ``use = egg:aiopyramid_ng#daphne``."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Mapping
from types import FrameType
from typing import Any

from pyramid.registry import Registry

from ..asgi import make_asgi_app
from ..types import WSGIApp
from ..websocket.tracking import close_connections
from .options import (
    BOOLEAN,
    SECONDS,
    Option,
    boolean,
    parse_addresses,
    parse_options,
    seconds,
    text,
)

__all__ = ["DAPHNE_OPTIONS", "daphne_kwargs", "daphne_runner", "stop_on_signals"]

#: The daphne options; ``proxy_headers`` trusts ``X-Forwarded-For``,
#: ``X-Forwarded-Port`` and ``X-Forwarded-Proto`` from any client, so enable
#: it only behind a proxy that sets them.
DAPHNE_OPTIONS: dict[str, Option] = {
    "root_path": Option(text, "a URL path prefix", "/app"),
    "proxy_headers": Option(boolean, BOOLEAN, "true"),
    "http_timeout": Option(seconds, SECONDS, "120"),
}


def daphne_kwargs(local_conf: Mapping[str, str]) -> dict[str, Any]:
    """Return the keyword arguments of :class:`daphne.server.Server` that ``local_conf`` describes.

    Building them does not import :mod:`daphne.server`, which installs
    Twisted's asyncio reactor as a side effect of being imported.

    :raises ConfigurationError: for a bad option (see
        :func:`~aiopyramid_ng.servers.options.parse_options`).
    """
    from daphne.endpoints import build_endpoint_description_strings

    addresses = parse_addresses("daphne", local_conf, many=False)
    options = parse_options("daphne", local_conf, DAPHNE_OPTIONS)
    endpoints = [
        endpoint
        for host, port in addresses
        for endpoint in build_endpoint_description_strings(host=host, port=port)
    ]
    if options.pop("proxy_headers", False):
        options.update(
            proxy_forwarded_address_header="X-Forwarded-For",
            proxy_forwarded_port_header="X-Forwarded-Port",
            proxy_forwarded_proto_header="X-Forwarded-Proto",
        )
    return {"endpoints": endpoints, **options}


#: The signals that shut the daphne runner down.
SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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

    Options: ``listen`` (one address) or ``host``/``port``, and
    :data:`DAPHNE_OPTIONS`.  Daphne sends no ASGI lifespan events; the
    application starts its resources on first use.  ``SIGINT`` and
    ``SIGTERM`` close the WebSocket connections, then stop the server (see
    :func:`stop_on_signals`).
    """
    kwargs = daphne_kwargs(local_conf)
    from daphne.server import Server

    app = make_asgi_app(wsgi_app)
    server = Server(app, signal_handlers=False, **kwargs)
    stop_on_signals(server, app.registry)
    server.run()
