"""Exception views run while the exception is being handled, wherever they run.

Pyramid calls an exception view inside its ``except`` block, so the view may
read ``sys.exc_info()`` or re-raise with a bare ``raise``.  The default mapper
runs a plain exception view in a worker thread, whose exception state is its
own; the add-on hands the exception over, and interleaved requests each see
their own.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import httpx
import pytest
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response
from pyramid.router import Router
from webtest import TestApp

from aiopyramid_ng.asgi import make_asgi_app
from aiopyramid_ng.config import CoroutineOrExecutorMapper, GreenletMapper


class Boom(Exception):
    """Raised by the view with the request's own number."""


class Reraised(Exception):
    """Raised by the view; its exception view re-raises it with a bare ``raise``."""


async def failing(request: Request) -> Response:
    await asyncio.sleep(0.001)
    raise Boom(request.params["n"])


def failing_to_reraise(request: Request) -> Response:
    raise Reraised(request.params["n"])


def describe_handled(exc: Boom, request: Request) -> Response:
    handled = sys.exc_info()[1]
    return Response(f"{request.params['n']}:{handled}:{handled is exc}")


def reraise(exc: Reraised, request: Request) -> Response:
    raise


async def reraise_async(exc: Reraised, request: Request) -> Response:
    await asyncio.sleep(0)
    raise


def make(mapper: Any, reraiser: Any = reraise) -> Router:
    with Configurator() as config:
        config.include("aiopyramid_ng")
        config.add_route("boom", "/boom")
        config.add_view(failing, route_name="boom")
        config.add_route("reraise", "/reraise")
        config.add_view(failing_to_reraise, route_name="reraise")
        config.add_view(describe_handled, context=Boom, mapper=mapper)
        config.add_view(reraiser, context=Reraised, mapper=mapper)
        return config.make_wsgi_app()


MAPPERS = [CoroutineOrExecutorMapper, GreenletMapper]


@pytest.mark.parametrize("mapper", MAPPERS, ids=lambda m: m.__name__)
def test_an_exception_view_sees_the_exception_it_handles(mapper: Any) -> None:
    assert TestApp(make(mapper)).get("/boom?n=7").text == "7:7:True"


@pytest.mark.parametrize("mapper", MAPPERS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("reraiser", [reraise, reraise_async], ids=["plain", "async"])
def test_a_bare_raise_in_an_exception_view_reraises_the_original(
    mapper: Any, reraiser: Any
) -> None:
    with pytest.raises(Reraised) as caught:
        TestApp(make(mapper, reraiser)).get("/reraise?n=3")
    assert str(caught.value) == "3"
    # The traceback still reaches the view that raised it.
    assert "failing_to_reraise" in {frame.name for frame in _frames(caught.value)}


def _frames(exc: BaseException) -> list[Any]:
    import traceback

    return list(traceback.extract_tb(exc.__traceback__))


def test_interleaved_requests_each_handle_their_own_exception() -> None:
    asgi = make_asgi_app(make(CoroutineOrExecutorMapper))

    async def main() -> list[str]:
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            responses = await asyncio.gather(
                *(client.get("/boom", params={"n": n}) for n in range(100))
            )
        return [response.text for response in responses]

    assert asyncio.run(main()) == [f"{n}:{n}:True" for n in range(100)]


def test_a_reraised_exception_is_a_500_under_asgi_with_its_traceback_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    asgi = make_asgi_app(make(CoroutineOrExecutorMapper))

    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=asgi, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/reraise", params={"n": "9"})

    response = asyncio.run(main())
    assert response.status_code == 500
    logged = [record for record in caplog.records if record.exc_info]
    assert logged and isinstance(logged[-1].exc_info[1], Reraised)  # type: ignore[index]
