"""A view that starts an event loop on the loop thread gets an error naming the fix."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
import webtest
from asgiref.sync import async_to_sync
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response
from pyramid.router import Router

from aiopyramid_ng.asgi import make_asgi_app
from aiopyramid_ng.config import GreenletMapper
from aiopyramid_ng.exceptions import NestedLoopError
from aiopyramid_ng.helpers import use_executor
from aiopyramid_ng.testing import TestApp
from tests.support.compat import concurrently, server_fixture


async def fetch() -> str:
    await asyncio.sleep(0)
    return "fetched"


def library_call() -> str:
    """A library function that hides a loop of its own."""
    coroutine = fetch()
    try:
        return asyncio.run(coroutine)
    finally:
        coroutine.close()  # asyncio.run refused it unstarted


def asyncio_run_view(request: Request) -> Response:
    return Response(library_call())


def async_to_sync_view(request: Request) -> Response:
    return Response(async_to_sync(fetch)())


def executor_view(request: Request) -> Response:
    # In a worker thread a loop of its own is allowed.
    return Response(library_call())


async def fixed_view(request: Request) -> Response:
    return Response(await use_executor(library_call)())


def other_error_view(request: Request) -> Response:
    raise RuntimeError("unrelated")


def error_view(exc: RuntimeError, request: Request) -> Response:
    return Response(f"{type(exc).__name__}: {exc}", status=500)


def make_app() -> Router:
    with Configurator() as config:
        config.include("aiopyramid_ng")
        for name, view, options in (
            ("asyncio_run", asyncio_run_view, {"mapper": GreenletMapper}),
            ("async_to_sync", async_to_sync_view, {"mapper": GreenletMapper}),
            ("executor", executor_view, {}),
            ("fixed", fixed_view, {}),
            ("other", other_error_view, {"mapper": GreenletMapper}),
        ):
            config.add_route(name, f"/{name}")
            config.add_view(view, route_name=name, **options)
        config.add_exception_view(error_view, RuntimeError)
        return config.make_wsgi_app()


@pytest.fixture(scope="module")
def app() -> Router:
    return make_app()


server = server_fixture()


def _check(path: str, status: int, text: str) -> None:
    if path in ("/asyncio_run", "/async_to_sync"):
        assert status == 500
        assert text.startswith("NestedLoopError: ")
        assert f"{path[1:]}_view" in text
        assert "use_executor" in text and "ExecutorMapper" in text
    elif path == "/other":
        assert (status, text) == (500, "RuntimeError: unrelated")
    else:
        assert (status, text) == (200, "fetched")


PATHS = ["/asyncio_run", "/async_to_sync", "/executor", "/fixed", "/other"]


def test_interleaved_under_uvicorn(server: str, caplog: pytest.LogCaptureFixture) -> None:
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", PATHS[n % len(PATHS)], {}) for n in range(40)
    ]
    with caplog.at_level(logging.ERROR):
        responses: list[httpx.Response] = concurrently(server, requests)
    for (_, path, _), response in zip(requests, responses, strict=True):
        _check(path, response.status_code, response.text)


def _check_each_path(client: webtest.TestApp) -> None:
    for path in PATHS:
        response = client.get(path, status="*")
        _check(path, response.status_int, response.text)


def test_in_process_asgi_and_webtest(app: Router) -> None:
    with TestApp(make_asgi_app(app)) as client:
        _check_each_path(client)
    _check_each_path(webtest.TestApp(app))


def test_the_error_chains_the_original() -> None:
    with pytest.raises(NestedLoopError) as caught:
        webtest.TestApp(make_app_without_exception_view()).get("/asyncio_run")
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert "cannot be called from a running event loop" in str(caught.value.__cause__)


def outer_view(request: Request) -> Response:
    return request.invoke_subrequest(Request.blank("/asyncio_run"), use_tweens=False)


def make_app_without_exception_view() -> Router:
    with Configurator() as config:
        config.include("aiopyramid_ng")
        config.add_route("asyncio_run", "/asyncio_run")
        config.add_view(asyncio_run_view, route_name="asyncio_run", mapper=GreenletMapper)
        config.add_route("outer", "/outer")
        config.add_view(outer_view, route_name="outer", mapper=GreenletMapper)
        return config.make_wsgi_app()


def test_a_subrequest_error_names_the_inner_view() -> None:
    with pytest.raises(NestedLoopError) as caught:
        webtest.TestApp(make_app_without_exception_view()).get("/outer")
    assert "asyncio_run_view" in str(caught.value)
    assert "outer_view" not in str(caught.value)
