"""The hypercorn runner: ``use = egg:aiopyramid_ng#hypercorn``."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping
from functools import partial
from types import FrameType
from typing import Any

from pyramid.registry import Registry

from ..asgi import make_asgi_app
from ..types import WSGIApp
from ..websocket.tracking import close_connections
from .options import SECONDS, Address, Option, parse_addresses, parse_options, seconds, text

__all__ = ["HYPERCORN_OPTIONS", "hypercorn_config", "hypercorn_runner", "shutdown_trigger"]

#: The hypercorn options.
HYPERCORN_OPTIONS: dict[str, Option] = {
    "root_path": Option(text, "a URL path prefix", "/app"),
    "keep_alive_timeout": Option(seconds, SECONDS, "5"),
    "graceful_timeout": Option(seconds, SECONDS, "3"),
}


def _bind(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def hypercorn_config(local_conf: Mapping[str, str]) -> Any:
    """Build the :class:`hypercorn.config.Config` that ``local_conf`` describes.

    :raises ConfigurationError: for a bad option (see
        :func:`~aiopyramid_ng.servers.options.parse_options`).
    """
    from hypercorn.config import Config

    addresses = parse_addresses("hypercorn", local_conf, many=True)
    options = parse_options("hypercorn", local_conf, HYPERCORN_OPTIONS)
    config = Config()
    config.bind = [_bind(address) for address in addresses]
    # Given logger objects, hypercorn uses them as they are; given names or
    # "-" it would attach its own handlers and formats over the ini's.
    config.accesslog = logging.getLogger("hypercorn.access")
    config.errorlog = logging.getLogger("hypercorn.error")
    for name, value in options.items():
        setattr(config, name, value)
    return config


#: The signals that shut the hypercorn runner down.
SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def shutdown_trigger(registry: Registry | None) -> None:
    """Hypercorn's ``shutdown_trigger`` for the runner: wait for a signal, close WebSockets.

    Returns once ``SIGINT`` or ``SIGTERM`` arrived and the application's open
    WebSocket connections closed with 1001 ("going away"), their views
    unwound and ``on_close`` run
    (``aiopyramid_ng.websocket.tracking.close_connections``), or at a
    second signal; hypercorn then stops as usual.  Its own trigger, which
    this replaces, only waits for a signal.
    """
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    forced = asyncio.Event()

    def received() -> None:
        (forced if stopping.is_set() else stopping).set()

    def handle(sig: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(received)

    # signal.signal rather than loop.add_signal_handler: it works on every
    # platform, and the previous handlers are put back afterwards.
    previous = {sig: signal.signal(sig, handle) for sig in SHUTDOWN_SIGNALS}
    try:
        await stopping.wait()
        waits = {
            asyncio.ensure_future(close_connections(registry)),
            asyncio.ensure_future(forced.wait()),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def hypercorn_runner(wsgi_app: WSGIApp, global_conf: Mapping[str, str], **local_conf: str) -> None:
    """Serve ``wsgi_app`` with hypercorn until it stops (``egg:aiopyramid_ng#hypercorn``).

    Options: ``listen`` (one or more space-separated addresses) or
    ``host``/``port``, and :data:`HYPERCORN_OPTIONS`.  ``SIGINT`` and
    ``SIGTERM`` shut the server down gracefully, WebSocket connections first
    (see :func:`shutdown_trigger`).
    """
    from hypercorn.asyncio import serve

    config = hypercorn_config(local_conf)
    app = make_asgi_app(wsgi_app)
    trigger = partial(shutdown_trigger, app.registry)
    asyncio.run(serve(app, config, mode="asgi", shutdown_trigger=trigger))
