"""``pserve`` server runners: serve an application with uvicorn, hypercorn or daphne.

Each runner is a PasteDeploy ``paste.server_runner`` entry point of
aiopyramid_ng, used from the ``[server:main]`` section of an ini file::

    [server:main]
    use = egg:aiopyramid_ng#uvicorn
    listen = 127.0.0.1:6543

PasteDeploy calls ``runner(wsgi_app, global_conf, **local_conf)``; the runner
wraps the application (a Router or a whole filter pipeline) with
:func:`aiopyramid_ng.asgi.make_asgi_app` and serves it in the calling
thread until the server stops.  ``pserve`` owns the process: it has already
configured logging from the ini file, so no runner touches logging
configuration, and ``pserve --reload`` restarts the whole process, so the
runners need nothing special to support it.

Every option arrives as a string.  The runners check each one before serving
and raise :class:`~pyramid.exceptions.ConfigurationError` naming the option,
the bad value and the fix; an option a runner does not know is an error too,
never silently ignored.  The options each runner accepts are listed by
:func:`uvicorn_options`, :data:`HYPERCORN_OPTIONS` and :data:`DAPHNE_OPTIONS`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from pyramid.exceptions import ConfigurationError
from pyramid.settings import falsey, truthy

from .asgi import make_asgi_app
from .types import WSGIApp

__all__ = [
    "DAPHNE_OPTIONS",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "HYPERCORN_OPTIONS",
    "Option",
    "daphne_kwargs",
    "daphne_runner",
    "hypercorn_config",
    "hypercorn_runner",
    "parse_addresses",
    "parse_options",
    "uvicorn_config",
    "uvicorn_options",
    "uvicorn_runner",
]

#: Where a runner listens when the section sets neither ``listen`` nor ``host``/``port``.
DEFAULT_HOST = "127.0.0.1"
#: The port a runner listens on when the section sets neither ``listen`` nor ``port``.
DEFAULT_PORT = 8000

Address = tuple[str, int]


@dataclass(frozen=True)
class Option:
    """How to read one server option from its ini string.

    ``convert`` returns the typed value or raises :class:`ValueError`;
    ``expected`` describes a valid value and ``example`` is one, both used in
    the error message.
    """

    convert: Callable[[str], Any]
    expected: str
    example: str


def _boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in truthy:
        return True
    if lowered in falsey:
        return False
    raise ValueError(value)


def _seconds(value: str) -> float:
    seconds = float(value)
    if not seconds >= 0:  # also rejects nan
        raise ValueError(value)
    return seconds


def _whole_seconds(value: str) -> int:
    seconds = int(value)
    if seconds < 0:
        raise ValueError(value)
    return seconds


def _text(value: str) -> str:
    return value.strip()


def _one_of(choices: Mapping[str, object], *, import_path: bool = False) -> Callable[[str], str]:
    def convert(value: str) -> str:
        value = value.strip()
        if value.lower() in choices:
            return value.lower()
        if import_path and ":" in value:
            return value
        raise ValueError(value)

    return convert


def _choice_text(choices: Mapping[str, object], *, import_path: bool = False) -> str:
    names = ", ".join(sorted(choices))
    return f"one of {names}" + (" or a 'module:attribute' import path" if import_path else "")


BOOLEAN = "true or false"
SECONDS = "a number of seconds, 0 or more"

#: Options that ``listen``, ``host`` and ``port`` cover, accepted by every runner.
ADDRESS_OPTIONS = frozenset({"listen", "host", "port"})

#: Hints for options people carry over from other servers' configuration.
_HINTS = {
    "workers": "pserve runs a single server process; for several processes run "
    "`uvicorn package.asgi:app --workers N` or gunicorn with uvicorn_worker.UvicornWorker "
    "(see the deployment documentation)",
    "reload": "run `pserve --reload development.ini` instead",
    "bind": "write `listen = host:port`",
}


def uvicorn_options() -> dict[str, Option]:
    """Return the uvicorn options, with uvicorn's own lists of valid choices."""
    # Imported here so that using one runner never imports the other servers.
    from uvicorn.config import HTTP_PROTOCOLS, LOG_LEVELS, LOOP_FACTORIES, WS_PROTOCOLS

    return {
        "log_level": Option(_one_of(LOG_LEVELS), _choice_text(LOG_LEVELS), "info"),
        "proxy_headers": Option(_boolean, BOOLEAN, "true"),
        "forwarded_allow_ips": Option(
            _text,
            "a comma-separated list of addresses, networks or *",
            "127.0.0.1,10.0.0.0/8",
        ),
        "root_path": Option(_text, "a URL path prefix", "/app"),
        "timeout_keep_alive": Option(_whole_seconds, "a whole number of seconds, 0 or more", "5"),
        "http": Option(
            _one_of(HTTP_PROTOCOLS, import_path=True),
            _choice_text(HTTP_PROTOCOLS, import_path=True),
            "h11",
        ),
        "ws": Option(
            _one_of(WS_PROTOCOLS, import_path=True),
            _choice_text(WS_PROTOCOLS, import_path=True),
            "websockets",
        ),
        "loop": Option(
            _one_of(LOOP_FACTORIES, import_path=True),
            _choice_text(LOOP_FACTORIES, import_path=True),
            "asyncio",
        ),
    }


