"""pyramid_retry: a retryable error is retried with the request body intact.

Every view kind fails its first attempt with a retryable error, then echoes
the body it was sent.  pyramid_retry sets an execution policy that
aiopyramid_ng wraps, so both include orders are served.
"""

from __future__ import annotations

from typing import Any

import pytest
import webtest
from pyramid.config import Configurator
from pyramid.interfaces import IExecutionPolicy
from pyramid.request import Request
from pyramid.router import Router
from pyramid_retry import mark_error_retryable

from aiopyramid_ng.asgi import make_asgi_app
from aiopyramid_ng.execution import GreenletExecutionPolicy
from aiopyramid_ng.testing import TestApp
from tests.support.compat import (
    KINDS,
    Requests,
    add_views_by_kind,
    concurrently,
    in_threads,
    server_fixture,
    views_answering,
)

ORDERS = [("aiopyramid_ng", "pyramid_retry"), ("pyramid_retry", "aiopyramid_ng")]


class Flaky(Exception):
    """Fails the first attempt of every request."""


mark_error_retryable(Flaky)


def _answer(request: Request, kind: str) -> dict[str, Any]:
    attempt = request.environ["retry.attempt"]
    if attempt == 0:
        raise Flaky(kind)
    return {"kind": kind, "attempt": attempt, "body": request.text}


def make_app(order: tuple[str, str]) -> Router:
    with Configurator(settings={"retry.attempts": "2"}) as config:
        for name in order:
            config.include(name)
        views = views_answering(_answer, pause=0.002)
        add_views_by_kind(config, views, request_method="POST", renderer="json")
        return config.make_wsgi_app()


def plan(count: int) -> Requests:
    return [
        ("POST", f"/{KINDS[n % 3]}", {"content": f"body {n} ".encode() * (n + 1)})
        for n in range(count)
    ]


def check(path: str, sent: bytes, answer: dict[str, Any]) -> None:
    assert answer == {"kind": path[1:], "attempt": 1, "body": sent.decode()}


@pytest.fixture(scope="module", params=ORDERS, ids=["-then-".join(o) for o in ORDERS])
def app(request: pytest.FixtureRequest) -> Router:
    return make_app(request.param)


server = server_fixture()


def test_the_policy_chain_holds_retry_inside_the_greenlet_policy(app: Router) -> None:
    policy = app.registry.getUtility(IExecutionPolicy)
    assert isinstance(policy, GreenletExecutionPolicy)
    assert "retry_policy" in repr(policy)


def test_interleaved_retries_keep_their_bodies(server: str) -> None:
    requests = plan(60)
    for (_, path, options), response in zip(requests, concurrently(server, requests), strict=True):
        assert response.status_code == 200, response.text
        check(path, options["content"], response.json())


def test_in_process_asgi(app: Router) -> None:
    with TestApp(make_asgi_app(app)) as client:
        for _, path, options in plan(6):
            check(path, options["content"], client.post(path, options["content"]).json)


def test_webtest_from_several_threads(app: Router) -> None:
    client = webtest.TestApp(app)

    def post(share: Requests) -> None:
        for _, path, options in share:
            check(path, options["content"], client.post(path, options["content"]).json)

    requests = plan(12)
    assert in_threads(post, [requests[n::3] for n in range(3)]) == []
