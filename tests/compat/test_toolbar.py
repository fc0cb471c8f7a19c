"""pyramid_debugtoolbar under uvicorn with interleaved requests.

The toolbar stays on (the server is not multiprocess), each request's
toolbar page shows its own log records, and activating the profiler neither
freezes the loop nor mixes requests: in a request greenlet profiling is
skipped with a logged reason; with ``aiopyramid_ng.pipeline = executor`` it
profiles.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest
import webtest
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response
from pyramid.router import Router

from aiopyramid_ng.asgi import make_asgi_app
from aiopyramid_ng.helpers import await_
from aiopyramid_ng.testing import TestApp
from tests.support.compat import KINDS, Requests, add_views_by_kind, concurrently, server_fixture

PROFILE = {"Cookie": "pdtb_active=performance"}
log = logging.getLogger("compat.toolbar")


def _page(request: Request, kind: str) -> Response:
    log.warning("note from %s", request.params["tag"])
    return Response(f"<html><body>{kind} {request.params['tag']}</body></html>")


async def coroutine_view(request: Request) -> Response:
    log.warning("note from %s", request.params["tag"])
    await asyncio.sleep(0.005)
    return _page(request, "coroutine")


def executor_view(request: Request) -> Response:
    log.warning("note from %s", request.params["tag"])
    time.sleep(0.005)
    return _page(request, "executor")


def greenlet_view(request: Request) -> Response:
    log.warning("note from %s", request.params["tag"])
    await_(asyncio.sleep(0.005))
    return _page(request, "greenlet")


def make_app(pipeline: str) -> Router:
    settings = {"aiopyramid_ng.pipeline": pipeline, "debugtoolbar.hosts": "127.0.0.1"}
    with Configurator(settings=settings) as config:
        config.include("pyramid_debugtoolbar")
        config.include("aiopyramid_ng")
        views = {"coroutine": coroutine_view, "executor": executor_view, "greenlet": greenlet_view}
        add_views_by_kind(config, views)
        return config.make_wsgi_app()


def toolbar_path(page: str) -> str:
    found = re.search(r"/_debug_toolbar/[0-9a-f]+", page)
    assert found, page
    return found.group(0)


def notes(page: str) -> set[str]:
    return set(re.findall(r"note from (\w+)", page))


@pytest.fixture(scope="module", params=["greenlet", "executor"])
def app(request: pytest.FixtureRequest) -> Router:
    return make_app(request.param)


server = server_fixture()


def test_each_toolbar_page_shows_its_own_request(
    server: str, app: Router, caplog: pytest.LogCaptureFixture
) -> None:
    requests: Requests = [
        ("GET", f"/{KINDS[n % 3]}", {"params": {"tag": f"t{n}"}, "headers": PROFILE})
        for n in range(30)
    ]
    with caplog.at_level(logging.WARNING, logger="aiopyramid_ng.compat.debugtoolbar"):
        responses = concurrently(server, requests)
    pages = concurrently(server, [("GET", toolbar_path(r.text), {}) for r in responses])
    for (_, _, options), page in zip(requests, pages, strict=True):
        assert page.status_code == 200
        assert notes(page.text) == {options["params"]["tag"]}
    skipped = [r.getMessage() for r in caplog.records if "not profiling" in r.getMessage()]
    if app.registry.settings["aiopyramid_ng.pipeline"] == "greenlet":
        assert len(skipped) == 30
        assert "aiopyramid_ng.pipeline = executor" in skipped[0]
        assert not any("CumuPer" in page.text for page in pages)
    else:
        assert skipped == []
        assert all("CumuPer" in page.text for page in pages)


def test_in_process_asgi_and_webtest(app: Router) -> None:
    local = {"REMOTE_ADDR": "127.0.0.1"}  # the toolbar serves local clients only
    with TestApp(make_asgi_app(app), extra_environ=local) as client:
        page = client.get("/greenlet", {"tag": "asgi"}).text
        assert notes(client.get(toolbar_path(page)).text) == {"asgi"}
    client = webtest.TestApp(app, extra_environ=local)
    page = client.get("/executor", {"tag": "wsgi"}).text
    assert notes(client.get(toolbar_path(page)).text) == {"wsgi"}
