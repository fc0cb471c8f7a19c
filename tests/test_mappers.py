"""Every mapper with every view shape, through WebTest (WSGI mode) and the bridge."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from typing import Any

import pytest
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError
from pyramid.httpexceptions import HTTPForbidden, HTTPFound, HTTPNotFound
from pyramid.request import Request
from pyramid.response import Response
from pyramid.threadlocal import get_current_request
from pyramid.viewderivers import DefaultViewMapper
from webtest import TestApp

from aiopyramid_ng.bridge import in_bridge
from aiopyramid_ng.config import (
    CoroutineMapper,
    CoroutineOrExecutorMapper,
    ExecutorMapper,
    GreenletMapper,
)
from aiopyramid_ng.coroutines import is_coroutine_callable
from tests.support.apps import get_response, make_app


def where(request: Request) -> dict[str, Any]:
    """What a view reports about the place it runs in."""
    assert get_current_request() is request
    thread = threading.current_thread()
    return {
        "thread": "executor" if thread.name.startswith("aiopyramid_ng") else "loop",
        "greenlet": in_bridge(),
    }


async def async_request_only(request: Request) -> dict[str, Any]:
    await asyncio.sleep(0)
    return where(request)


def sync_request_only(request: Request) -> dict[str, Any]:
    return where(request)


async def async_context_request(context: object, request: Request) -> dict[str, Any]:
    await asyncio.sleep(0)
    return where(request)


def sync_context_request(context: object, request: Request) -> dict[str, Any]:
    return where(request)


class AsyncClass:
    def __init__(self, request: Request) -> None:
        self.request = request

    async def __call__(self) -> dict[str, Any]:
        await asyncio.sleep(0)
        return where(self.request)

    async def other(self) -> dict[str, Any]:
        await asyncio.sleep(0)
        return where(self.request)


class SyncClass:
    def __init__(self, context: object, request: Request) -> None:
        self.request = request

    def __call__(self) -> dict[str, Any]:
        return where(self.request)

    def other(self) -> dict[str, Any]:
        return where(self.request)


class AsyncInstance:
    async def __call__(self, request: Request) -> dict[str, Any]:
        await asyncio.sleep(0)
        return where(request)


class SyncInstance:
    def __call__(self, request: Request) -> dict[str, Any]:
        return where(request)


async def _async_with_option(request: Request, option: str) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {**where(request), "option": option}


def _sync_with_option(request: Request, option: str) -> dict[str, Any]:
    return {**where(request), "option": option}


# (name, view, attr, is coroutine)
SHAPES: list[tuple[str, Any, str | None, bool]] = [
    ("async function(request)", async_request_only, None, True),
    ("function(request)", sync_request_only, None, False),
    ("async function(context, request)", async_context_request, None, True),
    ("function(context, request)", sync_context_request, None, False),
    ("async class", AsyncClass, None, True),
    ("async class attr", AsyncClass, "other", True),
    ("class", SyncClass, None, False),
    ("class attr", SyncClass, "other", False),
    ("async callable instance", AsyncInstance(), None, True),
    ("callable instance", SyncInstance(), None, False),
    ("partial of async def", functools.partial(_async_with_option, option="x"), None, True),
    ("partial", functools.partial(_sync_with_option, option="x"), None, False),
]

# mapper -> (where a coroutine view runs, where a plain view runs); None = refused
MAPPERS: dict[type, tuple[str | None, str | None]] = {
    CoroutineOrExecutorMapper: ("loop", "executor"),
    CoroutineMapper: ("loop", None),
    ExecutorMapper: (None, "executor"),
    GreenletMapper: ("loop", "loop"),
}

MATRIX = [
    pytest.param(mapper, view, attr, is_async, id=f"{mapper.__name__}-{name}")
    for mapper in MAPPERS
    for name, view, attr, is_async in SHAPES
]


def _app_with(view: Any, attr: str | None, mapper: type | None, via_default: bool) -> Any:
    def setup(config: Configurator) -> None:
        if via_default:
            config.set_view_mapper(mapper)
        config.add_route("view", "/view")
        kwargs: dict[str, Any] = {"attr": attr} if attr else {}
        if not via_default and mapper is not None:
            kwargs["mapper"] = mapper
        config.add_view(view, route_name="view", renderer="json", **kwargs)

    return make_app(setup)


@pytest.mark.parametrize(("mapper", "view", "attr", "is_async"), MATRIX)
def test_mapper_and_view_shape(mapper: type, view: Any, attr: str | None, is_async: bool) -> None:
    assert is_coroutine_callable(view, attr) is is_async
    expected_place = MAPPERS[mapper][0 if is_async else 1]
    if expected_place is None:
        with pytest.raises(ConfigurationError) as info:
            _app_with(view, attr, mapper, via_default=False)
        message = str(info.value)
        assert mapper.__name__ in message
        assert (
            str(attr or getattr(view, "__name__", type(view).__name__))
        ) in message or "partial" in message
        return
    for via_default in (False, True):
        app = _app_with(view, attr, mapper, via_default)
        body = TestApp(app).get("/view").json
        assert body["thread"] == expected_place
        assert body["greenlet"] is (expected_place == "loop")
        if "option" in body:
            assert body["option"] == "x"


def test_refusal_names_the_view_and_the_fix() -> None:
    with pytest.raises(ConfigurationError) as info:
        _app_with(sync_request_only, None, CoroutineMapper, via_default=False)
    assert "sync_request_only" in str(info.value)
    assert "async def" in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        _app_with(async_request_only, None, ExecutorMapper, via_default=False)
    assert "async_request_only" in str(info.value)
    assert "CoroutineMapper" in str(info.value)


def _response_kinds_app(mapper: type) -> Any:
    async def async_uses_response(request: Request) -> dict[str, str]:
        await asyncio.sleep(0)
        request.response.headers["X-Kind"] = "async"
        request.response.status_int = 201
        return {"kind": "async"}

    def sync_uses_response(request: Request) -> dict[str, str]:
        request.response.headers["X-Kind"] = "sync"
        request.response.status_int = 201
        return {"kind": "sync"}

    async def async_returns_response(request: Request) -> Response:
        await asyncio.sleep(0)
        return Response("async body", content_type="text/plain")

    def sync_returns_response(request: Request) -> Response:
        return Response("sync body", content_type="text/plain")

    async def async_redirects(request: Request) -> None:
        await asyncio.sleep(0)
        raise HTTPFound(location="/elsewhere")

    def sync_redirects(request: Request) -> None:
        raise HTTPFound(location="/elsewhere")

    views: dict[str, Callable[..., Any]] = {
        "async_uses_response": async_uses_response,
        "sync_uses_response": sync_uses_response,
        "async_returns_response": async_returns_response,
        "sync_returns_response": sync_returns_response,
        "async_redirects": async_redirects,
        "sync_redirects": sync_redirects,
    }

    def setup(config: Configurator) -> None:
        for name, view in views.items():
            if is_coroutine_callable(view) and mapper is ExecutorMapper:
                continue
            if not is_coroutine_callable(view) and mapper is CoroutineMapper:
                continue
            config.add_route(name, f"/{name}")
            config.add_view(view, route_name=name, renderer="json", mapper=mapper)

    return make_app(setup)


@pytest.mark.parametrize("mapper", list(MAPPERS))
def test_responses_renderers_and_http_exceptions_pass_through(mapper: type) -> None:
    app = TestApp(_response_kinds_app(mapper))
    for kind in ("async", "sync"):
        if (kind == "async" and mapper is ExecutorMapper) or (
            kind == "sync" and mapper is CoroutineMapper
        ):
            continue
        response = app.get(f"/{kind}_uses_response", status=201)
        assert response.json == {"kind": kind}
        assert response.headers["X-Kind"] == kind
        assert app.get(f"/{kind}_returns_response").text == f"{kind} body"
        redirect = app.get(f"/{kind}_redirects", status=302)
        assert redirect.headers["Location"].endswith("/elsewhere")


def test_deriver_awaits_coroutines_from_other_mappers() -> None:
    class LegacyMapper(DefaultViewMapper):  # type: ignore[misc]
        """Another add-on's mapper that knows nothing about coroutines."""

    async def view(request: Request) -> dict[str, Any]:
        await asyncio.sleep(0)
        return where(request)

    class WithOwnMapper:
        __view_mapper__ = LegacyMapper

        def __init__(self, request: Request) -> None:
            self.request = request

        async def __call__(self) -> dict[str, Any]:
            await asyncio.sleep(0)
            return where(self.request)

    def setup(config: Configurator) -> None:
        config.add_route("legacy", "/legacy")
        config.add_route("partial", "/partial")
        config.add_route("own", "/own")
        config.add_view(view, route_name="legacy", renderer="json", mapper=LegacyMapper)
        config.add_view(
            functools.partial(view), route_name="partial", renderer="json", mapper=DefaultViewMapper
        )
        config.add_view(WithOwnMapper, route_name="own", renderer="json")

    app = TestApp(make_app(setup))
    for path in ("/legacy", "/partial", "/own"):
        assert app.get(path).json == {"thread": "loop", "greenlet": True}


