"""The uvicorn runner: ``use = egg:aiopyramid_ng#uvicorn``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Mapping
from types import FrameType
from typing import Any

from pyramid.registry import Registry

from ..asgi import make_asgi_app
from ..types import WSGIApp
from ..websocket.tracking import close_connections
from .options import (
    BOOLEAN,
    FILE,
    POSITIVE_SECONDS,
    WHOLE_NUMBER,
    Option,
    boolean,
    check_tls,
    choice_text,
    existing_file,
    one_of,
    or_none,
    parse_addresses,
    parse_options,
    parse_unix_socket,
    positive_seconds,
    text,
    whole_number,
    whole_seconds,
)
from .sockets import remove_stale_socket
from .workers import Worker, forking, supervise

__all__ = ["uvicorn_config", "uvicorn_options", "uvicorn_runner", "uvicorn_server"]

WHOLE_SECONDS = "a whole number of seconds, 0 or more"


def uvicorn_options() -> dict[str, Option]:
    """Return the uvicorn options, with uvicorn's own lists of valid choices."""
    # Imported here so that using one runner never imports the other servers.
    from uvicorn.config import HTTP_PROTOCOLS, LOG_LEVELS, LOOP_FACTORIES, WS_PROTOCOLS

    return {
        "log_level": Option(one_of(LOG_LEVELS), choice_text(LOG_LEVELS), "info"),
        "proxy_headers": Option(boolean, BOOLEAN, "true"),
        "forwarded_allow_ips": Option(
            text,
            "a comma-separated list of addresses, networks or *",
            "127.0.0.1,10.0.0.0/8",
        ),
        "root_path": Option(text, "a URL path prefix", "/app"),
        "timeout_keep_alive": Option(whole_seconds, WHOLE_SECONDS, "5"),
        "http": Option(
            one_of(HTTP_PROTOCOLS, import_path=True),
            choice_text(HTTP_PROTOCOLS, import_path=True),
            "h11",
        ),
        "ws": Option(
            one_of(WS_PROTOCOLS, import_path=True),
            choice_text(WS_PROTOCOLS, import_path=True),
            "websockets",
        ),
        "loop": Option(
            one_of(LOOP_FACTORIES, import_path=True),
            choice_text(LOOP_FACTORIES, import_path=True),
            "asyncio",
        ),
        "workers": Option(whole_number, WHOLE_NUMBER, "4"),
        "ssl_certfile": Option(existing_file, FILE, "/etc/ssl/certs/app.pem"),
        "ssl_keyfile": Option(existing_file, FILE, "/etc/ssl/private/app.key"),
        "limit_concurrency": Option(whole_number, WHOLE_NUMBER, "1000"),
        "backlog": Option(whole_number, WHOLE_NUMBER, "2048"),
        "timeout_graceful_shutdown": Option(whole_seconds, WHOLE_SECONDS, "30"),
        "ws_max_size": Option(whole_number, "a number of bytes, 1 or more", "16777216"),
        "ws_ping_interval": Option(
            or_none(positive_seconds), f"{POSITIVE_SECONDS}, or none to send no pings", "20"
        ),
        "ws_ping_timeout": Option(
            or_none(positive_seconds), f"{POSITIVE_SECONDS}, or none to wait for pongs", "20"
        ),
        "access_log": Option(boolean, BOOLEAN, "false"),
    }


def uvicorn_config(wsgi_app: WSGIApp, local_conf: Mapping[str, str]) -> Any:
    """Build the :class:`uvicorn.Config` that serves ``wsgi_app`` as ``local_conf`` says.

    :raises ConfigurationError: for a bad option (see
        :func:`~aiopyramid_ng.servers.options.parse_options`).
    """
    import uvicorn

    uds = parse_unix_socket("uvicorn", local_conf)
    if uds is None:
        ((host, port),) = parse_addresses("uvicorn", local_conf, many=False)
        where: dict[str, Any] = {"host": host, "port": port}
    else:
        where = {"uds": uds}
    options = parse_options("uvicorn", local_conf, uvicorn_options())
    check_tls("uvicorn", options.get("ssl_certfile"), options.get("ssl_keyfile"))
    return uvicorn.Config(
        make_asgi_app(wsgi_app),
        interface="asgi3",
        # pserve configured logging from the ini file; uvicorn's loggers
        # propagate to it instead of installing their own handlers.
        log_config=None,
        # Always given, so that WEB_CONCURRENCY in the environment does not
        # change what the ini file says.
        workers=options.pop("workers", 1),
        **where,
        **options,
    )


