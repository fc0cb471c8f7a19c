"""The pserve server runners, and the example application under gunicorn.

Each server runs ``pserve`` (or gunicorn) in a subprocess on a free port of
127.0.0.1, started once per module and always stopped; its output goes to a
file the tests read.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import coverage
import httpx
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from pyramid.exceptions import ConfigurationError
from websockets.asyncio.client import connect

from aiopyramid_ng.asgi import ASGIApplication
from aiopyramid_ng.exceptions import see
from aiopyramid_ng.servers.daphne import DAPHNE_OPTIONS, daphne_kwargs
from aiopyramid_ng.servers.hypercorn import HYPERCORN_OPTIONS, hypercorn_config
from aiopyramid_ng.servers.options import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    EQUIVALENTS,
    Option,
    parse_addresses,
    parse_options,
)
from aiopyramid_ng.servers.uvicorn import uvicorn_config, uvicorn_options
from tests.support import REPO_ROOT
from tests.support.servers import HOST, free_port, serving, wait_until

EXAMPLE = REPO_ROOT / "examples" / "hello"
BIN = Path(sys.executable).parent
#: A format no server uses on its own: a line in it went through the ini's logging.
LOG_FORMAT = "ini-format %(levelname)s [%(name)s] %(message)s"
#: Bounds the waits for a subprocess, so a broken server fails the test instead of hanging it.
PATIENCE = 60.0


def child_coverage_env() -> dict[str, str]:
    """Make a child Python process measure coverage into files pytest-cov combines."""
    current = coverage.Coverage.current()
    if current is None:
        return {}
    config = copy.copy(current.config)
    config.parallel = True
    config.data_file = os.path.abspath(config.data_file)
    # The runners' worker processes are forked through multiprocessing,
    # whose coverage support measures each one with a Coverage of its own;
    # that one reads the configuration file, and its data file from
    # COVERAGE_FILE, which keeps it out of the server's working directory.
    config.concurrency = [*config.concurrency, "multiprocessing"]
    return {"COVERAGE_PROCESS_CONFIG": config.serialize(), "COVERAGE_FILE": config.data_file}


def write_ini(directory: Path, server: str, app_use: str = "egg:hello", settings: str = "") -> Path:
    """Write an ini file serving ``app_use`` with the ``[server:main]`` lines ``server``.

    ``settings`` are more ``[app:main]`` lines.
    """
    path = directory / "test.ini"
    path.write_text(
        f"""\
[app:main]
use = {app_use}
{settings}

[server:main]
{server}

