"""SQLAlchemy in every view kind, a session per request, and shared sessions caught.

* coroutine views: an ``AsyncSession`` over aiosqlite;
* ``GreenletMapper`` views: a sync ``Session`` over the same async engine,
  whose I/O waits on the loop through SQLAlchemy's greenlet protocol;
* executor views: a sync ``Session`` over a sync engine, in the thread pool.

Each request gets its session from a reified request method, closed by a
finished callback.  A thread-scoped ``scoped_session`` used by two
interleaved requests raises :class:`~aiopyramid_ng.compat.sqlalchemy.SharedSessionError`.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import webtest
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response
from pyramid.router import Router
from sqlalchemy import create_engine, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from aiopyramid_ng.asgi import make_asgi_app
from aiopyramid_ng.bridge import spawn_greenlet
from aiopyramid_ng.config import GreenletMapper
from aiopyramid_ng.events import ApplicationShutdown
from aiopyramid_ng.exceptions import SharedSessionError
from aiopyramid_ng.execution import thread_loop
from aiopyramid_ng.helpers import await_
from aiopyramid_ng.settings import DEFAULT_MAX_WORKERS
from aiopyramid_ng.testing import TestApp
from tests.support.compat import (
    Base,
    Row,
    add_views_by_kind,
    concurrently,
    dispose_async_engine,
    server_fixture,
)
from tests.support.leaks import LeakCheck
from tests.support.servers import PATIENCE

KINDS = ("coroutine", "greenlet", "executor")


# -- a session per request -------------------------------------------------------


async def _close_async(request: Request) -> None:
    await request.async_dbsession.close()


def async_dbsession(request: Request) -> AsyncSession:
    session: AsyncSession = request.registry.async_sessions()
    request.add_finished_callback(_close_async)
    return session


def dbsession(request: Request) -> Session:
    """A sync session: over the async engine in the request greenlet, else the sync one."""
    registry = request.registry
    factory = (
        registry.greenlet_sessions
        if request.matched_route.name == "greenlet"
        else (registry.thread_sessions)
    )
    session: Session = factory()
    request.add_finished_callback(lambda request: session.close())
    return session


def _answer(request: Request, count: int) -> dict[str, Any]:
    return {"count": count, "thread": threading.current_thread().name}


async def coroutine_view(request: Request) -> dict[str, Any]:
    session = request.async_dbsession
    tag = request.matchdict["tag"]
    session.add(Row(tag=tag))
    await asyncio.sleep(0.002)
    await session.commit()
    count = await session.scalar(select(func.count()).where(Row.tag == tag))
    return _answer(request, count)


def greenlet_view(request: Request) -> dict[str, Any]:
    session = request.dbsession
    tag = request.matchdict["tag"]
    session.add(Row(tag=tag))
    await_(asyncio.sleep(0.002))
    session.commit()  # waits on the loop: no thread
    return _answer(request, session.scalar(select(func.count()).where(Row.tag == tag)))


def executor_view(request: Request) -> dict[str, Any]:
    session = request.dbsession
    tag = request.matchdict["tag"]
    session.add(Row(tag=tag))
    time.sleep(0.002)
    session.commit()
    return _answer(request, session.scalar(select(func.count()).where(Row.tag == tag)))


# -- a thread-scoped scoped_session, shared by every request on the loop ------------


def shared_view(request: Request) -> Response:
    shared: scoped_session[Session] = request.registry.shared_session
    gate: asyncio.Event = request.registry.gate
    try:
        shared.scalar(select(func.count()).select_from(Row))
        # Hold the session's transaction until the other request tried it.
        await_(asyncio.wait_for(gate.wait(), PATIENCE))
        return Response("first")
    finally:
        if not request.params.get("keep"):
            shared.remove()


def shared_error_view(exc: SharedSessionError, request: Request) -> Response:
    request.registry.gate.set()
    return Response(str(exc), status=409)


def make_app(database: Path) -> Router:
    sync_engine = create_engine(f"sqlite:///{database}")
    Base.metadata.create_all(sync_engine)
    async_engine = create_async_engine(f"sqlite+aiosqlite:///{database}")
    with Configurator() as config:
        config.include("aiopyramid_ng")
        registry = config.registry
        registry.async_engine = async_engine
        registry.async_sessions = async_sessionmaker(async_engine)
        registry.greenlet_sessions = sessionmaker(bind=async_engine.sync_engine)
        registry.thread_sessions = sessionmaker(bind=sync_engine)
        registry.shared_session = scoped_session(sessionmaker(bind=async_engine.sync_engine))
        registry.gate = asyncio.Event()
        config.add_request_method(async_dbsession, reify=True)
        config.add_request_method(dbsession, reify=True)
        config.add_subscriber(dispose_async_engine, ApplicationShutdown)
        views = {"coroutine": coroutine_view, "greenlet": greenlet_view, "executor": executor_view}
        add_views_by_kind(config, views, suffix="/{tag}", renderer="json")
        config.add_route("shared", "/shared")
        config.add_view(shared_view, route_name="shared", mapper=GreenletMapper)
        config.add_exception_view(shared_error_view, SharedSessionError)
        return config.make_wsgi_app()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Router:
    return make_app(tmp_path_factory.mktemp("sqla") / "db.sqlite")


server = server_fixture()


def test_interleaved_requests_each_use_their_own_session(server: str) -> None:
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"/{KINDS[n % 3]}/u{n}", {}) for n in range(90)
    ]
    responses = concurrently(server, requests)
    for (_, path, _), response in zip(requests, responses, strict=True):
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["count"] == 1
        in_pool = answer["thread"].startswith("aiopyramid_ng")
        assert in_pool is path.startswith("/executor"), answer


def test_a_thread_scoped_session_shared_by_two_requests_is_refused(server: str) -> None:
    first, second = concurrently(server, [("GET", "/shared", {}), ("GET", "/shared", {})])
    statuses = sorted([first.status_code, second.status_code])
    assert statuses == [200, 409]
    refused = first if first.status_code == 409 else second
    assert "began its transaction in request GET /shared" in refused.text
    assert "scoped_session" in refused.text and "dbsession" in refused.text


def test_in_process_asgi_and_webtest(tmp_path: Path, leak_check: LeakCheck) -> None:
    app = make_app(tmp_path / "db.sqlite")
    with TestApp(make_asgi_app(app)) as client:
        for kind in KINDS:
            assert client.get(f"/{kind}/t-{kind}").json["count"] == 1
    client = webtest.TestApp(app)
    for kind in KINDS:
        assert client.get(f"/{kind}/w-{kind}").json["count"] == 1
    # No lifespan in plain WSGI: close the connections made on this thread's loop.
    thread_loop().run_until_complete(app.registry.async_engine.dispose())
    # The application's pool threads may stay; nothing else may.
    leak_check.assert_clean(max_new_threads=DEFAULT_MAX_WORKERS)


def test_sequential_requests_may_reuse_a_session(tmp_path: Path) -> None:
    """Only a request still running owns the session: the next one may take it over."""
    app = make_app(tmp_path / "db.sqlite")
    app.registry.gate.set()
    client = webtest.TestApp(app)
    # The session stays open, in its transaction, from one request to the next.
    assert [client.get("/shared?keep=1").text for _ in range(2)] == ["first", "first"]
    thread_loop().run_until_complete(spawn_greenlet(app.registry.shared_session.remove))
    thread_loop().run_until_complete(app.registry.async_engine.dispose())


def test_an_application_without_sqlalchemy_does_not_import_it() -> None:
    # The check is installed only when the application has imported the ORM.
    script = (
        "import sys\n"
        "from pyramid.config import Configurator\n"
        "with Configurator() as config:\n"
        "    config.include('aiopyramid_ng')\n"
        "    config.make_wsgi_app()\n"
        "assert 'sqlalchemy' not in sys.modules, 'imported'\n"
        "import sqlalchemy.orm\n"
        "with Configurator() as config:\n"
        "    config.include('aiopyramid_ng')\n"
        "    config.make_wsgi_app()\n"
        "from sqlalchemy import event\n"
        "from aiopyramid_ng.compat.sqlalchemy import _check_execute\n"
        "assert event.contains(sqlalchemy.orm.Session, 'do_orm_execute', _check_execute)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
