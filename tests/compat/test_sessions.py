"""Sessions: Pyramid's signed-cookie sessions, and an ``async def`` session factory.

Many clients, interleaved, each count their own visits; a session belongs
to one client only.  The async factory loads from (and an async response
callback saves to) a store that makes every access wait on the loop, as a
Redis client would.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
import webtest
from pyramid.config import Configurator
from pyramid.interfaces import ISessionFactory
from pyramid.request import Request
from pyramid.response import Response
from pyramid.router import Router
from pyramid.session import SignedCookieSessionFactory

from aiopyramid_ng.asgi import make_asgi_app
from aiopyramid_ng.sessions import async_session_factory
from aiopyramid_ng.testing import TestApp
from tests.support.compat import KINDS, add_views_by_kind, server_fixture, views_answering
from tests.support.servers import PATIENCE

COOKIE = "store_session"


class Store:
    """An in-memory key-value store whose every call waits on the loop."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    async def load(self, key: str) -> dict[str, Any]:
        await asyncio.sleep(0.001)
        return dict(self.data.get(key, {}))

    async def save(self, key: str, value: dict[str, Any]) -> None:
        await asyncio.sleep(0.001)
        self.data[key] = value


class StoreSession(dict[str, Any]):
    """The session data of one client, kept in a :class:`Store` under ``key``."""

    def __init__(self, key: str, data: dict[str, Any], new: bool):
        super().__init__(data)
        self.key = key
        self.new = new


async def store_session(request: Request) -> StoreSession:
    store: Store = request.registry.store
    key = request.cookies.get(COOKIE)
    session = StoreSession(key or uuid.uuid4().hex, await store.load(key) if key else {}, not key)

    async def save(request: Request, response: Response) -> None:
        await store.save(session.key, dict(session))
        if session.new:
            response.set_cookie(COOKIE, session.key)

    request.add_response_callback(save)
    return session


def _count(request: Request, kind: str) -> dict[str, Any]:
    session = request.session
    session["visits"] = session.get("visits", 0) + 1
    return {"client": request.params["client"], "visits": session["visits"], "kind": kind}


def make_app(sessions: str, wrap: bool = False) -> Router:
    with Configurator() as config:
        config.include("aiopyramid_ng")
        if sessions == "signed":
            config.set_session_factory(SignedCookieSessionFactory("secret"))
        else:
            config.registry.store = Store()
            factory = async_session_factory(store_session) if wrap else store_session
            config.set_session_factory(factory)
        # In the executor view's thread, request.session awaits an async factory on the loop.
        add_views_by_kind(config, views_answering(_count, pause=0.001), renderer="json")
        return config.make_wsgi_app()


@pytest.fixture(scope="module", params=["signed", "async"])
def app(request: pytest.FixtureRequest) -> Router:
    return make_app(request.param)


server = server_fixture()


async def _visit_three_times(base: str, client: int) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=base, timeout=PATIENCE) as http:
        answers = []
        for visit in range(3):
            kind = KINDS[(client + visit) % 3]
            response = await http.get(f"/{kind}", params={"client": str(client)})
            assert response.status_code == 200, response.text
            answers.append(response.json())
        return answers


async def _many_clients(base: str, count: int) -> list[list[dict[str, Any]]]:
    return await asyncio.gather(*(_visit_three_times(base, n) for n in range(count)))


def test_interleaved_clients_keep_their_own_sessions(server: str) -> None:
    for client, answers in enumerate(asyncio.run(_many_clients(server, 40))):
        assert [a["visits"] for a in answers] == [1, 2, 3]
        assert {a["client"] for a in answers} == {str(client)}


@pytest.mark.parametrize("sessions", ["signed", "async", "wrapped"])
def test_in_process_asgi_and_webtest(sessions: str) -> None:
    app = make_app("async" if sessions == "wrapped" else sessions, wrap=sessions == "wrapped")
    with TestApp(make_asgi_app(app)) as client:
        visits = [client.get(f"/{k}", {"client": "1"}).json["visits"] for k in KINDS]
    assert visits == [1, 2, 3]
    client = webtest.TestApp(app)
    visits = [client.get(f"/{k}", {"client": "2"}).json["visits"] for k in KINDS]
    assert visits == [1, 2, 3]


def test_a_coroutine_session_factory_is_registered_wrapped() -> None:
    factory = make_app("async").registry.getUtility(ISessionFactory)
    assert factory.__wrapped__ is store_session
