"""Reading a ``pserve`` server section, for every runner: addresses and options, checked.

Every option arrives as a string.  :func:`parse_options` converts each one
and raises :class:`~pyramid.exceptions.ConfigurationError` naming the
option, the bad value and the fix; an option a runner does not know is an
error too, never silently ignored: the message names the runners that have
it (:data:`EQUIVALENTS`).  :func:`parse_unix_socket` and
:func:`parse_addresses` read where to listen, :func:`check_tls` the
certificate and key.
"""

from __future__ import annotations

import os
import ssl
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from pyramid.exceptions import ConfigurationError

from ..exceptions import see
from ..settings import boolean

__all__ = [
    "BOOLEAN",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "EQUIVALENTS",
    "FILE",
    "POSITIVE_SECONDS",
    "SECONDS",
    "WHOLE_NUMBER",
    "Address",
    "Option",
    "boolean",
    "check_tls",
    "choice_text",
    "existing_file",
    "one_of",
    "option_error",
    "or_none",
    "parse_addresses",
    "parse_options",
    "parse_unix_socket",
    "positive_seconds",
    "seconds",
    "text",
    "whole_number",
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


def positive_seconds(value: str) -> float:
    seconds = float(value)
    if not seconds > 0:  # also rejects nan
        raise ValueError(value)
    return seconds


def whole_seconds(value: str) -> int:
    seconds = int(value)
    if seconds < 0:
        raise ValueError(value)
    return seconds


def whole_number(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


def or_none(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """``convert``, where the word ``none`` turns the feature off (None)."""

    def convert_or_none(value: str) -> Any:
        return None if value.strip().lower() == "none" else convert(value)

    return convert_or_none


def existing_file(value: str) -> str:
    path = value.strip()
    if not os.path.isfile(path):
        raise ValueError(value)
    return path


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
POSITIVE_SECONDS = "a number of seconds greater than 0"
WHOLE_NUMBER = "a whole number, 1 or more"
FILE = "the path of an existing file"

#: Where to listen, accepted by every runner: ``listen``, ``host`` and
#: ``port`` for TCP, or ``uds`` for a unix socket.
ADDRESS_OPTIONS = frozenset({"listen", "host", "port", "uds"})
TCP_OPTIONS = ("listen", "host", "port")

#: The longest unix socket path the system takes, in bytes (``sun_path``
#: holds 108 on Linux, 104 on the BSDs and macOS, the terminating NUL included).
MAX_UNIX_PATH = 107 if sys.platform.startswith("linux") else 103

#: Where the docs describe each runner's own options.
_OPTION_DOCS = {
    "uvicorn": see("runner-uvicorn"),
    "hypercorn": see("runner-hypercorn"),
    "daphne": see("runner-daphne"),
}
#: Where the docs describe what every runner shares: the address options, and
#: the options refused because they belong to the process.
_RUNNERS_DOCS = see("deployment-runners")
_UNIX_DOCS = see("runner-unix-socket")
_TLS_DOCS = see("runner-tls")

#: Hints for options people carry over from other servers' configuration,
#: each with the docs reference that explains it.
_HINTS = {
    "reload": ("run `pserve --reload development.ini` instead", _RUNNERS_DOCS),
    "bind": (
        "write `listen = host:port`, or `uds = /path/app.sock` for a unix socket",
        _RUNNERS_DOCS,
    ),
}

#: Each server setting a runner takes, under the name each runner gives it;
#: a runner missing from an entry has no equivalent.  An option a runner does
#: not know is refused naming its equivalent there, or the runners that have
#: it.  A test checks that this table holds exactly every runner's options.
EQUIVALENTS: tuple[Mapping[str, str], ...] = (
    {"uvicorn": "workers", "hypercorn": "workers"},
    {"uvicorn": "ssl_certfile", "hypercorn": "ssl_certfile", "daphne": "ssl_certfile"},
    {"uvicorn": "ssl_keyfile", "hypercorn": "ssl_keyfile", "daphne": "ssl_keyfile"},
    {"uvicorn": "access_log", "hypercorn": "access_log", "daphne": "access_log"},
    {"uvicorn": "root_path", "hypercorn": "root_path", "daphne": "root_path"},
    {"uvicorn": "proxy_headers", "daphne": "proxy_headers"},
    {"uvicorn": "forwarded_allow_ips"},
    {"uvicorn": "timeout_keep_alive", "hypercorn": "keep_alive_timeout"},
    {"uvicorn": "timeout_graceful_shutdown", "hypercorn": "graceful_timeout"},
    {"uvicorn": "backlog", "hypercorn": "backlog"},
    {"uvicorn": "limit_concurrency"},
    {"uvicorn": "ws_max_size", "hypercorn": "websocket_max_message_size"},
    {
        "uvicorn": "ws_ping_interval",
        "hypercorn": "websocket_ping_interval",
        "daphne": "ping_interval",
    },
    {"uvicorn": "ws_ping_timeout", "daphne": "ping_timeout"},
    {"daphne": "websocket_timeout"},
    {"daphne": "http_timeout"},
    {"uvicorn": "log_level"},
    {"uvicorn": "http"},
    {"uvicorn": "ws"},
    {"uvicorn": "loop"},
)


def option_error(server: str, message: str, docs: str = _RUNNERS_DOCS) -> ConfigurationError:
    """The error for a bad server section: ``message`` says what is wrong and the fix.

    ``docs`` is the reference that ends it (``aiopyramid_ng.exceptions.see(label)``).
    """
    return ConfigurationError(
        f"In the server section using egg:aiopyramid_ng#{server}: {message} {docs}"
    )


def _elsewhere(server: str, name: str) -> str | None:
    """Say where option ``name``, unknown to ``server``, lives; None if no runner has it."""
    for names in EQUIVALENTS:
        if name not in names.values():
            continue
        if server in names:
            return f"{server} calls it {names[server]!r}: write `{names[server]} = ...` instead."
        runners = " and ".join(f"egg:aiopyramid_ng#{runner}" for runner in sorted(names))
        which = "has" if len(names) == 1 else "have"
        return (
            f"{server} has no equivalent; {runners} {which} it. Remove it, or use another runner."
        )
    return None


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
                raise option_error(server, f"unknown option {name!r}; {hint}.", docs)
            elsewhere = _elsewhere(server, name)
            if elsewhere is not None:
                raise option_error(
                    server,
                    f"unknown option {name!r}; {elsewhere} Its options: {known}.",
                    _OPTION_DOCS.get(server, _RUNNERS_DOCS),
                )
            raise option_error(
                server,
                f"unknown option {name!r}; remove it or use one of: {known}.",
                _OPTION_DOCS.get(server, _RUNNERS_DOCS),
            )
        try:
            value = option.convert(raw)
        except ValueError:
            raise option_error(
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
        raise option_error(
            server, f"{option} has an empty host; write e.g. `listen = 127.0.0.1:6543`."
        )
    try:
        number = int(port)
    except ValueError:
        number = 0
    if not 0 < number < 65536:
        raise option_error(
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
        raise option_error(
            server,
            "set either `listen = host:port` or `host` and `port`, not both; drop one.",
        )
    entries = listen.split()
    if not entries:
        raise option_error(server, "listen is empty; write e.g. `listen = 127.0.0.1:6543`.")
    if len(entries) > 1 and not many:
        raise option_error(
            server,
            f"listen = {listen!r} names {len(entries)} addresses but {server} serves one; "
            "keep one, or use the hypercorn runner, which listens on several.",
        )
    addresses = []
    for entry in entries:
        host, colon, port = entry.rpartition(":")
        if not colon:
            raise option_error(
                server,
                f"listen = {entry!r} is not host:port; write e.g. `listen = 127.0.0.1:6543` "
                "(IPv6: `listen = [::1]:6543`).",
            )
        addresses.append(_address(server, f"listen = {entry!r}", host, port))
    return addresses


def parse_unix_socket(server: str, local_conf: Mapping[str, str]) -> str | None:
    """Read ``uds = /path/app.sock``: the unix socket to listen on instead of TCP.

    Returns the path, or None when the section sets no ``uds``.

    :raises ConfigurationError: for ``uds`` together with ``listen``,
        ``host`` or ``port``, an empty path, a path longer than a unix socket
        address takes, or one whose directory does not exist.
    """
    raw = local_conf.get("uds")
    if raw is None:
        return None
    tcp = [f"{name} = {local_conf[name]!r}" for name in TCP_OPTIONS if name in local_conf]
    if tcp:
        raise option_error(
            server,
            f"uds = {raw!r} and {', '.join(tcp)} both say where to listen; keep `uds` "
            "for a unix socket or `listen = host:port` for TCP, not both.",
            _UNIX_DOCS,
        )
    path = raw.strip()
    if not path:
        raise option_error(
            server, "uds is empty; write e.g. `uds = %(here)s/app.sock`.", _UNIX_DOCS
        )
    length = len(os.fsencode(path))
    if length > MAX_UNIX_PATH:
        raise option_error(
            server,
            f"uds = {path!r} is {length} bytes long, more than the {MAX_UNIX_PATH} a unix "
            "socket path may have; choose a shorter one, e.g. under /run or /tmp.",
            _UNIX_DOCS,
        )
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise option_error(
            server,
            f"uds = {path!r} is in {directory!r}, which does not exist; create that "
            "directory or choose another path.",
            _UNIX_DOCS,
        )
    return path


class _EncryptedKey(Exception):
    """Raised instead of prompting on the terminal for a private key's password."""


def _no_password() -> NoReturn:
    raise _EncryptedKey


def check_tls(
    server: str, certfile: str | None, keyfile: str | None, *, key_required: bool = False
) -> None:
    """Check ``ssl_certfile`` and ``ssl_keyfile`` before serving: complete, and loadable.

    Both are already paths of existing files (``existing_file``).
    Without ``keyfile`` the private key is read from ``certfile``, unless the
    server needs it in a file of its own (``key_required``).  Loading them
    here once means a wrong file stops ``pserve`` at start-up with a message
    naming the options, rather than each worker failing on its own.

    :raises ConfigurationError: for a key without a certificate, a missing
        key where the server needs one, an encrypted key, or files that do
        not hold a certificate chain and its matching key.
    """
    if certfile is None:
        if keyfile is not None:
            raise option_error(
                server,
                f"ssl_keyfile = {keyfile!r} is set without ssl_certfile; add "
                "`ssl_certfile = /path/cert.pem` (the certificate chain), or remove ssl_keyfile.",
                _TLS_DOCS,
            )
        return
    if keyfile is None and key_required:
        raise option_error(
            server,
            f"ssl_certfile = {certfile!r} is set without ssl_keyfile, and {server} reads the "
            "private key from a file of its own; add `ssl_keyfile = /path/key.pem`.",
            _TLS_DOCS,
        )
    files = f"ssl_certfile = {certfile!r}" + (f", ssl_keyfile = {keyfile!r}" if keyfile else "")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
            certfile, keyfile, password=_no_password
        )
    except _EncryptedKey:
        raise option_error(
            server,
            f"the private key of {files} is encrypted, and the runners take no password; "
            "store it unencrypted (`openssl pkey -in key.pem -out plain.pem`), readable only "
            "by the server's user.",
            _TLS_DOCS,
        ) from None
    except OSError as error:  # ssl.SSLError included
        raise option_error(
            server,
            f"cannot load the certificate and key of {files}: {error}; ssl_certfile must hold "
            "the PEM certificate chain and ssl_keyfile (or, without it, ssl_certfile) its "
            "PEM private key.",
            _TLS_DOCS,
        ) from None
