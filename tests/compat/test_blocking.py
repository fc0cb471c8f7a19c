"""A wiki2-style application whose hooks block: served by every request, in each mode.

Pyramid's wiki2 tutorial queries the database from its route factory and its
security policy, through a sync ``Session`` joined to pyramid_tm.  In the
default pipeline those hooks run on the event loop thread.  The application
below is served, unchanged, in the two modes that make it safe:

* ``aiopyramid_ng.pipeline = executor`` with a sync engine: each request's
  whole pipeline runs in the thread pool;
* the greenlet path: the engine URL switched to ``sqlite+aiosqlite`` and the
  views registered with ``GreenletMapper``; every query waits on the loop
  through SQLAlchemy's greenlet protocol, with no thread.

In the default mode the blocking detector names the request whose hooks
blocked the loop.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pyramid.authorization import ACLHelper, Allow, Authenticated, Everyone
from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPNotFound
from pyramid.request import Request
from pyramid.router import Router
from sqlalchemy import ForeignKey, String, create_engine, event, select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from aiopyramid_ng.asgi import make_asgi_app
from aiopyramid_ng.config import GreenletMapper
from aiopyramid_ng.events import ApplicationShutdown
from aiopyramid_ng.testing import TestApp
from tests.support.compat import (
    Requests,
    concurrently,
    dispose_async_engine,
    include_tm_with_sessions,
    server_fixture,
)

PAGES = 20


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    role: Mapped[str] = mapped_column(String(20))


class Page(Base):
    __tablename__ = "pages"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    data: Mapped[str] = mapped_column(String(200))
    creator_id: Mapped[int] = mapped_column(ForeignKey("users.id"))


# -- the application, as wiki2 writes it ---------------------------------------


class PageResource:
    """wiki2's route factory: loads the page with a blocking query."""

    def __init__(self, request: Request):
        page = request.dbsession.scalars(
            select(Page).where(Page.name == request.matchdict["pagename"])
        ).one_or_none()
        if page is None:
            raise HTTPNotFound()
        slow = request.registry.settings.get("test.slow_factory_seconds")
        if slow:
            time.sleep(float(slow))  # a slow database, as seen from here
        self.page = page

    def __acl__(self) -> list[tuple[str, str, str]]:
        return [(Allow, Everyone, "view"), (Allow, f"u:{self.page.creator_id}", "edit")]


class SecurityPolicy:
    """wiki2's security policy: loads the user with a blocking query."""

    def __init__(self) -> None:
        self.acl = ACLHelper()

    def identity(self, request: Request) -> User | None:
        name = request.headers.get("X-User")
        if name is None:
            return None
        user: User | None = request.dbsession.scalars(
            select(User).where(User.name == name)
        ).one_or_none()
        return user

    def authenticated_userid(self, request: Request) -> int | None:
        user = self.identity(request)
        return user.id if user is not None else None

    def permits(self, request: Request, context: Any, permission: str) -> Any:
        user = self.identity(request)
        principals = [Everyone]
        if user is not None:
            principals += [Authenticated, f"u:{user.id}", f"role:{user.role}"]
        return self.acl.permits(context, principals, permission)

    def forget(self, request: Request, **kw: Any) -> list[tuple[str, str]]:
        return []


def view_page(context: PageResource, request: Request) -> dict[str, Any]:
    return {
        "page": context.page.name,
        "data": context.page.data,
        "thread": threading.current_thread().name,
    }


def edit_page(context: PageResource, request: Request) -> dict[str, Any]:
    context.page.data = f"edited by {request.headers['X-User']}"
    return {"page": context.page.name, "edited": True}


