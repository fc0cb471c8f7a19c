"""Response callbacks, finished callbacks and renderers as coroutine functions."""

from __future__ import annotations

import asyncio
import copy
import gc
import weakref
from typing import Any

import pytest
from pyramid.config import Configurator
from pyramid.interfaces import IRendererFactory
from pyramid.renderers import render, render_to_response
from pyramid.request import Request
from pyramid.response import Response
from webtest import TestApp as WSGITestApp

from aiopyramid_ng.exceptions import ScopeError
from aiopyramid_ng.helpers import spawn_greenlet
from aiopyramid_ng.renderers import AsyncRenderer, BridgedRendererFactory
from tests.support.apps import get_response, make_app, make_one_view_app, tick
from tests.support.leaks import LeakCheck

finished: list[str] = []


async def stamp(request: Request, response: Response) -> None:
    await tick()
    response.headers["X-Stamp"] = request.params.get("n", "-")


def after_stamp(request: Request, response: Response) -> None:
    # Registered after the async one: runs after it is done.
    response.headers["X-After"] = response.headers["X-Stamp"]


async def record(request: Request) -> None:
    await tick()
    finished.append(request.params.get("n", "-"))


class UpperRenderer:
    """A renderer factory whose renderers are ``async def``."""

    def __init__(self, info: Any):
        self.name = info.name

    async def __call__(self, value: Any, system: dict[str, Any]) -> str:
        await tick()
        return f"{self.name}:{value['text'].upper()}"


async def view(request: Request) -> dict[str, Any]:
    request.add_response_callback(stamp)
    request.add_response_callback(after_stamp)
    request.add_finished_callback(record)
    await tick()
    return {"text": f"hello {request.params.get('n', '-')}"}


def blocking_render(request: Request) -> Response:
    # render_to_response() in a worker thread: the renderer runs on the loop.
    response: Response = render_to_response("page.upper", {"text": "thread"}, request=request)
    return response


def setup(config: Configurator) -> None:
    config.add_renderer(".upper", UpperRenderer)
    config.add_view(view, renderer="page.upper")
    config.add_view(blocking_render, name="blocking")


def test_async_callbacks_and_renderer() -> None:
    finished.clear()
    response = WSGITestApp(make_app(setup)).get("/", params={"n": "7"})
    assert response.text == "page.upper:HELLO 7"
    assert response.headers["X-Stamp"] == "7"
    assert response.headers["X-After"] == "7"
    assert finished == ["7"]


def test_render_to_response_from_an_executor_view() -> None:
    assert WSGITestApp(make_app(setup)).get("/blocking").text == "page.upper:THREAD"


def test_200_interleaved_requests(leak_check: LeakCheck) -> None:
    finished.clear()
    app = make_app(setup)

    async def main() -> None:
        responses = await asyncio.gather(*(get_response(app, f"/?n={n}") for n in range(200)))
        for n, response in enumerate(responses):
            assert response.text == f"page.upper:HELLO {n}"
            assert response.headers["X-After"] == str(n)
        leak_check.assert_clean(asyncio.get_running_loop())

    asyncio.run(main())
    assert sorted(finished, key=int) == [str(n) for n in range(200)]


def test_renderer_added_in_a_later_commit_is_wrapped() -> None:
    config = Configurator()
    config.include("aiopyramid_ng")
    config.commit()
    config.add_renderer(".late", UpperRenderer)
    config.add_view(view, renderer="x.late")
    app = WSGITestApp(config.make_wsgi_app())
    assert app.get("/").text == "x.late:HELLO -"
    factory = config.registry.getUtility(IRendererFactory, name=".late")
    assert isinstance(factory, BridgedRendererFactory)
    assert repr(factory).startswith("<BridgedRendererFactory around")


def test_render_outside_a_request_names_the_renderer() -> None:
    with Configurator() as config:
        config.include("aiopyramid_ng")
        setup(config)
        registry = config.registry

    async def main() -> None:
        request = Request.blank("/")
        request.registry = registry
        render("page.upper", {"text": "x"}, request=request)

    with pytest.raises(ScopeError, match=r"UpperRenderer.*returned an awaitable"):
        asyncio.run(main())


def test_async_renderer_in_a_greenlet() -> None:
    renderer = AsyncRenderer(UpperRenderer(type("Info", (), {"name": "n"})()))

    async def main() -> str:
        rendered: str = await spawn_greenlet(renderer, {"text": "a"}, {})
        return rendered

    assert asyncio.run(main()) == "n:A"


kept: list[Any] = []


async def keeping_view(request: Request) -> Response:
    kept.append(weakref.ref(request))
    kept.append(request.add_finished_callback)
    request.add_response_callback(after_stamp)
    request.add_response_callback(stamp)
    return Response("ok", headers={"X-Stamp": "s"})


def test_a_finished_request_is_freed_without_the_cycle_collector() -> None:
    # The callback methods hold their request weakly: were they bound
    # methods in the request's __dict__, each request would be a reference
    # cycle that lives on until the cyclic collector runs.
    kept.clear()
    app = make_one_view_app(keeping_view)
    gc.collect()
    gc.disable()
    try:
        response = asyncio.run(get_response(app))
    finally:
        gc.enable()
    assert response.status_int == 200
    assert response.headers["X-After"] == "s"
    request_ref, add_finished_callback = kept
    assert request_ref() is None
    with pytest.raises(ReferenceError, match=r"add_finished_callback\(\) was kept past the end"):
        add_finished_callback(record)


class ErrorsRenderer:
    """A factory instance with methods of its own, as Cornice registers."""

    label = "errors"

    def __call__(self, info: Any) -> Any:
        def render(value: Any, system: dict[str, Any]) -> str:
            return f"{self.label}:{value}"

        render.kind = "plain"  # type: ignore[attr-defined]
        return render

    def render_errors(self, request: Any) -> str:
        return f"{self.label} for {request.path}"


def test_wrapped_renderer_factory_keeps_its_own_attributes() -> None:
    def errors_view(request: Any) -> Any:
        factory = request.registry.queryUtility(IRendererFactory, name="errors")
        return Response(factory.render_errors(request))

    with Configurator() as config:
        config.include("aiopyramid_ng")
        config.add_renderer("errors", ErrorsRenderer())
        config.add_view(errors_view)
    app = WSGITestApp(config.make_wsgi_app())
    assert app.get("/").text == "errors for /"
    factory = config.registry.getUtility(IRendererFactory, name="errors")
    assert isinstance(factory, BridgedRendererFactory)
    assert isinstance(factory.__wrapped__, ErrorsRenderer)
    assert factory.label == "errors"
    with pytest.raises(AttributeError, match="missing"):
        factory.missing  # noqa: B018


def test_async_renderer_keeps_the_renderer_attributes() -> None:
    renderer = UpperRenderer(type("Info", (), {"name": "n"})())
    wrapped = AsyncRenderer(renderer)
    assert wrapped.__wrapped__ is renderer
    assert wrapped.name == renderer.name
    assert copy.copy(wrapped).renderer is renderer
