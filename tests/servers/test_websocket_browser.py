"""The chat example (``examples/chat``) in two headless Chromium browsers.

The example is served the documented way, ``pserve`` with its
``development.ini`` (only the port changed), and driven with Playwright
using Debian's Chromium (``.ci/run`` installs it).  Skipped, with the reason
in the test summary, only where that browser is absent.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
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


@pytest.fixture(scope="module")
def chat_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    directory = tmp_path_factory.mktemp("chat")
    ini = directory / "development.ini"
    shipped = (EXAMPLE / "development.ini").read_text()
    assert "listen = 127.0.0.1:6544" in shipped
    ini.write_text(shipped.replace("listen = 127.0.0.1:6544", f"listen = {HOST}:{port}"))
    pserve = str(Path(sys.executable).parent / "pserve")
    with serving([pserve, str(ini)], directory / "pserve.log", accepts_connections(port)):
        yield f"http://{HOST}:{port}/"


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
