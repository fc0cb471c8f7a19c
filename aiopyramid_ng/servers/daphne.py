"""The daphne runner: ``use = egg:aiopyramid_ng#daphne``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..asgi import make_asgi_app
from ..types import WSGIApp
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

__all__ = ["DAPHNE_OPTIONS", "daphne_kwargs", "daphne_runner"]

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


def daphne_runner(wsgi_app: WSGIApp, global_conf: Mapping[str, str], **local_conf: str) -> None:
    """Serve ``wsgi_app`` with daphne until it stops (``egg:aiopyramid_ng#daphne``).

    Options: ``listen`` (one address) or ``host``/``port``, and
    :data:`DAPHNE_OPTIONS`.  Daphne sends no ASGI lifespan events; the
    application starts its resources on first use.
    """
    kwargs = daphne_kwargs(local_conf)
    from daphne.server import Server

    Server(make_asgi_app(wsgi_app), **kwargs).run()
