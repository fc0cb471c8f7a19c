"""Async tweens mixed with sync ones, in any order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pyramid.config import Configurator
from pyramid.interfaces import ITweens
from pyramid.registry import Registry
from pyramid.request import Request
from pyramid.response import Response
from pyramid.tweens import EXCVIEW, MAIN
from webtest import TestApp as WSGITestApp

from aiopyramid_ng.exceptions import ScopeError
from aiopyramid_ng.helpers import synchronize
from aiopyramid_ng.testing import TestApp
from aiopyramid_ng.tweens import AsyncTween, BridgedTweens, TweenHandler
from tests.support.apps import get_response, make_app, make_asgi, tick
from tests.support.leaks import LeakCheck

Handler = Any


def trail(request: Request) -> list[str]:
    steps: list[str] = request.environ.setdefault("test.trail", [])
    return steps


def async_outer_factory(handler: Handler, registry: Registry) -> Any:
    async def async_outer(request: Request) -> Response:
        await tick()
        trail(request).append("async_outer in")
        response: Response = await handler(request)
        await tick()
        trail(request).append("async_outer out")
        response.headers["X-Trail"] = ",".join(trail(request))
        return response

    return async_outer


def sync_middle_factory(handler: Handler, registry: Registry) -> Any:
    def sync_middle(request: Request) -> Response:
        trail(request).append("sync_middle in")
        response: Response = handler(request)
        trail(request).append("sync_middle out")
        return response

    return sync_middle


class AsyncInner:
    """An async tween written as a class with ``async def __call__``."""

    def __init__(self, handler: Handler, registry: Registry):
        self.handler = handler

    async def __call__(self, request: Request) -> Response:
        await tick()
        trail(request).append("async_inner in")
        if request.params.get("fail") == "inner":
            raise LookupError("inner")
        response: Response = await self.handler(request)
        trail(request).append("async_inner out")
        return response


def async_under_main_factory(handler: Handler, registry: Registry) -> Any:
    async def wait_for_handler(request: Request) -> Response:
        # The handler's awaitable run by another Task: it gets its own greenlet.
        response: Response = await asyncio.wait_for(handler(request), 5)
        return response

    return wait_for_handler


async def view(request: Request) -> Response:
    await tick()
    trail(request).append("view")
    if request.params.get("fail") == "view":
        raise LookupError("view")
    return Response(request.params.get("n", "ok"))


def failed(exc: LookupError, request: Request) -> Response:
    return Response(f"caught {exc.args[0]}", status=500)


ORDER = [
    "async_outer in",
    "sync_middle in",
    "async_inner in",
    "view",
    "async_inner out",
    "sync_middle out",
    "async_outer out",
]


def setup(config: Configurator) -> None:
    config.add_tween("tests.test_tweens.async_outer_factory", over=EXCVIEW)
    config.add_tween("tests.test_tweens.sync_middle_factory", under=EXCVIEW)
    config.add_tween("tests.test_tweens.AsyncInner", under="tests.test_tweens.sync_middle_factory")
    config.add_tween("tests.test_tweens.async_under_main_factory", over=MAIN)
    config.add_view(view)
    config.add_view(failed, context=LookupError)


def test_chain_order_webtest() -> None:
    response = WSGITestApp(make_app(setup)).get("/")
    assert response.text == "ok"
    assert response.headers["X-Trail"] == ",".join(ORDER)


def test_chain_order_asgi() -> None:
    asgi = make_asgi(setup)
    with TestApp(asgi) as app:
        assert app.get("/").headers["X-Trail"] == ",".join(ORDER)


def test_exceptions_reach_the_exception_view() -> None:
    app = WSGITestApp(make_app(setup))
    from_view = app.get("/", params={"fail": "view"}, status=500)
    assert from_view.text == "caught view"
    from_tween = app.get("/", params={"fail": "inner"}, status=500)
    assert from_tween.text == "caught inner"
    # The async tween over the exception view sees the error response.
    assert from_tween.headers["X-Trail"] == (
        "async_outer in,sync_middle in,async_inner in,async_outer out"
    )


def test_200_interleaved_requests(leak_check: LeakCheck) -> None:
    app = make_app(setup)

    async def main() -> None:
        responses = await asyncio.gather(*(get_response(app, f"/?n={n}") for n in range(200)))
        for n, response in enumerate(responses):
            assert response.text == str(n)
            assert response.headers["X-Trail"] == ",".join(ORDER)
        leak_check.assert_clean(asyncio.get_running_loop())

    asyncio.run(main())


def test_explicit_tween_setting() -> None:
    explicit = "\n".join(
        [
            "tests.test_tweens.sync_middle_factory",
            "tests.test_tweens.async_outer_factory",
            "pyramid.tweens.excview_tween_factory",
        ]
    )

    def setup_views(config: Configurator) -> None:
        config.add_view(view)

    response = WSGITestApp(make_app(setup_views, **{"pyramid.tweens": explicit})).get("/")
    assert response.headers["X-Trail"] == "sync_middle in,async_outer in,view,async_outer out"


# aiopyramid's way: a sync tween calling a synchronized coroutine.


@synchronize
async def lookup_tag(request: Request) -> str:
    await tick()
    return f"tag-{request.path}"


def synchronized_factory(handler: Handler, registry: Registry) -> Any:
    def synchronized_tween(request: Request) -> Response:
        response: Response = handler(request)
        response.headers["X-Tag"] = lookup_tag(request)
        return response

    return synchronized_tween


def test_sync_tween_with_synchronized_coroutine() -> None:
    def setup_sync(config: Configurator) -> None:
        config.add_tween("tests.test_tweens.synchronized_factory")
        config.add_view(view)

    assert WSGITestApp(make_app(setup_sync)).get("/").headers["X-Tag"] == "tag-/"


def test_bridged_tweens_registered_once_and_listed() -> None:
    with Configurator() as config:
        config.include("aiopyramid_ng")
        config.include("aiopyramid_ng.tweens")
        setup(config)
        config.commit()
        tweens = config.registry.getUtility(ITweens)
    assert isinstance(tweens, BridgedTweens)
    assert [name for name, _ in tweens.implicit()] == [
        "tests.test_tweens.async_outer_factory",
        "pyramid.tweens.excview_tween_factory",
        "tests.test_tweens.sync_middle_factory",
        "tests.test_tweens.AsyncInner",
        "tests.test_tweens.async_under_main_factory",
    ]
    assert tweens.explicit == []


def test_async_tween_called_outside_a_request_names_it() -> None:
    tween = AsyncTween(AsyncInner(TweenHandler(lambda request: Response()), Registry()))
    assert repr(tween).startswith("<AsyncTween <tests.test_tweens.AsyncInner")

    async def main() -> None:
        tween(Request.blank("/"))

    with pytest.raises(ScopeError, match=r"AsyncInner.*returned an awaitable"):
        asyncio.run(main())


def test_explicit_tweens_added_after_include_and_included_twice() -> None:
    from aiopyramid_ng import tweens as tweens_module

    config = Configurator()
    config.include("aiopyramid_ng")
    tweens_module.includeme(config)
    bridged = config.registry.getUtility(ITweens)
    assert isinstance(bridged, BridgedTweens)
    bridged.add_explicit("outer", async_outer_factory)
    bridged.add_explicit("excview", config.maybe_dotted("pyramid.tweens.excview_tween_factory"))
    config.add_view(view)
    app = WSGITestApp(config.make_wsgi_app())
    assert app.get("/").headers["X-Trail"] == "async_outer in,view,async_outer out"
    handler = TweenHandler(view)
    assert repr(handler) == f"<TweenHandler of {view!r}>"


def test_requests_cancelled_inside_async_tweens_leave_nothing(leak_check: LeakCheck) -> None:
    app = make_app(setup)

    async def main() -> None:
        tasks = [asyncio.create_task(get_response(app, f"/?n={n}")) for n in range(100)]
        await asyncio.sleep(0.0015)  # most are suspended in a tween or the view
        for task in tasks[::2]:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for n in range(1, 100, 2):
            result = results[n]
            assert not isinstance(result, BaseException), result
            assert result.text == str(n)
        assert any(isinstance(result, asyncio.CancelledError) for result in results[::2])
        leak_check.assert_clean(asyncio.get_running_loop())

    asyncio.run(main())