def uvicorn_server(config: Any, registry: Registry | None) -> Any:
    """Return the :class:`uvicorn.Server` the runner serves ``config`` with.

    ``registry`` is the served application's.  The server differs from
    uvicorn's in two methods uvicorn offers for overriding:

    * ``shutdown`` stops listening, then closes the application's open
      WebSocket connections with 1001 ("going away"), their views unwound
      and ``on_close`` run
      (``aiopyramid_ng.websocket.tracking.close_connections``), before
      uvicorn's own shutdown, which would close them with 1012;
    * ``handle_exit`` does not keep the signal: once the server stopped,
      uvicorn would raise it again, and a ``SIGTERM`` would then end
      ``pserve`` by the signal instead of with exit status 0.  A second
      signal (``SIGTERM`` too, where uvicorn takes only ``Ctrl+C``) stops
      waiting for connections and tasks.  Signals are counted apart from
      ``should_exit``, which a worker's parent also sets (see
      :mod:`.workers`): a worker's own first signal never counts as its second.
    """
    import uvicorn

    class Server(uvicorn.Server):
        signals = 0

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            for server in self.servers:
                server.close()  # no connection opens while the open ones close
            closing = asyncio.ensure_future(close_connections(registry))
            while not closing.done() and not self.force_exit:
                await asyncio.wait({closing}, timeout=0.1)
            closing.cancel()
            await super().shutdown(sockets=sockets)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            self.signals += 1
            if self.signals > 1:
                self.force_exit = True  # a second signal stops waiting
            else:
                self.should_exit = True

    return Server(config)


def _serve_worker(
    config: Any, registry: Registry | None, sock: socket.socket, worker: Worker
) -> None:
    """In a worker process: serve on the inherited ``sock`` until stopped."""
    server = uvicorn_server(config, registry)

    def stop() -> None:
        server.should_exit = True

    def force() -> None:
        server.force_exit = True

    async def serve() -> None:
        following = asyncio.ensure_future(
            worker.follow_orders(serving=lambda: bool(server.started), stop=stop, force=force)
        )
        try:
            await server.serve(sockets=[sock])
        finally:
            following.cancel()

    # What uvicorn.Server.run does, with the orders followed beside the server.
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(serve())


def _serve_workers(config: Any, registry: Registry | None) -> None:
    """Bind the socket here, then serve it from ``config.workers`` forked processes."""
    if config.uds is not None:
        remove_stale_socket(config.uds)
    sock = config.bind_socket()  # logs "Uvicorn running on ..."
    try:
        supervise(config.workers, lambda worker: _serve_worker(config, registry, sock, worker))
    finally:
        sock.close()
        if config.uds is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(config.uds)


def uvicorn_runner(wsgi_app: WSGIApp, global_conf: Mapping[str, str], **local_conf: str) -> None:
    """Serve ``wsgi_app`` with uvicorn until it stops (``egg:aiopyramid_ng#uvicorn``).

    Options: ``listen`` (one address), ``host``/``port`` or ``uds``, and
    :func:`uvicorn_options`.  ``SIGINT`` and ``SIGTERM`` shut the server
    down gracefully, WebSocket connections first (see :func:`uvicorn_server`).
    With ``workers`` above 1, this process binds the socket and supervises
    that many forked workers (see :mod:`aiopyramid_ng.servers.workers`).
    """
    config = uvicorn_config(wsgi_app, local_conf)
    if forking(config.workers):
        _serve_workers(config, config.app.registry)
    else:
        uvicorn_server(config, config.app.registry).run()
