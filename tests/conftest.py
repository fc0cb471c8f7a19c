"""The suite's fixtures and its marker hook; every shared helper is in ``tests/support``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pyramid import testing
from pyramid.threadlocal import manager

from tests.support import corpus
from tests.support.leaks import LeakCheck


@pytest.fixture
def leak_check() -> Iterator[LeakCheck]:
    yield LeakCheck()


@pytest.fixture(autouse=True)
def _no_stale_threadlocals() -> Iterator[None]:
    # A test that leaves entries on Pyramid's stack would mislead the next one.
    yield
    assert manager.stack == [], "a test left entries on pyramid.threadlocal.manager"
    testing.tearDown()


#: Packages and modules whose every test starts a real server (a subprocess or a thread).
SERVER_MODULES = ("tests.servers.", "tests.test_example")
#: Fixtures that start a real server for the tests that use them.
SERVER_FIXTURES = frozenset({"server", "server_url", "waitress_url"})
#: Modules that drive a real browser, and those that take the longest.
BROWSER_MODULES = ("tests.servers.test_websocket_browser",)
SLOW_MODULES = (
    "tests.test_leaks",
    "tests.servers.test_websocket_many",
    "tests.test_corpus",
    "tests.test_pytest_plugin",
)


def _in(module: str, names: tuple[str, ...]) -> bool:
    """Is ``module`` one of ``names``, or inside one of those ending in a dot (a package)?"""
    return any(module.startswith(name) if name.endswith(".") else module == name for name in names)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests ``servers``, ``browser`` and ``slow`` (see the fast loop in CONTRIBUTING.md)."""
    for item in items:
        found = getattr(item, "module", None)
        module = found.__name__ if found is not None else ""
        fixtures = set(getattr(item, "fixturenames", ()))
        if _in(module, SERVER_MODULES) or fixtures & SERVER_FIXTURES:
            item.add_marker(pytest.mark.servers)
        if _in(module, BROWSER_MODULES):
            item.add_marker(pytest.mark.browser)
        if _in(module, SLOW_MODULES) or _in(module, BROWSER_MODULES):
            item.add_marker(pytest.mark.slow)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Print the compatibility corpus's table when it ran (tests/test_corpus.py)."""
    outcomes = config.stash.get(corpus.OUTCOMES, None)
    if outcomes:
        terminalreporter.write_sep("=", "Pyramid's published applications, their own tests")
        terminalreporter.write_line(corpus.table(outcomes))
