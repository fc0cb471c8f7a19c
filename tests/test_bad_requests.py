"""A request that cannot be decoded answers 400, over WSGI and ASGI, unless the application answers.

The path, query string and body are the client's: bytes that are not
UTF-8, a charset WebOb refuses or Python does not know, a JSON body that is
not JSON get a short ``text/plain`` 400 and an ``INFO`` line, never a 500
with an error-level traceback.  The same exceptions raised by the
application's own code stay server errors, and the application's own
exception views (for the exception or a base class) answer instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import webtest
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response
from pyramid.router import Router

from aiopyramid_ng.asgi import make_asgi_app
from aiopyramid_ng.badrequests import is_bad_input
from aiopyramid_ng.testing import TestApp

NOT_UTF8 = b"Bad Request: the request is not valid UTF-8\n"
NOT_JSON = b"Bad Request: the request body is not valid JSON\n"
BAD_CHARSET = b"Bad Request: the request charset is not supported\n"

FORM = "application/x-www-form-urlencoded"


# -- the application ----------------------------------------------------------------


def query_view(request: Request) -> Response:
    return Response(request.params.get("q", ""))


async def async_query_view(request: Request) -> Response:
    await asyncio.sleep(0.001)
    return Response(f"{request.params.get('n', '')}:{request.params.get('q', '')}")


def form_view(request: Request) -> Response:
    return Response(request.POST.get("a", ""))


def json_view(request: Request) -> Response:
    return Response(json.dumps(request.json_body))


async def text_view(request: Request) -> Response:
    return Response(request.text)


def path_view(request: Request) -> Response:
    return Response(request.path_info)


def own_unicode_error(request: Request) -> Response:
    return Response(b"upstream \xff".decode("utf-8"))


def own_json_error(request: Request) -> Response:
    return Response(json.loads("{cached"))


def own_lookup_error(request: Request) -> Response:
    return Response("x".encode(request.params.get("codec", "no-such-codec")))


async def good_view(request: Request) -> Response:
    await asyncio.sleep(0.001)
    return Response(f"good {request.matchdict['n']}")


def make_app(*includes: Callable[[Configurator], None], **settings: str) -> Router:
    with Configurator(settings=settings) as config:
        config.include("aiopyramid_ng")
        for route, pattern, view in [
            ("caf", "/caf{rest}", path_view),
            ("query", "/query", query_view),
            ("async_query", "/async-query", async_query_view),
            ("form", "/form", form_view),
            ("json", "/json", json_view),
            ("text", "/text", text_view),
            ("own_unicode", "/own/unicode", own_unicode_error),
            ("own_json", "/own/json", own_json_error),
            ("own_lookup", "/own/lookup", own_lookup_error),
            ("good", "/good/{n}", good_view),
        ]:
            config.add_route(route, pattern)
            config.add_view(view, route_name=route)
        for include in includes:
            config.include(include)
        return config.make_wsgi_app()


Client = Any


@pytest.fixture(params=["wsgi", "asgi", "asgi executor pipeline"])
def make_client(request: pytest.FixtureRequest) -> Iterator[Callable[..., Client]]:
    """Make a client for ``make_app(*includes)``: WebTest, or the ASGI TestApp."""
    opened: list[TestApp] = []

    def make(*includes: Callable[[Configurator], None]) -> Client:
        if request.param == "wsgi":
            return webtest.TestApp(make_app(*includes))
        settings = {"aiopyramid_ng.pipeline": "executor"} if "executor" in request.param else {}
        client = TestApp(make_asgi_app(make_app(*includes, **settings)))
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()


def no_error_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == []


# -- hostile input --------------------------------------------------------------------

HOSTILE = [
    ("path", "get", "/caf%FF", {}, NOT_UTF8),
    ("path, no route", "get", "/nowhere/%FF", {}, NOT_UTF8),
    ("query string", "get", "/query?q=%FF", {}, NOT_UTF8),
    ("query string, coroutine view", "get", "/async-query?q=%C3%28", {}, NOT_UTF8),
    ("query string of a POST", "post", "/query?q=%FF", {"params": b"a=1"}, NOT_UTF8),
    (
        "form in another charset",
        "post",
        "/form",
        {"params": b"a=%E9", "content_type": f"{FORM}; charset=latin-1"},
        BAD_CHARSET,
    ),
    (
        "json, invalid bytes",
        "post",
        "/json",
        {"params": b'{"a": "\xff"}', "content_type": "application/json"},
        NOT_UTF8,
    ),
    (
        "json, not json",
        "post",
        "/json",
        {"params": b'{"a": ', "content_type": "application/json"},
        NOT_JSON,
    ),
    (
        "json, unknown charset",
        "post",
        "/json",
        {"params": b'{"a": 1}', "content_type": "application/json; charset=no-such-codec"},
        BAD_CHARSET,
    ),
    (
        "text, invalid bytes",
        "post",
        "/text",
        {"params": b"caf\xe9", "content_type": "text/plain; charset=utf-8"},
        NOT_UTF8,
    ),
]


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "body"),
    [case[1:] for case in HOSTILE],
    ids=[case[0] for case in HOSTILE],
)
def test_undecodable_input_is_a_400_without_an_error_traceback(
    make_client: Callable[..., Client],
    caplog: pytest.LogCaptureFixture,
    method: str,
    url: str,
    kwargs: dict[str, Any],
    body: bytes,
) -> None:
    client = make_client()
    with caplog.at_level(logging.DEBUG):
        response = getattr(client, method)(url, status=400, **kwargs)
    assert response.body == body
    assert response.content_type == "text/plain"
    no_error_tracebacks(caplog)
    [line] = [r for r in caplog.records if r.name == "aiopyramid_ng.badrequests"]
    assert line.levelno == logging.INFO
    assert line.getMessage().startswith(f"400 Bad Request: {method.upper()} ")


def test_the_log_line_escapes_what_the_client_sent(caplog: pytest.LogCaptureFixture) -> None:
    client = webtest.TestApp(make_app())
    with caplog.at_level(logging.INFO, logger="aiopyramid_ng.badrequests"):
        client.get("/caf%FF%0A" + "x" * 1000, status=400)
    [line] = caplog.records
    message = line.getMessage()
    assert "\n" not in message
    assert len(message) < 600


def test_a_utf8_form_with_invalid_bytes_reaches_the_view_replaced(
    make_client: Callable[..., Client],
) -> None:
    # WebOb decodes form fields with errors="replace": nothing to refuse.
    client = make_client()
    response = client.post("/form", b"a=%FF", content_type=f"{FORM}; charset=utf-8")
    assert response.text == "\ufffd"


def test_valid_input_is_served(make_client: Callable[..., Client]) -> None:
    client = make_client()
    assert client.get("/caf%C3%A9").text == "/caf\u00e9"
    assert client.get("/query?q=%C3%A9").text == "\u00e9"
    assert json.loads(client.post_json("/json", {"a": "\u00e9"}).text) == {"a": "\u00e9"}


# -- the application's own errors stay server errors ------------------------------------

OWN = [
    ("/own/unicode", UnicodeDecodeError),
    ("/own/json", json.JSONDecodeError),
    ("/own/lookup", LookupError),
]


@pytest.mark.parametrize(("url", "error"), OWN)
def test_the_same_exceptions_raised_by_the_application_stay_500s(
    url: str, error: type[BaseException]
) -> None:
    with pytest.raises(error) as raised:
        webtest.TestApp(make_app()).get(url)
    assert not is_bad_input(raised.value)
    with TestApp(make_asgi_app(make_app()), raise_app_exceptions=False) as client:
        client.get(url, status=500)


def test_key_errors_are_not_mistaken_for_unknown_charsets() -> None:
    def lookup(request: Request) -> Response:
        found: dict[str, str] = {}
        return Response(found["missing"])

    def include(config: Configurator) -> None:
        config.add_route("key", "/key")
        config.add_view(lookup, route_name="key")

    with pytest.raises(KeyError):
        webtest.TestApp(make_app(include)).get("/key")


# -- the application's own exception views win -----------------------------------------


def own_view_for(context: type[BaseException], **predicates: Any) -> Callable[[Configurator], None]:
    def app_exception_view(exc: BaseException, request: Request) -> Response:
        return Response(f"app: {type(exc).__name__}", status=418)

    def include(config: Configurator) -> None:
        config.add_exception_view(app_exception_view, context=context, **predicates)

    return include


@pytest.mark.parametrize("context", [Exception, ValueError, UnicodeDecodeError])
def test_an_exception_view_of_the_application_wins(
    make_client: Callable[..., Client], context: type[BaseException]
) -> None:
    client = make_client(own_view_for(context))
    assert client.get("/caf%FF", status=418).text == "app: URLDecodeError"
    assert client.get("/query?q=%FF", status=418).text == "app: UnicodeDecodeError"


def test_an_exception_view_of_the_including_configuration_wins_without_a_conflict() -> None:
    def app_view(exc: BaseException, request: Request) -> Response:
        return Response("main", status=418)

    with Configurator() as config:
        config.include("aiopyramid_ng")
        config.add_exception_view(app_view, context=UnicodeDecodeError)
        app = config.make_wsgi_app()
    assert webtest.TestApp(app).get("/caf%FF", status=418).text == "main"


def test_the_applications_predicates_decide_whether_its_view_answers(
    make_client: Callable[..., Client],
) -> None:
    client = make_client(own_view_for(Exception, request_method="POST"))
    assert client.get("/query?q=%FF", status=400).body == NOT_UTF8
    assert client.post("/query?q=%FF", status=418).text == "app: UnicodeDecodeError"


def test_json_errors_defer_to_an_application_view_for_value_errors() -> None:
    client = webtest.TestApp(make_app(own_view_for(ValueError)))
    response = client.post("/json", b"{", content_type="application/json", status=418)
    assert response.text == "app: JSONDecodeError"


# -- concurrency ---------------------------------------------------------------------


def test_interleaved_hostile_and_good_requests_each_get_their_own_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    asgi = make_asgi_app(make_app())
    count = 50

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await asyncio.gather(
                *(
                    client.get(f"/async-query?n={n}&q=%FF" if n % 2 else f"/good/{n}")
                    for n in range(count)
                )
            )

    with caplog.at_level(logging.INFO):
        responses = asyncio.run(main())
    for n, response in enumerate(responses):
        if n % 2:
            assert (response.status_code, response.content) == (400, NOT_UTF8)
        else:
            assert (response.status_code, response.text) == (200, f"good {n}")
    no_error_tracebacks(caplog)
    assert len([r for r in caplog.records if r.name == "aiopyramid_ng.badrequests"]) == count // 2
