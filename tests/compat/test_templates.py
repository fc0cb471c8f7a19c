"""pyramid_jinja2 and pyramid_chameleon renderers, with i18n, under interleaved requests.

Both renderers find the request's localizer through ``get_current_request()``;
each request asks for its own locale and name, and must get its own page.
"""

from __future__ import annotations

import asyncio
import struct
import time
from pathlib import Path
from typing import Any

import pytest
import webtest
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.router import Router

from aiopyramid_ng.asgi import make_asgi_app
from aiopyramid_ng.testing import TestApp
from tests.support.compat import Requests, concurrently, server_fixture

DOMAIN = "compat"
GREETINGS = {"en": "Hello", "fr": "Bonjour", "de": "Hallo"}
RENDERERS = {
    "jinja2": "tests.compat:templates/page.jinja2",
    "chameleon": "tests.compat:templates/page.pt",
}


def write_catalog(path: Path, messages: dict[str, str]) -> None:
    """Write a GNU gettext catalog (.mo) holding ``messages``."""
    keys = sorted(messages)
    originals = [key.encode("ascii") for key in keys]
    translations = [messages[key].encode("ascii") for key in keys]
    count = len(keys)
    start = 7 * 4 + 2 * 8 * count  # header, then two tables of (length, offset)
    tables: list[int] = []
    data = b""
    for strings in (originals, translations):
        for string in strings:
            tables += [len(string), start + len(data)]
            data += string + b"\0"
    header = struct.pack("<7I", 0x950412DE, 0, count, 28, 28 + 8 * count, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + struct.pack(f"<{len(tables)}I", *tables) + data)


def _values(request: Request) -> dict[str, Any]:
    return {"name": request.params["name"]}


async def coroutine_view(request: Request) -> dict[str, Any]:
    await asyncio.sleep(0.002)
    return _values(request)


def executor_view(request: Request) -> dict[str, Any]:
    time.sleep(0.002)
    return _values(request)


def make_app(locales: Path) -> Router:
    for locale, greeting in GREETINGS.items():
        if locale != "en":
            write_catalog(locales / locale / "LC_MESSAGES" / f"{DOMAIN}.mo", {"Hello": greeting})
    settings = {"jinja2.i18n.domain": DOMAIN}
    with Configurator(settings=settings) as config:
        config.include("aiopyramid_ng")
        config.include("pyramid_jinja2")
        config.include("pyramid_chameleon")
        config.add_translation_dirs(str(locales))
        for engine, renderer in RENDERERS.items():
            for kind, view in (("coroutine", coroutine_view), ("executor", executor_view)):
                config.add_route(f"{engine}-{kind}", f"/{engine}/{kind}")
                config.add_view(view, route_name=f"{engine}-{kind}", renderer=renderer)
        return config.make_wsgi_app()


def plan(count: int) -> Requests:
    locales = list(GREETINGS)
    paths = [f"/{engine}/{kind}" for engine in RENDERERS for kind in ("coroutine", "executor")]
    return [
        ("GET", paths[n % 4], {"params": {"_LOCALE_": locales[n % 3], "name": f"user{n}"}})
        for n in range(count)
    ]


def expected(path: str, params: dict[str, str]) -> str:
    greeting = GREETINGS[params["_LOCALE_"]]
    if path.startswith("/chameleon"):
        return f"<p><span>{greeting}</span> {params['name']} at {path}</p>"
    return f"<p>{greeting} {params['name']} at {path}</p>"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Router:
    return make_app(tmp_path_factory.mktemp("locales"))


server = server_fixture()


def test_interleaved_requests_render_their_own_page(server: str) -> None:
    requests = plan(120)
    for (_, path, options), response in zip(requests, concurrently(server, requests), strict=True):
        assert response.status_code == 200, response.text
        assert response.text.strip() == expected(path, options["params"])


def _render_each(client: webtest.TestApp, requests: Requests) -> None:
    for _, path, options in requests:
        assert client.get(path, options["params"]).text.strip() == expected(path, options["params"])


def test_in_process_asgi_and_webtest(app: Router) -> None:
    requests = plan(12)
    with TestApp(make_asgi_app(app)) as client:
        _render_each(client, requests)
    _render_each(webtest.TestApp(app), requests)