[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = INFO
handlers = console

[handler_console]
class = StreamHandler
args = (sys.stderr,)
formatter = generic

[formatter_generic]
format = {LOG_FORMAT}
"""
    )
    return path


class ServerProcess:
    """A server command running in its own process group, its output in a file."""

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path):
        self.process = process
        self.log_path = log_path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until(self, check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited while waiting for {what}:\n{self.output()}")
            if check():
                return
            time.sleep(0.05)
        pytest.fail(f"gave up waiting for {what}:\n{self.output()}")

    def wait_for_output(self, text: str) -> None:
        self.wait_until(lambda: text in self.output(), repr(text))


def answers(url: str) -> Callable[[], bool]:
    """A readiness check: does ``url`` answer 200 now?"""

    def check() -> bool:
        try:
            return httpx.get(url, timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    return check


@contextmanager
def server_process(
    args: list[str], directory: Path, url: str, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """Run ``args`` in ``directory`` for the block, which starts once ``url`` answers 200.

    On the way out its whole process group is interrupted (Ctrl+C); its exit
    status is then ``process.returncode``.
    """
    log_path = directory / "output.log"
    with serving(
        args,
        log_path,
        answers(url),
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        cwd=directory,
        group=True,
        stop_signal=signal.SIGINT,
        patience=PATIENCE,
    ) as process:
        yield ServerProcess(process, log_path)


# --- option parsing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("conf", "many", "expected"),
    [
        ({}, False, [(DEFAULT_HOST, DEFAULT_PORT)]),
        ({"port": "6543"}, False, [(DEFAULT_HOST, 6543)]),
        ({"host": "0.0.0.0", "port": "80"}, False, [("0.0.0.0", 80)]),
        ({"listen": "localhost:6543"}, False, [("localhost", 6543)]),
        ({"listen": "*:6543"}, False, [("0.0.0.0", 6543)]),
        ({"listen": "[::1]:6543"}, False, [("::1", 6543)]),
        ({"listen": " 127.0.0.1:1  [::]:2 "}, True, [("127.0.0.1", 1), ("::", 2)]),
    ],
)
def test_addresses(conf: dict[str, str], many: bool, expected: list[tuple[str, int]]) -> None:
    assert parse_addresses("hypercorn", conf, many=many) == expected


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"listen": "127.0.0.1:1 127.0.0.1:2"}, "names 2 addresses but uvicorn serves one"),
        ({"listen": "6543"}, "listen = '6543' is not host:port"),
        ({"listen": ":6543"}, "has an empty host"),
        ({"listen": "localhost:http"}, "port 'http', not a whole number from 1 to 65535"),
        ({"listen": "localhost:70000"}, "port '70000'"),
        ({"listen": "   "}, "listen is empty"),
        ({"listen": "localhost:1", "port": "2"}, "not both"),
        ({"port": "0"}, "port '0'"),
    ],
)
def test_bad_addresses(conf: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match="egg:aiopyramid_ng#uvicorn") as caught:
        parse_addresses("uvicorn", conf, many=False)
    assert message in str(caught.value)


def test_options_convert_to_the_server_types() -> None:
    parsed = parse_options(
        "uvicorn",
        {
            "listen": "127.0.0.1:1",
            "log_level": "WARNING",
            "proxy_headers": "Off",
            "forwarded_allow_ips": " 10.0.0.1,10.0.0.2 ",
            "root_path": "/app",
            "timeout_keep_alive": "7",
            "http": "h11",
            "ws": "none",
            "loop": "asyncio",
        },
        uvicorn_options(),
    )
    assert parsed == {
        "log_level": "warning",
        "proxy_headers": False,
        "forwarded_allow_ips": "10.0.0.1,10.0.0.2",
        "root_path": "/app",
        "timeout_keep_alive": 7,
        "http": "h11",
        "ws": "none",
        "loop": "asyncio",
    }


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("proxy_headers", "maybe", "expected true or false, for example `proxy_headers = true`"),
        ("timeout_keep_alive", "1.5", "expected a whole number of seconds"),
        ("timeout_keep_alive", "-1", "expected a whole number of seconds"),
        ("log_level", "loud", "expected one of critical, debug, error, info, trace, warning"),
        ("http", "h3", "or a 'module:attribute' import path"),
    ],
)
def test_bad_option_values_name_the_option_and_the_fix(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_options("uvicorn", {name: value}, uvicorn_options())
    assert f"{name} = {value!r} is not valid" in str(caught.value)
    assert message in str(caught.value)


def test_an_import_path_is_left_to_the_server() -> None:
    parsed = parse_options("uvicorn", {"loop": "mypackage.loops:factory"}, uvicorn_options())
    assert parsed == {"loop": "mypackage.loops:factory"}


def test_unknown_options_are_errors() -> None:
    with pytest.raises(ConfigurationError, match="unknown option 'threads'; remove it or use"):
        parse_options("daphne", {"threads": "4"}, {})
    with pytest.raises(ConfigurationError, match=r"run `pserve --reload development\.ini`"):
        uvicorn_config(lambda environ, start_response: [], {"reload": "true"})
    with pytest.raises(ConfigurationError, match=r"or `uds = /path/app\.sock` for a unix socket"):
        hypercorn_config({"bind": "unix:/tmp/app.sock"})


def runner_options() -> dict[str, dict[str, Option]]:
    return {"uvicorn": uvicorn_options(), "hypercorn": HYPERCORN_OPTIONS, "daphne": DAPHNE_OPTIONS}


def test_the_equivalents_table_holds_exactly_every_runners_options() -> None:
    for runner, options in runner_options().items():
        names = [entry[runner] for entry in EQUIVALENTS if runner in entry]
        assert sorted(names) == sorted(options), runner


@pytest.mark.parametrize(
    ("server", "name", "message"),
    [
        (
            "daphne",
            "workers",
            "daphne has no equivalent; egg:aiopyramid_ng#hypercorn and "
            "egg:aiopyramid_ng#uvicorn have it. Remove it, or use another runner.",
        ),
        ("daphne", "backlog", "egg:aiopyramid_ng#hypercorn and egg:aiopyramid_ng#uvicorn have"),
        ("hypercorn", "limit_concurrency", "; egg:aiopyramid_ng#uvicorn has it."),
        ("hypercorn", "websocket_timeout", "; egg:aiopyramid_ng#daphne has it."),
        (
            "hypercorn",
            "ws_max_size",
            "hypercorn calls it 'websocket_max_message_size': write "
            "`websocket_max_message_size = ...` instead.",
        ),
        ("daphne", "ws_ping_interval", "daphne calls it 'ping_interval'"),
        ("uvicorn", "graceful_timeout", "uvicorn calls it 'timeout_graceful_shutdown'"),
        ("uvicorn", "keep_alive_timeout", "uvicorn calls it 'timeout_keep_alive'"),
    ],
)
def test_an_option_of_another_runner_names_its_equivalent_or_the_runners_with_it(
    server: str, name: str, message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_options(server, {name: "4"}, runner_options()[server])
    assert f"egg:aiopyramid_ng#{server}: unknown option {name!r}; " in str(caught.value)
    assert message in str(caught.value)
    assert "Its options: " in str(caught.value)
    assert str(caught.value).endswith(see(f"runner-{server}"))


def test_new_uvicorn_options_reach_its_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certificate = tmp_path / "both.pem"
    trustme.CA().issue_cert(HOST).private_key_and_cert_chain_pem.write_to_path(str(certificate))
    config = uvicorn_config(
        lambda environ, start_response: [],
        {
            "workers": "3",
            "ssl_certfile": f" {certificate} ",
            "limit_concurrency": "100",
            "backlog": "64",
            "timeout_graceful_shutdown": "9",
            "ws_max_size": "1024",
            "ws_ping_interval": "None",
            "ws_ping_timeout": "2.5",
            "access_log": "no",
        },
    )
    assert config.workers == 3
    assert (config.ssl_certfile, config.ssl_keyfile) == (str(certificate), None)
    assert (config.limit_concurrency, config.backlog, config.timeout_graceful_shutdown) == (
        100,
        64,
        9,
    )
    assert (config.ws_max_size, config.ws_ping_interval, config.ws_ping_timeout) == (
        1024,
        None,
        2.5,
    )
    assert config.access_log is False
    assert config.is_ssl
    # One worker unless the ini says otherwise, whatever the environment says.
    monkeypatch.setenv("WEB_CONCURRENCY", "5")
    assert uvicorn_config(lambda environ, start_response: [], {}).workers == 1


def test_new_hypercorn_options_reach_its_config(tmp_path: Path) -> None:
    certificate = trustme.CA().issue_cert(HOST)
    certificate.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    certificate.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    config = hypercorn_config(
        {
            "workers": "2",
            "ssl_certfile": str(tmp_path / "cert.pem"),
            "ssl_keyfile": str(tmp_path / "key.pem"),
            "backlog": "50",
            "websocket_max_message_size": "2048",
            "websocket_ping_interval": "15",
            "access_log": "false",
        }
    )
    assert (config.workers, config.backlog, config.websocket_max_message_size) == (2, 50, 2048)
    assert (config.certfile, config.keyfile) == (
        str(tmp_path / "cert.pem"),
        str(tmp_path / "key.pem"),
    )
    assert config.ssl_enabled
    assert config.websocket_ping_interval == 15.0
    assert config.accesslog is None
    assert hypercorn_config({"websocket_ping_interval": "none"}).websocket_ping_interval is None


def test_new_daphne_options_reach_its_server(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    both = tmp_path / "a:b.pem"  # a colon, which Twisted's endpoint syntax escapes
    trustme.CA().issue_cert(HOST).private_key_and_cert_chain_pem.write_to_path(str(both))
    kwargs = daphne_kwargs(
        {
            "listen": "[::1]:8443",
            "ssl_certfile": str(both),
            "websocket_timeout": "none",
            "ping_interval": "10",
            "ping_timeout": "5",
            "access_log": "true",
        }
    )
    quoted = str(both).replace(":", r"\:")
    assert kwargs.pop("endpoints") == [
        rf"ssl:port=8443:interface=\:\:1:privateKey={quoted}:certKey={quoted}"
    ]
    logger = kwargs.pop("action_logger")
    assert kwargs == {"websocket_timeout": -1, "ping_interval": 10.0, "ping_timeout": 5.0}
    with caplog.at_level(logging.INFO, logger="daphne.access"):
        logger(
            "http",
            "complete",
            {"client": "127.0.0.1:5", "method": "GET", "path": "/x", "status": 200, "size": 12},
        )
    assert [(record.name, record.levelname) for record in caplog.records] == [
        ("daphne.access", "INFO")
    ]
    assert '"GET /x" 200 12' in caplog.records[0].getMessage()
    assert "action_logger" not in daphne_kwargs({"access_log": "false"})
    assert daphne_kwargs({"websocket_timeout": "30"})["websocket_timeout"] == 30.0


@pytest.mark.parametrize(
    ("server", "name", "value", "expected"),
    [
        (
            "uvicorn",
            "workers",
            "0",
            "expected a whole number, 1 or more, for example `workers = 4`",
        ),
        ("uvicorn", "workers", "two", "expected a whole number, 1 or more"),
        ("uvicorn", "limit_concurrency", "-5", "expected a whole number, 1 or more"),
        ("uvicorn", "backlog", "1.5", "expected a whole number, 1 or more"),
        ("uvicorn", "timeout_graceful_shutdown", "-1", "expected a whole number of seconds"),
        ("uvicorn", "ws_max_size", "0", "expected a number of bytes, 1 or more"),
        ("uvicorn", "ws_ping_interval", "0", "greater than 0, or none to send no pings"),
        ("uvicorn", "ws_ping_timeout", "soon", "greater than 0, or none to wait for pongs"),
        ("uvicorn", "access_log", "maybe", "expected true or false"),
        (
            "uvicorn",
            "ssl_certfile",
            "/nonexistent/cert.pem",
            "expected the path of an existing file, for example "
            "`ssl_certfile = /etc/ssl/certs/app.pem`",
        ),
        ("uvicorn", "ssl_keyfile", "/nonexistent/key.pem", "the path of an existing file"),
        ("hypercorn", "workers", "-2", "expected a whole number, 1 or more"),
        ("hypercorn", "backlog", "many", "expected a whole number, 1 or more"),
        ("hypercorn", "websocket_max_message_size", "1e6", "a number of bytes"),
        ("hypercorn", "websocket_ping_interval", "nan", "greater than 0, or none"),
        ("hypercorn", "access_log", "2", "expected true or false"),
        ("hypercorn", "ssl_certfile", "/nonexistent", "the path of an existing file"),
        ("daphne", "websocket_timeout", "-1", "0 or more, or none for no limit"),
        ("daphne", "ping_interval", "0", "expected a number of seconds greater than 0"),
        ("daphne", "ping_timeout", "later", "expected a number of seconds greater than 0"),
        ("daphne", "access_log", "loud", "expected true or false"),
        ("daphne", "ssl_keyfile", "/nonexistent", "the path of an existing file"),
    ],
)
def test_bad_values_of_the_new_options_name_the_option(
    server: str, name: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_options(server, {name: value}, runner_options()[server])
    message = str(caught.value)
    assert f"egg:aiopyramid_ng#{server}: {name} = {value!r} is not valid; expected " in message
    assert expected in message
    assert message.endswith(see(f"runner-{server}"))


# --- unix sockets and TLS, checked at start-up -----------------------------------------------


def test_a_unix_socket_reaches_each_server(tmp_path: Path) -> None:
    path = str(tmp_path / "a:b.sock")
    config = uvicorn_config(lambda environ, start_response: [], {"uds": f" {path} "})
    assert config.uds == path
    assert hypercorn_config({"uds": path}).bind == [f"unix:{path}"]
    assert daphne_kwargs({"uds": path})["endpoints"] == ["unix:" + path.replace(":", r"\:")]


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        (
            {"uds": "/tmp/app.sock", "listen": "127.0.0.1:1"},
            "uds = '/tmp/app.sock' and listen = '127.0.0.1:1' both say where to listen; keep "
            "`uds` for a unix socket or `listen = host:port` for TCP, not both.",
        ),
        (
            {"uds": "/tmp/app.sock", "host": "0.0.0.0", "port": "80"},
            "and host = '0.0.0.0', port = '80' both say where to listen",
        ),
        ({"uds": " "}, "uds is empty; write e.g. `uds = %(here)s/app.sock`."),
        ({"uds": "/tmp/" + "s" * 103 + ".sock"}, "is 113 bytes long, more than the 107"),
        (
            {"uds": "/nonexistent/app.sock"},
            "uds = '/nonexistent/app.sock' is in '/nonexistent', which does not exist",
        ),
    ],
)
def test_bad_unix_sockets_are_refused(conf: dict[str, str], message: str) -> None:
    for check in (
        lambda: uvicorn_config(lambda environ, start_response: [], conf),
        lambda: hypercorn_config(conf),
        lambda: daphne_kwargs(conf),
    ):
        with pytest.raises(ConfigurationError) as caught:
            check()
        assert message in str(caught.value)
        assert str(caught.value).endswith(see("runner-unix-socket"))


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Certificates and keys, good and bad, by name."""
    directory = tmp_path_factory.mktemp("pems")
    authority = trustme.CA()
    good, other = authority.issue_cert(HOST), authority.issue_cert(HOST)
    paths = {name: directory / f"{name}.pem" for name in ("cert", "key", "other-key", "junk")}
    good.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    good.private_key_pem.write_to_path(str(paths["key"]))
    other.private_key_pem.write_to_path(str(paths["other-key"]))
    paths["junk"].write_text("not a certificate\n")
    key = serialization.load_pem_private_key(good.private_key_pem.bytes(), password=None)
    paths["encrypted-key"] = directory / "encrypted-key.pem"
    paths["encrypted-key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return paths


@pytest.mark.parametrize(
    ("files", "servers", "message"),
    [
        (
            {"ssl_keyfile": "key"},
            ("uvicorn", "hypercorn", "daphne"),
            "is set without ssl_certfile; add `ssl_certfile = /path/cert.pem`",
        ),
        (
            {"ssl_certfile": "cert"},
            ("hypercorn",),
            "is set without ssl_keyfile, and hypercorn reads the private key from a file of its "
            "own; add `ssl_keyfile = /path/key.pem`.",
        ),
        (
            {"ssl_certfile": "cert"},
            ("uvicorn", "daphne"),
            "cannot load the certificate and key of ssl_certfile = ",
        ),
        (
            {"ssl_certfile": "cert", "ssl_keyfile": "other-key"},
            ("uvicorn", "hypercorn", "daphne"),
            "KEY_VALUES_MISMATCH",
        ),
        (
            {"ssl_certfile": "junk", "ssl_keyfile": "key"},
            ("uvicorn", "hypercorn", "daphne"),
            "ssl_certfile must hold the PEM certificate chain",
        ),
        (
            {"ssl_certfile": "cert", "ssl_keyfile": "encrypted-key"},
            ("uvicorn", "hypercorn", "daphne"),
            "is encrypted, and the runners take no password",
        ),
    ],
)
def test_bad_certificates_stop_the_runner_at_start_up(
    files: dict[str, str], servers: tuple[str, ...], message: str, pems: dict[str, Path]
) -> None:
    conf = {option: str(pems[name]) for option, name in files.items()}
    build: dict[str, Callable[[], object]] = {
        "uvicorn": lambda: uvicorn_config(lambda environ, start_response: [], conf),
        "hypercorn": lambda: hypercorn_config(conf),
        "daphne": lambda: daphne_kwargs(conf),
    }
    for server in servers:
        with pytest.raises(ConfigurationError) as caught:
            build[server]()
        assert f"egg:aiopyramid_ng#{server}: " in str(caught.value)
        assert message in str(caught.value)
        assert str(caught.value).endswith(see("runner-tls"))


def test_daphne_serves_tls_over_tcp_only(pems: dict[str, Path]) -> None:
    conf = {
        "uds": "/tmp/app.sock",
        "ssl_certfile": str(pems["cert"]),
        "ssl_keyfile": str(pems["key"]),
    }
    with pytest.raises(ConfigurationError, match="daphne serves TLS over TCP only") as caught:
        daphne_kwargs(conf)
    assert str(caught.value).endswith(see("runner-tls"))


def test_uvicorn_config_serves_the_wrapped_app_and_keeps_logging() -> None:
    config = uvicorn_config(
        lambda environ, start_response: [], {"listen": "[::1]:6543", "root_path": "/app"}
    )
    assert isinstance(config.app, ASGIApplication)
    assert (config.host, config.port, config.root_path) == ("::1", 6543, "/app")
    assert config.interface == "asgi3"
    assert config.log_config is None


def test_uvicorn_runner_picks_uvloop_and_httptools_by_default() -> None:
    """``pip install aiopyramid_ng[uvicorn]`` brings uvicorn[standard]; the runner uses it."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    config = uvicorn_config(lambda environ, start_response: [], {})
    config.load()
    assert (config.loop, config.http) == ("auto", "auto")
    assert config.http_protocol_class is HttpToolsProtocol
    factory = config.get_loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()
    # An explicit choice still wins.
    classic = uvicorn_config(lambda environ, start_response: [], {"http": "h11", "loop": "asyncio"})
    assert (classic.loop, classic.http) == ("asyncio", "h11")


def test_hypercorn_config_uses_the_ini_loggers() -> None:
    config = hypercorn_config(
        {"listen": "127.0.0.1:1 [::1]:2", "keep_alive_timeout": "2.5", "graceful_timeout": "0"}
    )
    assert config.bind == ["127.0.0.1:1", "[::1]:2"]
    assert (config.keep_alive_timeout, config.graceful_timeout) == (2.5, 0.0)
    log = config.log  # hypercorn builds its loggers here
    assert log.error_logger is logging.getLogger("hypercorn.error")
    assert log.access_logger is logging.getLogger("hypercorn.access")
    assert logging.getLogger("hypercorn.error").handlers == []
    for bad in ("soon", "-1", "nan"):
        with pytest.raises(ConfigurationError, match=f"keep_alive_timeout = '{bad}' is not valid"):
            hypercorn_config({"keep_alive_timeout": bad})


def test_daphne_kwargs() -> None:
    assert daphne_kwargs({"listen": "[::1]:6543", "http_timeout": "30"}) == {
        "endpoints": [r"tcp:port=6543:interface=\:\:1"],
        "http_timeout": 30.0,
    }
    proxied = daphne_kwargs({"port": "6543", "proxy_headers": "true", "root_path": "/app"})
    assert proxied == {
        "endpoints": ["tcp:port=6543:interface=127.0.0.1"],
        "root_path": "/app",
        "proxy_forwarded_address_header": "X-Forwarded-For",
        "proxy_forwarded_port_header": "X-Forwarded-Port",
        "proxy_forwarded_proto_header": "X-Forwarded-Proto",
    }
    with pytest.raises(ConfigurationError, match="daphne serves one"):
        daphne_kwargs({"listen": "127.0.0.1:1 127.0.0.1:2"})


# --- each runner under pserve ---------------------------------------------------------------

#: What each server logs once it listens, through the ini's format.
READY_LINES = {
    "uvicorn": "ini-format INFO [uvicorn.error] Uvicorn running on http://127.0.0.1:",
    "hypercorn": "ini-format INFO [hypercorn.error] Running on http://127.0.0.1:",
    "daphne": "ini-format INFO [daphne.server] Listening on TCP address 127.0.0.1:",
}
#: A typed option of each runner, to show options reach the server.
OPTIONS = {
    "uvicorn": "timeout_keep_alive = 2",
    "hypercorn": "keep_alive_timeout = 2",
    "daphne": "http_timeout = 60",
}


class Runner:
    def __init__(self, name: str, process: ServerProcess, url: str):
        self.name = name
        self.process = process
        self.url = url


@pytest.fixture(scope="module", params=sorted(READY_LINES))
def runner(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runner]:
    name: str = request.param
    directory = tmp_path_factory.mktemp(name)
    port = free_port()
    ini = write_ini(
        directory,
        f"use = egg:aiopyramid_ng#{name}\nlisten = 127.0.0.1:{port}\n{OPTIONS[name]}",
    )
    url = f"http://{HOST}:{port}"
    pserve = [str(BIN / "pserve"), str(ini)]
    with server_process(pserve, directory, url + "/", env=child_coverage_env()) as process:
        yield Runner(name, process, url)
    assert process.process.returncode == 0, process.output()


def test_runner_serves_the_app(runner: Runner) -> None:
    response = httpx.get(runner.url + "/")
    assert response.status_code == 200
    assert response.json() == {"message": "Hello from Pyramid on asyncio", "path": "/"}
    assert httpx.get(runner.url + "/missing").status_code == 404


def test_runner_keeps_the_ini_logging(runner: Runner) -> None:
    httpx.get(runner.url + "/")
    runner.process.wait_for_output("ini-format INFO [hello.views] home page served to 127.0.0.1")
    assert READY_LINES[runner.name] in runner.process.output()


def test_runner_serves_interleaved_requests(runner: Runner) -> None:
    async def load() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=runner.url, timeout=PATIENCE) as client:
            requests = []
            for number in range(20):
                requests += [
                    client.get("/"),
                    client.get("/blocking"),
                    client.post("/api/notes", json={"text": f"{runner.name} {number}"}),
                ]
            return await asyncio.gather(*requests)

    responses = asyncio.run(load())
    assert [response.status_code for response in responses] == [200, 200, 201] * 20
    texts = {note["text"] for note in httpx.get(runner.url + "/api/notes").json()["notes"]}
    assert {f"{runner.name} {number}" for number in range(20)} <= texts


def test_runner_survives_a_client_leaving_a_stream(runner: Runner) -> None:
    with httpx.stream("GET", runner.url + "/events?count=2&interval=60") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        first = next(response.iter_text())
        assert first.startswith("id: 0\n")
    # The stream's second event was a minute away: leaving cancelled it.
    assert httpx.get(runner.url + "/").status_code == 200


def test_runner_serves_websockets(runner: Runner) -> None:
    async def talk(number: int) -> list[str | bytes]:
        async with connect(runner.url.replace("http", "ws", 1) + "/ws/echo") as websocket:
            replies: list[str | bytes] = []
            for word in ("one", "two"):
                await websocket.send(f"{word} {number}")
                replies.append(await websocket.recv())
            return replies

    async def talk_at_once() -> list[list[str | bytes]]:
        return list(await asyncio.gather(*(talk(number) for number in range(10))))

    assert asyncio.run(talk_at_once()) == [[f"one {n}", f"two {n}"] for n in range(10)]


def test_bad_option_stops_pserve_with_a_clear_message(tmp_path: Path) -> None:
    ini = write_ini(tmp_path, "use = egg:aiopyramid_ng#uvicorn\nlisten = 127.0.0.1:99999")
    result = subprocess.run(
        [str(BIN / "pserve"), str(ini)], capture_output=True, text=True, timeout=PATIENCE
    )
    assert result.returncode != 0
    assert "port '99999', not a whole number from 1 to 65535" in result.stderr


# --- pserve --reload --------------------------------------------------------------------------

RELOADABLE = """\
from pyramid.config import Configurator
from pyramid.response import Response


def main(global_config, **settings):
    with Configurator(settings=settings) as config:
        config.include("aiopyramid_ng")
        config.add_route("version", "/")
        config.add_view(lambda request: Response("{version}"), route_name="version")
    return config.make_wsgi_app()
"""


def test_pserve_reload_restarts_the_server_on_a_code_change(tmp_path: Path) -> None:
    module = tmp_path / "reloadable.py"
    module.write_text(RELOADABLE.format(version="first"))
    port = free_port()
    ini = write_ini(
        tmp_path,
        # Under the reloader, one process serves whatever `workers` says.
        f"use = egg:aiopyramid_ng#uvicorn\nlisten = 127.0.0.1:{port}\nworkers = 2",
        app_use="call:reloadable:main",
    )
    url = f"http://{HOST}:{port}/"
    pserve = [str(BIN / "pserve"), "--reload", str(ini)]
    with server_process(pserve, tmp_path, url, env={"PYTHONPATH": str(tmp_path)}) as process:
        assert httpx.get(url).text == "first"

        def reloaded() -> bool:
            # The reloader starts watching a file some time after the worker
            # imported it, and ignores changes made before: edit until it reacts.
            try:
                if httpx.get(url).text == "second":
                    return True
            except httpx.TransportError:
                return False
            module.write_text(RELOADABLE.format(version="second"))
            return False

        process.wait_until(reloaded, "the reloaded application")
    assert "Uvicorn running on" in process.output()
    assert "workers = 2 is ignored under pserve --reload: one process serves." in process.output()


# --- gunicorn with uvicorn workers ------------------------------------------------------------


def worker_pids(master: int) -> set[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return {int(pid) for pid in children}


def two_workers(master: int) -> set[int]:
    """Wait until ``master`` has forked its two workers; return their PIDs."""
    return wait_until(lambda: worker_pids(master), "two workers", lambda pids: len(pids) == 2)


def test_gunicorn_serves_the_example_with_uvicorn_workers(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://{HOST}:{port}"
    gunicorn = [
        str(BIN / "gunicorn"),
        "hello.asgi:app",
        "--workers=2",
        "--worker-class=uvicorn_worker.UvicornWorker",
        f"--bind={HOST}:{port}",
    ]
    env = {"HELLO_INI": str(EXAMPLE / "production.ini")}
    with server_process(gunicorn, tmp_path, url + "/", env=env) as process:
        process.wait_until(lambda: len(worker_pids(process.process.pid)) == 2, "two workers")

        async def load() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=PATIENCE) as client:
                return await asyncio.gather(*(client.get("/blocking") for _ in range(40)))

        responses = asyncio.run(load())
        assert {response.status_code for response in responses} == {200}
        assert {response.json()["pid"] for response in responses} <= worker_pids(
            process.process.pid
        )
