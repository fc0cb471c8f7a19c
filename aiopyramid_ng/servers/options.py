"""Reading a ``pserve`` server section, for every runner: addresses and options, checked.

Every option arrives as a string.  :func:`parse_options` converts each one
and raises :class:`~pyramid.exceptions.ConfigurationError` naming the
option, the bad value and the fix; an option a runner does not know is an
error too, never silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pyramid.exceptions import ConfigurationError

from ..exceptions import see
from ..settings import boolean

__all__ = [
    "BOOLEAN",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "SECONDS",
    "Address",
    "Option",
    "boolean",
    "choice_text",
    "one_of",
    "parse_addresses",
    "parse_options",
    "seconds",
    "text",
    "whole_seconds",
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


def seconds(value: str) -> float:
    seconds = float(value)
    if not seconds >= 0:  # also rejects nan
        raise ValueError(value)
    return seconds


def whole_seconds(value: str) -> int:
    seconds = int(value)
    if seconds < 0:
        raise ValueError(value)
    return seconds


def text(value: str) -> str:
    return value.strip()


def one_of(choices: Mapping[str, object], *, import_path: bool = False) -> Callable[[str], str]:
    def convert(value: str) -> str:
        value = value.strip()
        if value.lower() in choices:
            return value.lower()
        if import_path and ":" in value:
            return value
        raise ValueError(value)

    return convert


def choice_text(choices: Mapping[str, object], *, import_path: bool = False) -> str:
    names = ", ".join(sorted(choices))
    return f"one of {names}" + (" or a 'module:attribute' import path" if import_path else "")


BOOLEAN = "true or false"
SECONDS = "a number of seconds, 0 or more"

#: Options that ``listen``, ``host`` and ``port`` cover, accepted by every runner.
ADDRESS_OPTIONS = frozenset({"listen", "host", "port"})

#: Where the docs describe each runner's own options.
_OPTION_DOCS = {
    "uvicorn": see("runner-uvicorn"),
    "hypercorn": see("runner-hypercorn"),
    "daphne": see("runner-daphne"),
}
#: Where the docs describe what every runner shares: the address options, and
#: the options refused because they belong to the process.
_RUNNERS_DOCS = see("deployment-runners")

#: Hints for options people carry over from other servers' configuration,
#: each with the docs reference that explains it.
_HINTS = {
    "workers": (
        "pserve runs a single server process; for several processes run "
        "`uvicorn package.asgi:app --workers N` or gunicorn with uvicorn_worker.UvicornWorker",
        see("deployment-gunicorn"),
    ),
    "reload": ("run `pserve --reload development.ini` instead", _RUNNERS_DOCS),
    "bind": ("write `listen = host:port`", _RUNNERS_DOCS),
}


def _fail(server: str, message: str, docs: str = _RUNNERS_DOCS) -> ConfigurationError:
    return ConfigurationError(
        f"In the server section using egg:aiopyramid_ng#{server}: {message} {docs}"
    )


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
            if name in _HINTS:
                hint, docs = _HINTS[name]
                raise _fail(server, f"unknown option {name!r}; {hint}.", docs)
            raise _fail(
                server,
                f"unknown option {name!r}; remove it or use one of: {known}.",
                _OPTION_DOCS.get(server, _RUNNERS_DOCS),
            )
        try:
            value = option.convert(raw)
        except ValueError:
            raise _fail(
                server,
                f"{name} = {raw!r} is not valid; expected {option.expected}, "
                f"for example `{name} = {option.example}`.",
                _OPTION_DOCS.get(server, _RUNNERS_DOCS),
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
