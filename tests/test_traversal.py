"""Traversal with ``async def __getitem__``, async root factories and async ACLs.

The concurrency checks run over a real uvicorn server on 127.0.0.1 and over
the in-process ASGI TestApp.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pyramid.authorization import Allow, Authenticated, Everyone
from pyramid.config import Configurator
from pyramid.events import ContextFound
from pyramid.request import Request
from pyramid.response import Response
from pyramid.traversal import ResourceTreeTraverser, find_resource, resource_path
from webtest import TestApp as WSGITestApp
from zope.interface import Interface, implementedBy, implementer

from aiopyramid_ng.asgi import make_asgi_app
from aiopyramid_ng.exceptions import ScopeError
from aiopyramid_ng.helpers import spawn_greenlet
from aiopyramid_ng.security import ACLHelper
from aiopyramid_ng.testing import TestApp
from aiopyramid_ng.traversal import AsyncTraverser
from tests.support.apps import make_app, make_asgi, tick
from tests.support.leaks import LeakCheck
from tests.support.servers import PATIENCE, uvicorn_thread

USERS = [f"user{n}" for n in range(10)]


class Folder:
    """A resource tree node loaded "from storage" with awaits."""

    def __init__(self, name: str, parent: Folder | None, owner: str | None = None):
        self.__name__ = name
        self.__parent__ = parent
        self.owner = owner

    async def __getitem__(self, name: str) -> Folder:
        await tick()
        if self.__parent__ is None and name in USERS:
            return Folder(name, self, owner=name)
        if self.owner is not None and name.startswith("doc"):
            return Folder(name, self, owner=self.owner)
        raise KeyError(name)

    async def __acl__(self) -> list[Any]:
        await tick()
        if self.owner is None:
            return [(Allow, Authenticated, "list")]
        return [(Allow, self.owner, "read")]


async def root_factory(request: Request) -> Folder:
    await tick()
    return Folder("", None)


class HeaderPolicy:
    async def identity(self, request: Request) -> str | None:
        await tick()
        user: str | None = request.headers.get("X-User")
        return user

    def authenticated_userid(self, request: Request) -> str | None:
        userid: str | None = request.identity
        return userid

    async def permits(self, request: Request, context: Any, permission: str) -> Any:
        principals = [Everyone]
        if request.identity:
            principals += [Authenticated, request.identity]
        return ACLHelper().permits(context, principals, permission)


async def read(context: Folder, request: Request) -> dict[str, Any]:
    await tick()
    return {
        "owner": context.owner,
        "user": request.authenticated_userid,
        "path": resource_path(context),
        "url": request.resource_url(context),
        "root": type(request.root).__name__,
        "view_name": request.view_name,
        "subpath": list(request.subpath),
    }


async def listing(context: Folder, request: Request) -> dict[str, Any]:
    # find_resource() traverses through the async __getitem__ as well.
    found = find_resource(request.root, f"/{request.params['owner']}/doc9")
    return {"found": resource_path(found), "view_name": request.view_name}


def blocking_find(context: Folder, request: Request) -> dict[str, Any]:
    # In a worker thread: the traversal's awaits run on the request's loop.
    found = find_resource(context, "doc7")
    return {"found": resource_path(found)}


def setup(config: Configurator) -> None:
    config.set_root_factory(root_factory)
    config.set_security_policy(HeaderPolicy())
    config.add_view(read, context=Folder, permission="read", renderer="json")
    config.add_view(read, context=Folder, name="meta", permission="read", renderer="json")
    config.add_view(listing, context=Folder, name="list", permission="list", renderer="json")
    config.add_view(blocking_find, context=Folder, name="find", renderer="json")


def expected_status(user: str, owner: str) -> int:
    return 200 if user == owner else 403


def test_traversal_view_name_subpath_and_urls() -> None:
    app = WSGITestApp(make_app(setup))
    headers = {"X-User": "user3"}
    body = app.get("/user3/doc1/", headers=headers).json
    assert body == {
        "owner": "user3",
        "user": "user3",
        "path": "/user3/doc1",
        "url": "http://localhost/user3/doc1/",
        "root": "Folder",
        "view_name": "",
        "subpath": [],
    }
    # KeyError from the async __getitem__ ends traversal: "meta" is the view name.
    meta = app.get("/user3/doc1/meta/a/b", headers=headers).json
    assert meta["path"] == "/user3/doc1"
    assert meta["view_name"] == "meta"
    assert meta["subpath"] == ["a", "b"]
    # An explicit view selector stops traversal before any lookup.
    assert app.get("/user3/@@meta", headers=headers).json["path"] == "/user3"
    assert app.get("/nobody", headers=headers, status=404)
    app.get("/user3/doc1", headers={"X-User": "user4"}, status=403)
    app.get("/user3/doc1", status=403)


def test_find_resource_from_coroutine_and_executor_views() -> None:
    app = WSGITestApp(make_app(setup))
    listed = app.get("/list", params={"owner": "user2"}, headers={"X-User": "x"}).json
    assert listed == {"found": "/user2/doc9", "view_name": "list"}
    assert app.get("/user5/find").json == {"found": "/user5/doc7"}


def test_virtual_root() -> None:
    app = WSGITestApp(make_app(setup))
    body = app.get("/doc4", headers={"X-User": "user1", "X-Vhm-Root": "/user1"}).json
    assert body["path"] == "/user1/doc4"
    assert body["url"] == "http://localhost/doc4/"


def test_200_concurrent_users_in_process_asgi(leak_check: LeakCheck) -> None:
    with Configurator() as config:
        config.include("aiopyramid_ng")
        setup(config)
        asgi = make_asgi_app(config.make_wsgi_app(), config.registry)

    async def main() -> None:
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await check_concurrent_users(client)
        leak_check.assert_clean(asyncio.get_running_loop())

    asyncio.run(main())


def test_asgi_test_app() -> None:
    asgi = make_asgi(setup)
    with TestApp(asgi) as app:
        assert app.get("/user1/doc2", headers={"X-User": "user1"}).json["path"] == "/user1/doc2"
        app.get("/user1/doc2", headers={"X-User": "user2"}, status=403)


async def check_concurrent_users(client: httpx.AsyncClient) -> None:
    requests = [(USERS[n % 10], USERS[(n * 7) % 10], n) for n in range(200)]

    async def one(user: str, owner: str, n: int) -> tuple[int, Any]:
        response = await client.get(f"/{owner}/doc{n}", headers={"X-User": user})
        return response.status_code, response.json() if response.status_code == 200 else None

    results = await asyncio.gather(*(one(*r) for r in requests))
    allowed = 0
    for (user, owner, n), (status, body) in zip(requests, results, strict=True):
        assert status == expected_status(user, owner), (user, owner)
        if status == 200:
            allowed += 1
            assert body["user"] == user
            assert body["path"] == f"/{owner}/doc{n}"
    assert 0 < allowed < 200


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    asgi = make_asgi(setup)
    with uvicorn_thread(asgi, log_level="warning") as url:
        yield url


def test_200_concurrent_users_over_uvicorn(server_url: str) -> None:
    async def main() -> None:
        limits = httpx.Limits(max_connections=50)
        # 150 requests queue for the 50 connections: on a loaded machine (a
        # coverage run) the wait for a free one can pass httpx's 5 s default,
        # which says nothing about the add-on.  PATIENCE still bounds a hang.
        async with httpx.AsyncClient(
            base_url=server_url, limits=limits, timeout=PATIENCE
        ) as client:
            await check_concurrent_users(client)

    asyncio.run(main())


def test_client_disconnect_mid_traversal_over_uvicorn(server_url: str) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(base_url=server_url) as client:
            with pytest.raises(httpx.TimeoutException):
                await client.get("/user1/doc1", headers={"X-User": "user1"}, timeout=0.0005)
            response = await client.get("/user1/doc1", headers={"X-User": "user1"})
            assert response.status_code == 200

    asyncio.run(main())


# -- misuse and the traverser alone ------------------------------------------------------


class IPlainRoot(Interface):  # type: ignore[misc]
    """A root traversed by Pyramid's own traverser."""