def make_app(database: Path, mode: str, **settings: Any) -> Router:
    """The application; ``mode`` is ``executor``, ``greenlet`` or ``default``."""
    url = f"sqlite:///{database}"
    setup_engine = create_engine(url)
    Base.metadata.create_all(setup_engine)
    with Session(setup_engine) as session, session.begin():
        if session.scalar(select(User.id).limit(1)) is None:
            session.add_all(
                [User(id=1, name="editor", role="editor"), User(id=2, name="basic", role="basic")]
            )
            session.add_all(
                Page(name=f"Page{n}", data=f"text {n}", creator_id=1 + n % 2) for n in range(PAGES)
            )
    view_options: dict[str, Any] = {}
    engine: Any  # an AsyncEngine for the greenlet mode, the setup's Engine otherwise
    if mode == "greenlet":
        setup_engine.dispose()
        engine = create_async_engine(f"sqlite+aiosqlite:///{database}")
        factory = sessionmaker(bind=engine.sync_engine)
        view_options["mapper"] = GreenletMapper
    else:
        engine = setup_engine
        factory = sessionmaker(bind=engine)
        settings["aiopyramid_ng.pipeline"] = "executor" if mode == "executor" else "greenlet"
    _count_connections(engine.sync_engine if mode == "greenlet" else engine, settings)

    with Configurator(settings=settings) as config:
        config.include("aiopyramid_ng")
        include_tm_with_sessions(config, factory)
        config.set_security_policy(SecurityPolicy())
        config.add_route("view_page", "/{pagename}", factory=PageResource)
        config.add_route("edit_page", "/{pagename}/edit", factory=PageResource)
        config.add_view(
            view_page, route_name="view_page", permission="view", renderer="json", **view_options
        )
        config.add_view(
            edit_page, route_name="edit_page", permission="edit", renderer="json", **view_options
        )
        config.registry.engine = engine
        if mode == "greenlet":
            config.registry.async_engine = engine
            config.add_subscriber(dispose_async_engine, ApplicationShutdown)
        return config.make_wsgi_app()


def _count_connections(engine: Any, settings: dict[str, Any]) -> None:
    threads: set[str] = set()
    settings["test.query_threads"] = threads

    @event.listens_for(engine, "before_cursor_execute")
    def record(*args: Any) -> None:
        threads.add(threading.current_thread().name)


def plan(count: int) -> Requests:
    requests: Requests = []
    for n in range(count):
        page = f"/Page{n % PAGES}"
        if n % 10 in (3, 4):
            requests.append(("POST", f"{page}/edit", {"headers": {"X-User": "editor"}}))
        elif n % 10 == 7:
            requests.append(("GET", "/Missing", {}))
        else:
            requests.append(("GET", page, {"headers": {"X-User": "basic"}}))
    return requests


def expected_status(path: str) -> int:
    if path == "/Missing":
        return 404
    if path.endswith("/edit"):
        # Page n is created by user 1 + n % 2: "editor" is user 1.
        return 200 if int(path.split("/")[1][4:]) % 2 == 0 else 403
    return 200


@pytest.fixture(scope="module", params=["executor", "greenlet"])
def app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Router:
    return make_app(tmp_path_factory.mktemp("wiki") / "wiki.sqlite", request.param)


server = server_fixture()


def test_200_concurrent_requests_all_complete(server: str, app: Router) -> None:
    requests = plan(200)
    responses = concurrently(server, requests)
    for (_, path, _), response in zip(requests, responses, strict=True):
        assert response.status_code == expected_status(path), (path, response.text)
    greenlet = app.registry.settings.get("aiopyramid_ng.pipeline") is None
    query_threads = app.registry.settings["test.query_threads"]
    view_threads = {r.json()["thread"] for r in responses if "thread" in r.text}
    if greenlet:
        # No thread for the views, and every query waited on the loop: the
        # sync engine's hooks issue them from the event loop thread, where
        # aiosqlite's cursor calls are awaited through the request greenlet.
        assert view_threads == {"uvicorn"}
        assert query_threads == {"uvicorn"}
    else:
        assert "uvicorn" not in view_threads | query_threads
    with Session(create_engine(f"sqlite:///{app.registry.engine.url.database}")) as session:
        edited = session.scalars(select(Page.name).where(Page.data == "edited by editor")).all()
    assert edited  # the writes of the editor's requests were committed


def test_in_process_asgi(app: Router) -> None:
    with TestApp(make_asgi_app(app)) as client:
        assert client.get("/Page2", headers={"X-User": "basic"}).json["data"]
        client.post("/Page1/edit", headers={"X-User": "editor"}, status=403)
        client.get("/Missing", status=404)


def test_blocking_detector_names_a_blocking_route_factory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(
        tmp_path / "wiki.sqlite",
        "default",
        **{"aiopyramid_ng.debug.blocking_ms": "20", "test.slow_factory_seconds": "0.05"},
    )
    with (
        caplog.at_level(logging.WARNING, logger="aiopyramid_ng.debug"),
        TestApp(make_asgi_app(app)) as client,
    ):
        client.get("/Page3", headers={"X-User": "basic"})
    messages = [record.getMessage() for record in caplog.records]
    assert any(
        "request GET /Page3 ran" in message
        and "before its view was called, in a tween, the root factory" in message
        for message in messages
    ), messages
