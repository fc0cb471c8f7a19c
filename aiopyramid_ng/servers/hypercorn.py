"""The hypercorn runner: ``use = egg:aiopyramid_ng#hypercorn``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Mapping
from functools import partial
from types import FrameType
from typing import Any

from pyramid.registry import Registry

from ..asgi import ASGIApplication, make_asgi_app
from ..types import WSGIApp
from ..websocket.tracking import close_connections
from .options import (
    BOOLEAN,
    FILE,
    POSITIVE_SECONDS,
    SECONDS,
    WHOLE_NUMBER,
    Address,
    Option,
    boolean,
    check_tls,
    existing_file,
    or_none,
    parse_addresses,
    parse_options,
    parse_unix_socket,
    positive_seconds,
    seconds,
    text,
    whole_number,
)
from .workers import SHUTDOWN_SIGNALS, Worker, forking, supervise

__all__ = ["HYPERCORN_OPTIONS", "hypercorn_config", "hypercorn_runner", "shutdown_trigger"]

#: The hypercorn options.
HYPERCORN_OPTIONS: dict[str, Option] = {
    "root_path": Option(text, "a URL path prefix", "/app"),
    "keep_alive_timeout": Option(seconds, SECONDS, "5"),
    "graceful_timeout": Option(seconds, SECONDS, "3"),
    "workers": Option(whole_number, WHOLE_NUMBER, "4"),
    "ssl_certfile": Option(existing_file, FILE, "/etc/ssl/certs/app.pem"),
    "ssl_keyfile": Option(existing_file, FILE, "/etc/ssl/private/app.key"),
    "backlog": Option(whole_number, WHOLE_NUMBER, "100"),
    "websocket_max_message_size": Option(whole_number, "a number of bytes, 1 or more", "16777216"),
    "websocket_ping_interval": Option(
        or_none(positive_seconds), f"{POSITIVE_SECONDS}, or none to send no pings", "20"
    ),
    "access_log": Option(boolean, BOOLEAN, "false"),
}
#: The options whose hypercorn Config attribute has another name.
_CONFIG_NAMES = {"ssl_certfile": "certfile", "ssl_keyfile": "keyfile"}


def _bind(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def hypercorn_config(local_conf: Mapping[str, str]) -> Any:
    """Build the :class:`hypercorn.config.Config` that ``local_conf`` describes.

    :raises ConfigurationError: for a bad option (see
        :func:`~aiopyramid_ng.servers.options.parse_options`).
    """
    from hypercorn.config import Config

    uds = parse_unix_socket("hypercorn", local_conf)
    if uds is None:
        addresses = parse_addresses("hypercorn", local_conf, many=True)
        bind = [_bind(address) for address in addresses]
    else:
        bind = [f"unix:{uds}"]
    options = parse_options("hypercorn", local_conf, HYPERCORN_OPTIONS)
    check_tls(
        "hypercorn", options.get("ssl_certfile"), options.get("ssl_keyfile"), key_required=True
    )
    config = Config()
    config.bind = bind
    # Given logger objects, hypercorn uses them as they are; given names or
    # "-" it would attach its own handlers and formats over the ini's.
    access_log = options.pop("access_log", True)
    config.accesslog = logging.getLogger("hypercorn.access") if access_log else None
    config.errorlog = logging.getLogger("hypercorn.error")
    for name, value in options.items():
        setattr(config, _CONFIG_NAMES.get(name, name), value)
    return config


async def shutdown_trigger(registry: Registry | None, worker: Worker | None = None) -> None:
    """Hypercorn's ``shutdown_trigger`` for the runner: wait for a signal, close WebSockets.

    Returns once ``SIGINT`` or ``SIGTERM`` arrived and the application's open
    WebSocket connections closed with 1001 ("going away"), their views
    unwound and ``on_close`` run
    (``aiopyramid_ng.websocket.tracking.close_connections``), or at a
    second signal; hypercorn then stops as usual.  Its own trigger, which
    this replaces, only waits for a signal.  In a worker process
    (``worker``), the parent's orders count as well (see :mod:`.workers`):
    its order to stop as a first signal, its order to stop waiting as a
    second.
    """
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    forced = asyncio.Event()
    signals = 0

    def received() -> None:
        nonlocal signals
        signals += 1
        (forced if signals > 1 else stopping).set()

    def handle(sig: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(received)

    # signal.signal rather than loop.add_signal_handler: it works on every
    # platform, and the previous handlers are put back afterwards.
    previous = {sig: signal.signal(sig, handle) for sig in SHUTDOWN_SIGNALS}
    # hypercorn awaits the trigger once it listens.
    following = (
        asyncio.ensure_future(
            worker.follow_orders(serving=lambda: True, stop=stopping.set, force=forced.set)
        )
        if worker is not None
        else None
    )
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
        if following is not None:
            following.cancel()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _serve_worker(app: ASGIApplication, config: Any, sockets: Any, worker: Worker) -> None:
    """In a worker process: serve on the inherited ``sockets`` until stopped."""
    from hypercorn.asyncio.run import worker_serve
    from hypercorn.utils import wrap_app

    # What hypercorn.asyncio.serve does, on sockets bound by the parent.
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    trigger = partial(shutdown_trigger, app.registry, worker)
    asyncio.run(worker_serve(wrapped, config, sockets=sockets, shutdown_trigger=trigger))


def _serve_workers(app: ASGIApplication, config: Any) -> None:
    """Bind the sockets here, then serve them from ``config.workers`` forked processes."""
    sockets = config.create_sockets()  # removes a stale unix socket file first
    try:
        supervise(config.workers, partial(_serve_worker, app, config, sockets))
    finally:
        for sock in sockets.secure_sockets + sockets.insecure_sockets:
            if sock.family == socket.AF_UNIX:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(sock.getsockname())
            sock.close()


def hypercorn_runner(wsgi_app: WSGIApp, global_conf: Mapping[str, str], **local_conf: str) -> None:
    """Serve ``wsgi_app`` with hypercorn until it stops (``egg:aiopyramid_ng#hypercorn``).

    Options: ``listen`` (one or more space-separated addresses),
    ``host``/``port`` or ``uds``, and :data:`HYPERCORN_OPTIONS`.  ``SIGINT``
    and ``SIGTERM`` shut the server down gracefully, WebSocket connections
    first (see :func:`shutdown_trigger`).  With ``workers`` above 1, this
    process binds the sockets and supervises that many forked workers (see
    :mod:`aiopyramid_ng.servers.workers`).
    """
    from hypercorn.asyncio import serve

    config = hypercorn_config(local_conf)
    app = make_asgi_app(wsgi_app)
    if forking(config.workers):
        _serve_workers(app, config)
        return
    config.workers = 1  # one process serves (pserve --reload), as hypercorn's serve() does
    trigger = partial(shutdown_trigger, app.registry)
    asyncio.run(serve(app, config, mode="asgi", shutdown_trigger=trigger))