@implementer(IPlainRoot)
class PlainRoot(Folder):
    pass


def test_async_getitem_with_pyramid_traverser_names_the_method() -> None:
    def setup_plain(config: Configurator) -> None:
        config.set_root_factory(lambda request: PlainRoot("", None))
        config.add_traverser(ResourceTreeTraverser, IPlainRoot)
        config.add_view(read, context=Folder, renderer="json")

    app = WSGITestApp(make_app(setup_plain))
    with pytest.raises(TypeError, match=r"Folder.__getitem__\(\).*AsyncTraverser"):
        app.get("/user1")


def test_async_root_factory_with_pyramid_traverser_names_it() -> None:
    def setup_plain(config: Configurator) -> None:
        config.set_root_factory(root_factory)
        config.add_traverser(ResourceTreeTraverser)
        config.add_view(read, renderer="json")

    app = WSGITestApp(make_app(setup_plain))
    with pytest.raises(TypeError, match=r"root_factory\(\) as the request's context"):
        app.get("/")


def test_route_factory_may_be_async() -> None:
    async def route_root(request: Request) -> Folder:
        await tick()
        return Folder("", None, owner=request.matchdict["owner"])

    async def owned(context: Folder, request: Request) -> Response:
        return Response(f"{context.owner}:{request.view_name}")

    def setup_route(config: Configurator) -> None:
        config.add_route("owned", "/owned/{owner}/*traverse", factory=route_root)
        config.add_view(owned, route_name="owned")
        config.add_view(owned, route_name="owned", name="info")

    app = WSGITestApp(make_app(setup_route))
    assert app.get("/owned/ann/doc1").text == "ann:"
    assert app.get("/owned/ann/doc1/info").text == "ann:info"
    app.get("/owned/ann/zzz", status=404)


def test_traverser_outside_any_request_names_the_method() -> None:
    traverser = AsyncTraverser(Folder("", None))

    async def main() -> None:
        traverser(Request.blank("/user1"))

    with pytest.raises(ScopeError, match=r"Folder.__getitem__ returned an awaitable"):
        asyncio.run(main())


def test_traverser_on_its_own_in_a_greenlet() -> None:
    def walk(path: str) -> dict[str, Any]:
        request = Request.blank(path)
        found: dict[str, Any] = AsyncTraverser(root_factory(request))(request)
        return found

    async def main() -> None:
        found = await spawn_greenlet(walk, "/user1/doc2/edit")
        assert resource_path(found["context"]) == "/user1/doc2"
        assert isinstance(found["root"], Folder)
        assert found["virtual_root"] is found["root"]
        assert found["view_name"] == "edit"
        assert list(found["traversed"]) == ["user1", "doc2"]

    asyncio.run(main())


def test_no_context_check_per_request_without_another_traverser() -> None:
    with Configurator() as config:
        config.include("aiopyramid_ng")
    found = config.registry.adapters.subscriptions([implementedBy(ContextFound)], None)
    assert found == []