#: The daphne options; ``proxy_headers`` trusts ``X-Forwarded-For``,
#: ``X-Forwarded-Port`` and ``X-Forwarded-Proto`` from any client, so enable
#: it only behind a proxy that sets them.
DAPHNE_OPTIONS: dict[str, Option] = {
    "root_path": Option(_text, "a URL path prefix", "/app"),
    "proxy_headers": Option(_boolean, BOOLEAN, "true"),
    "http_timeout": Option(_seconds, SECONDS, "120"),
}

#: The hypercorn options.
HYPERCORN_OPTIONS: dict[str, Option] = {
    "root_path": Option(_text, "a URL path prefix", "/app"),
    "keep_alive_timeout": Option(_seconds, SECONDS, "5"),
    "graceful_timeout": Option(_seconds, SECONDS, "3"),
}


def _fail(server: str, message: str) -> ConfigurationError:
    return ConfigurationError(f"In the server section using egg:aiopyramid_ng#{server}: {message}")


def parse_options(
    server: str, local_conf: Mapping[str, str], options: Mapping[str, Option]
) -> dict[str, Any]:
    """Convert the server options of ``local_conf`` (the address ones excluded).

    Returns the typed values by option name.

    :raises ConfigurationError: for an unknown option or a value that does not
        convert.
    """
    parsed: dict[str, Any] = {}
    for name, raw in local_conf.items():
        if name in ADDRESS_OPTIONS:
            continue
        option = options.get(name)
        if option is None:
            known = ", ".join(sorted(ADDRESS_OPTIONS | set(options)))
            hint = _HINTS.get(name, f"remove it or use one of: {known}")
            raise _fail(server, f"unknown option {name!r}; {hint}.")
        try:
            value = option.convert(raw)
        except ValueError:
            raise _fail(
                server,
                f"{name} = {raw!r} is not valid; expected {option.expected}, "
                f"for example `{name} = {option.example}`.",
            ) from None
        parsed[name] = value
    return parsed


def _address(server: str, option: str, host: str, port: str) -> Address:
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "*":
        host = "0.0.0.0"
    if not host:
        raise _fail(server, f"{option} has an empty host; write e.g. `listen = 127.0.0.1:6543`.")
    try:
        number = int(port)
    except ValueError:
        number = 0
    if not 0 < number < 65536:
        raise _fail(
            server,
            f"{option} has port {port.strip()!r}, not a whole number from 1 to 65535; "
            "write e.g. `listen = 127.0.0.1:6543`.",
        )
    return host, number


def parse_addresses(server: str, local_conf: Mapping[str, str], *, many: bool) -> list[Address]:
    """Read where to listen: ``listen = host:port [host:port ...]`` or ``host``/``port``.

    ``listen`` takes space-separated ``host:port`` pairs (an IPv6 host in
    brackets, ``*`` for every IPv4 interface); several only when ``many``.
    Without ``listen``, ``host`` defaults to :data:`DEFAULT_HOST` and
    ``port`` to :data:`DEFAULT_PORT`.

    :raises ConfigurationError: for a malformed address, ``listen`` mixed with
        ``host``/``port``, or several addresses when ``many`` is false.
    """
    listen = local_conf.get("listen")
    if listen is None:
        host = local_conf.get("host", DEFAULT_HOST)
        port = local_conf.get("port", str(DEFAULT_PORT))
        return [_address(server, f"host = {host!r}, port = {port!r}", host, port)]
    if "host" in local_conf or "port" in local_conf:
        raise _fail(
            server,
            "set either `listen = host:port` or `host` and `port`, not both; drop one.",
        )
    entries = listen.split()
    if not entries:
        raise _fail(server, "listen is empty; write e.g. `listen = 127.0.0.1:6543`.")
    if len(entries) > 1 and not many:
        raise _fail(
            server,
            f"listen = {listen!r} names {len(entries)} addresses but {server} serves one; "
            "keep one, or use the hypercorn runner, which listens on several.",
        )
    addresses = []
    for entry in entries:
        host, colon, port = entry.rpartition(":")
        if not colon:
            raise _fail(
                server,
                f"listen = {entry!r} is not host:port; write e.g. `listen = 127.0.0.1:6543` "
                "(IPv6: `listen = [::1]:6543`).",
            )
        addresses.append(_address(server, f"listen = {entry!r}", host, port))
    return addresses


def uvicorn_config(wsgi_app: WSGIApp, local_conf: Mapping[str, str]) -> Any:
    """Build the :class:`uvicorn.Config` that serves ``wsgi_app`` as ``local_conf`` says.

    :raises ConfigurationError: for a bad option (see :func:`parse_options`).
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


def uvicorn_runner(wsgi_app: WSGIApp, global_conf: Mapping[str, str], **local_conf: str) -> None:
    """Serve ``wsgi_app`` with uvicorn until it stops (``egg:aiopyramid_ng#uvicorn``).

    Options: ``listen`` (one address) or ``host``/``port``, and
    :func:`uvicorn_options`.
    """
    import uvicorn

    uvicorn.Server(uvicorn_config(wsgi_app, local_conf)).run()


def _bind(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def hypercorn_config(local_conf: Mapping[str, str]) -> Any:
    """Build the :class:`hypercorn.config.Config` that ``local_conf`` describes.

    :raises ConfigurationError: for a bad option (see :func:`parse_options`).
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


def daphne_kwargs(local_conf: Mapping[str, str]) -> dict[str, Any]:
    """Return the keyword arguments of :class:`daphne.server.Server` that ``local_conf`` describes.

    Building them does not import :mod:`daphne.server`, which installs
    Twisted's asyncio reactor as a side effect of being imported.

    :raises ConfigurationError: for a bad option (see :func:`parse_options`).
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
