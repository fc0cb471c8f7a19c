"""The uvicorn runner: ``use = egg:aiopyramid_ng#uvicorn``."""

from __future__ import annotations

import asyncio
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
    Option,
    boolean,
    choice_text,
    one_of,
    parse_addresses,
    parse_options,
    text,
    whole_seconds,
)

__all__ = ["uvicorn_config", "uvicorn_options", "uvicorn_runner", "uvicorn_server"]


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
        "timeout_keep_alive": Option(whole_seconds, "a whole number of seconds, 0 or more", "5"),
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
    }


def uvicorn_config(wsgi_app: WSGIApp, local_conf: Mapping[str, str]) -> Any:
    """Build the :class:`uvicorn.Config` that serves ``wsgi_app`` as ``local_conf`` says.

    :raises ConfigurationError: for a bad option (see
        :func:`~aiopyramid_ng.servers.options.parse_options`).
    """
    import uvicorn

    ((host, port),) = parse_addresses("uvicorn", local_conf, many=False)
    options = parse_options("uvicorn", local_conf, uvicorn_options())
    return uvicorn.Config(
        make_asgi_app(wsgi_app),
        host=host,
        port=port,
        interface="asgi3",
        # pserve configured logging from the ini file; uvicorn's loggers
        # propagate to it instead of installing their own handlers.
        log_config=None,
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
      waiting for connections and tasks.
    """
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            for server in self.servers:
                server.close()  # no connection opens while the open ones close
            closing = asyncio.ensure_future(close_connections(registry))
            while not closing.done() and not self.force_exit:
                await asyncio.wait({closing}, timeout=0.1)
            closing.cancel()
            await super().shutdown(sockets=sockets)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.should_exit:
                self.force_exit = True  # a second signal stops waiting
            else:
                self.should_exit = True

    return Server(config)


def uvicorn_runner(wsgi_app: WSGIApp, global_conf: Mapping[str, str], **local_conf: str) -> None:
    """Serve ``wsgi_app`` with uvicorn until it stops (``egg:aiopyramid_ng#uvicorn``).

    Options: ``listen`` (one address) or ``host``/``port``, and
    :func:`uvicorn_options`.  ``SIGINT`` and ``SIGTERM`` shut the server
    down gracefully, WebSocket connections first (see :func:`uvicorn_server`).
    """
    config = uvicorn_config(wsgi_app, local_conf)
    uvicorn_server(config, config.app.registry).run()
