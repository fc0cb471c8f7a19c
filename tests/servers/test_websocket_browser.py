"""The chat example (``examples/chat``) in headless Chromium browsers.

The example is served the documented way, ``pserve`` with its
``development.ini`` (only the port changed), and driven with Playwright
using Debian's Chromium (``.ci/run`` installs it).  Skipped, with the reason
in the test summary, only where that browser is absent.  Then across
processes: two ``pserve`` processes on one Redis (their room on
``aiopyramid_ng.broadcast.url``), a browser on each, and one ``pserve`` with
two workers.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is absent (on Debian: apt-get install chromium); the chat example was "
        "not tested in a browser",
        allow_module_level=True,
    )

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

from tests.support import REPO_ROOT  # noqa: E402
from tests.support.redis import running_redis  # noqa: E402
from tests.support.servers import HOST, PATIENCE, accepts_connections, free_port, serving  # noqa: E402

EXAMPLE = REPO_ROOT / "examples" / "chat"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


SHIPPED_LISTEN = "listen = 127.0.0.1:6544"


@contextmanager
def chat_served(directory: Path, redis_url: str | None = None, workers: int = 1) -> Iterator[str]:
    """``pserve`` of the shipped ``development.ini`` on a free port; yield its URL.

    ``redis_url`` becomes the room's broadcast backend, ``workers`` the
    number of worker processes.
    """
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    ini = directory / "development.ini"
    shipped = (EXAMPLE / "development.ini").read_text()
    assert SHIPPED_LISTEN in shipped and "\n[app:main]\nuse = egg:chat\n" in shipped
    server = f"listen = {HOST}:{port}" + (f"\nworkers = {workers}" if workers > 1 else "")
    conf = shipped.replace(SHIPPED_LISTEN, server)
    if redis_url is not None:
        conf = conf.replace(
            "use = egg:chat\n", f"use = egg:chat\naiopyramid_ng.broadcast.url = {redis_url}\n"
        )
    ini.write_text(conf)
    pserve = str(Path(sys.executable).parent / "pserve")
    # SIGTERM to pserve alone, as a supervisor sends it: it stops its workers.
    with serving([pserve, str(ini)], directory / "pserve.log", accepts_connections(port)):
        yield f"http://{HOST}:{port}/"


@pytest.fixture(scope="module")
def chat_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with chat_served(tmp_path_factory.mktemp("chat")) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


def _enter(browser: Browser, url: str, name: str) -> Page:
    """A browser of its own (own cookies) that logs in as ``name``."""
    page = browser.new_context().new_page()
    page.goto(url)
    page.fill("#name", name)
    page.click("#login")
    expect(page.locator("#me")).to_have_text(name, timeout=PATIENCE * 1000)
    expect(page.locator("#status")).to_have_text("connected", timeout=PATIENCE * 1000)
    return page


def _say(page: Page, text: str) -> None:
    page.fill("#message", text)
    page.click("#send")


def test_messages_reach_every_browser(browser: Browser, chat_url: str) -> None:
    alice = _enter(browser, chat_url, "alice")
    bob = _enter(browser, chat_url, "bob")
    # The user's name comes from the login cookie, read by the WebSocket view.
    expect(alice.locator("#messages")).to_contain_text("bob joined the room")
    _say(alice, "hello from alice")
    _say(bob, "hi alice")
    for page in (alice, bob):
        messages = page.locator("#messages li")
        expect(messages.filter(has_text="alice: hello from alice")).to_have_count(1)
        expect(messages.filter(has_text="bob: hi alice")).to_have_count(1)
    bob.context.close()
    expect(alice.locator("#messages")).to_contain_text("bob left the room")


def test_anonymous_websocket_is_refused(browser: Browser, chat_url: str) -> None:
    page = browser.new_context().new_page()
    page.goto(chat_url)
    code = page.evaluate(
        """(url) => new Promise((resolve) => {
            const socket = new WebSocket(url);
            socket.onopen = () => resolve("open");
            socket.onclose = (event) => resolve(event.code);
        })""",
        chat_url.replace("http://", "ws://") + "ws",
    )
    assert code == 1006  # what a browser reports for a refused handshake (here a 403)
    page.context.close()


def _all_see(pages: list[Page], lines: list[str]) -> None:
    for page in pages:
        messages = page.locator("#messages li")
        for line in lines:
            expect(messages.filter(has_text=line)).to_have_count(1, timeout=PATIENCE * 1000)


def test_two_servers_on_one_redis_share_the_room(browser: Browser, tmp_path: Path) -> None:
    with (
        running_redis(tmp_path) as redis,
        chat_served(tmp_path / "one", redis.url) as one,
        chat_served(tmp_path / "two", redis.url) as two,
    ):
        alice = _enter(browser, one, "alice")
        bob = _enter(browser, two, "bob")
        expect(alice.locator("#messages")).to_contain_text("bob joined the room")
        _say(alice, "hello from the first server")
        _say(bob, "hello from the second server")
        _all_see(
            [alice, bob],
            ["alice: hello from the first server", "bob: hello from the second server"],
        )
        bob.context.close()
        expect(alice.locator("#messages")).to_contain_text("bob left the room")
        alice.context.close()


def test_two_workers_on_one_redis_share_the_room(browser: Browser, tmp_path: Path) -> None:
    with (
        running_redis(tmp_path) as redis,
        chat_served(tmp_path / "workers", redis.url, workers=2) as url,
    ):
        names = ["carol", "dave", "erin", "frank"]
        pages = [_enter(browser, url, name) for name in names]
        for page, name in zip(pages, names, strict=True):
            _say(page, f"{name} was here")
        _all_see(pages, [f"{name}: {name} was here" for name in names])
        for page in pages:
            page.context.close()
