"""pytest plugin of aiopyramid_ng: ``pytest --aiopyramid-ng=include|asgi``.

Registered by the package's ``pytest11`` entry point.  Without the option it
does nothing and imports nothing; with it, :mod:`aiopyramid_ng.pytest_plugin`
patches for the mode chosen.  This module lives outside the package so that
loading the plugin does not import ``aiopyramid_ng`` before coverage (or the
suite) starts.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from aiopyramid_ng.pytest_plugin import Activation

_ACTIVATION: pytest.StashKey[Activation] = pytest.StashKey()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("aiopyramid_ng")
    group.addoption(
        "--aiopyramid-ng",
        action="store",
        dest="aiopyramid_ng",
        choices=("include", "asgi"),
        default=None,
        metavar="include|asgi",
        help=(
            "run the suite with aiopyramid_ng: 'include' adds "
            "config.include('aiopyramid_ng') to every Configurator; 'asgi' also "
            "serves every webtest.TestApp through make_asgi_app(). Default: off."
        ),
    )


def _activate(config: pytest.Config, mode: str | None) -> None:
    if mode is None or _ACTIVATION in config.stash:
        return
    from aiopyramid_ng.pytest_plugin import Activation

    config.stash[_ACTIVATION] = Activation(mode)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> None:
    # Before any conftest imports webtest.TestApp or calls testing.setUp.
    _activate(early_config, getattr(early_config.known_args_namespace, "aiopyramid_ng", None))


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # When the plugin was registered after the initial conftests (-p late,
    # or pytest_plugins in a conftest).
    _activate(config, config.getoption("aiopyramid_ng", None))


def pytest_report_header(config: pytest.Config) -> str | None:
    activation = config.stash.get(_ACTIVATION, None)
    if activation is None:
        return None
    from aiopyramid_ng.pytest_plugin import MODES

    return f"aiopyramid_ng: --aiopyramid-ng={activation.mode} ({MODES[activation.mode]})"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    try:
        return (yield)
    finally:
        # Only once the protocol is over has pytest dropped the test's
        # fixture values: its teardown hooks still hold them.
        activation = item.config.stash.get(_ACTIVATION, None)
        if activation is not None:
            activation.after_test()


def pytest_sessionfinish(session: pytest.Session) -> None:
    activation = session.config.stash.get(_ACTIVATION, None)
    if activation is not None:
        activation.close_test_apps()


def pytest_unconfigure(config: pytest.Config) -> None:
    activation = config.stash.get(_ACTIVATION, None)
    if activation is not None:
        del config.stash[_ACTIVATION]
        activation.undo()
