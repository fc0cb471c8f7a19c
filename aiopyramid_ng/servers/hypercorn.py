"""The hypercorn runner: ``use = egg:aiopyramid_ng#hypercorn``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, cast

from ..asgi import make_asgi_app
from ..types import WSGIApp
from .options import SECONDS, Address, Option, parse_addresses, parse_options, seconds, text

__all__ = ["HYPERCORN_OPTIONS", "hypercorn_config", "hypercorn_runner"]

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


def hypercorn_runner(wsgi_app: WSGIApp, global_conf: Mapping[str, str], **local_conf: str) -> None:
    """Serve ``wsgi_app`` with hypercorn until it stops (``egg:aiopyramid_ng#hypercorn``).

    Options: ``listen`` (one or more space-separated addresses) or
    ``host``/``port``, and :data:`HYPERCORN_OPTIONS`.  SIGINT and SIGTERM
    shut the server down gracefully.
    """
    from hypercorn.asyncio import serve
    from hypercorn.typing import ASGIFramework

    config = hypercorn_config(local_conf)
    # hypercorn types each scope as a TypedDict, which a type checker does
    # not accept for the generic ASGI mapping the application takes.
    app = cast(ASGIFramework, make_asgi_app(wsgi_app))
    asyncio.run(serve(app, config, mode="asgi"))