def test_exception_notfound_and_forbidden_views_may_be_coroutines() -> None:
    async def raises(request: Request) -> None:
        await asyncio.sleep(0)
        raise KeyError("missing")

    def denied(request: Request) -> None:
        raise HTTPForbidden()

    async def on_key_error(exc: KeyError, request: Request) -> Response:
        await asyncio.sleep(0)
        return Response(f"handled {exc.args[0]}", status=400)

    async def on_not_found(exc: HTTPNotFound, request: Request) -> Response:
        await asyncio.sleep(0)
        return Response("async not found", status=404)

    def on_forbidden(exc: HTTPForbidden, request: Request) -> dict[str, Any]:
        request.response.status_int = 403
        return {"forbidden": True, **where(request)}

    def setup(config: Configurator) -> None:
        config.add_route("raises", "/raises")
        config.add_route("denied", "/denied")
        config.add_view(raises, route_name="raises")
        config.add_view(denied, route_name="denied")
        config.add_exception_view(on_key_error, context=KeyError)
        config.add_notfound_view(on_not_found)
        config.add_forbidden_view(on_forbidden, renderer="json")

    app = TestApp(make_app(setup))
    assert app.get("/raises", status=400).text == "handled missing"
    assert app.get("/nowhere", status=404).text == "async not found"
    assert app.get("/denied", status=403).json == {
        "forbidden": True,
        "thread": "executor",
        "greenlet": False,
    }


def test_views_interleave_on_one_loop() -> None:
    async def echo(request: Request) -> Response:
        await asyncio.sleep(0.001)
        assert get_current_request() is request
        return Response(request.params["n"])

    def blocking(request: Request) -> Response:
        assert get_current_request() is request
        return Response(request.params["n"])

    def setup(config: Configurator) -> None:
        config.add_route("echo", "/echo")
        config.add_route("blocking", "/blocking")
        config.add_view(echo, route_name="echo")
        config.add_view(blocking, route_name="blocking")

    app = make_app(setup)

    async def main() -> list[str]:
        responses = await asyncio.gather(
            *(get_response(app, f"/{'echo' if n % 2 else 'blocking'}?n={n}") for n in range(200))
        )
        return [response.text for response in responses]

    assert asyncio.run(main()) == [str(n) for n in range(200)]
