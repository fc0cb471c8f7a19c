"""Shared fixtures and helpers for the test suite."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pyramid import testing
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.router import Router
from pyramid.threadlocal import manager

from aiopyramid_ng.asgi import ASGIApplication
from aiopyramid_ng.bridge import RequestGreenlet, spawn_greenlet


def make_app(setup: Callable[[Configurator], None], **settings: Any) -> Router:
    """Build an application with aiopyramid_ng included and ``setup`` applied."""
    with Configurator(settings=settings) as config:
        config.include("aiopyramid_ng")
        setup(config)
        return config.make_wsgi_app()


def make_asgi(setup: Callable[[Configurator], None]) -> ASGIApplication:
    """Build an application as :func:`make_app` does, through ``config.make_asgi_app()``."""
    with Configurator() as config:
        config.include("aiopyramid_ng")
        setup(config)
        return config.make_asgi_app()


def make_one_view_app(view: Callable[..., Any], **settings: Any) -> Router:
    """Build an application, as :func:`make_app` does, that serves ``view`` alone at ``/``."""

    def setup(config: Configurator) -> None:
        config.add_route("view", "/")
        config.add_view(view, route_name="view")

    return make_app(setup, **settings)


async def get_response(app: Router, path: str = "/", **kwargs: Any) -> Any:
    """Call ``app`` as the ASGI adapter does: inside a request greenlet on this loop."""
    request = Request.blank(path, **kwargs)
    return await spawn_greenlet(request.get_response, app)


def request_greenlets() -> list[RequestGreenlet]:
    """Request greenlets that are started and not finished: suspended forever if leaked."""
    gc.collect()
    return [obj for obj in gc.get_objects() if isinstance(obj, RequestGreenlet) and obj]


class LeakCheck:
    """Snapshot of everything a request could leave behind."""

    def __init__(self) -> None:
        self.greenlets = len(request_greenlets())
        self.threads = threading.active_count()
        self.stack = list(manager.stack)

    def assert_clean(
        self, loop: asyncio.AbstractEventLoop | None = None, max_new_threads: int = 0
    ) -> None:
        assert len(request_greenlets()) == self.greenlets, "request greenlets leaked"
        assert threading.active_count() <= self.threads + max_new_threads, "threads leaked"
        assert manager.stack == self.stack, "threadlocal entries leaked"
        if loop is not None:
            pending = [t for t in asyncio.all_tasks(loop) if t is not asyncio.current_task(loop)]
            assert pending == [], "tasks leaked"


@pytest.fixture
def leak_check() -> Iterator[LeakCheck]:
    yield LeakCheck()


@pytest.fixture(autouse=True)
def _no_stale_threadlocals() -> Iterator[None]:
    # A test that leaves entries on Pyramid's stack would mislead the next one.
    yield
    assert manager.stack == [], "a test left entries on pyramid.threadlocal.manager"
    testing.tearDown()


#: Modules whose every test starts a real server (a subprocess or a thread).
SERVER_MODULES = frozenset(
    {
        "test_asgi_servers",
        "test_example",
        "test_runners",
        "test_websocket_browser",
        "test_websocket_many",
        "test_websocket_servers",
        "test_websocket_shutdown",
    }
)
#: Fixtures that start a real server for the tests that use them.
SERVER_FIXTURES = frozenset({"server", "server_url", "waitress_url"})
#: Modules that drive a real browser, and those that take the longest.
BROWSER_MODULES = frozenset({"test_websocket_browser"})
SLOW_MODULES = frozenset({"test_leaks", "test_websocket_many"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests ``servers``, ``browser`` and ``slow`` (see the fast loop in CONTRIBUTING.md)."""
    for item in items:
        found = getattr(item, "module", None)
        module = found.__name__.rpartition(".")[2] if found is not None else ""
        fixtures = set(getattr(item, "fixturenames", ()))
        if module in SERVER_MODULES or fixtures & SERVER_FIXTURES:
            item.add_marker(pytest.mark.servers)
        if module in BROWSER_MODULES:
            item.add_marker(pytest.mark.browser)
        if module in SLOW_MODULES or module in BROWSER_MODULES:
            item.add_marker(pytest.mark.slow)
