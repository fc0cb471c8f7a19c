"""pyramid_tm + transaction + zope.sqlalchemy + SQLAlchemy under interleaved requests.

Each request writes two rows with a wait in between, from a coroutine view,
an executor view or a greenlet view; every fourth one then fails.  Afterwards
the database must hold exactly the rows of the requests that succeeded: a
transaction shared by interleaved requests would lose rows (another request's
``begin()`` aborts it) or keep failed ones (another request's ``commit()``).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import transaction
import webtest
import zope.sqlalchemy
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response
from pyramid.router import Router
from sqlalchemy import create_engine, select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from aiopyramid_ng.asgi import make_asgi_app
from aiopyramid_ng.compat.transaction import ContextTransactionManager, RequestTransactionPolicy
from aiopyramid_ng.config import GreenletMapper
from aiopyramid_ng.events import ApplicationShutdown
from aiopyramid_ng.execution import thread_loop
from aiopyramid_ng.helpers import await_
from aiopyramid_ng.settings import DEFAULT_MAX_WORKERS
from aiopyramid_ng.testing import TestApp
from tests.support.compat import (
    KINDS,
    Base,
    Requests,
    Row,
    add_views_by_kind,
    concurrently,
    dispose_async_engine,
    in_threads,
    include_tm_with_sessions,
    server_fixture,
)
from tests.support.leaks import LeakCheck
from tests.support.servers import HOST, PATIENCE, wait_until


class Boom(Exception):
    """Raised by a view after writing, so the request's transaction must abort."""


def _write(request: Request, part: str) -> None:
    request.dbsession.add(Row(tag=f"{request.matchdict['tag']}-{part}"))


def _finish(request: Request) -> dict[str, Any]:
    if request.params.get("fail"):
        raise Boom(request.matchdict["tag"])
    # Where the view runs (a worker thread for executor views), the current
    # transaction is still the one pyramid_tm began for this request.
    same = request.tm.get() is request.environ["test.transaction"]
    if not request.registry.settings.get("tm.manager_hook"):
        same = same and transaction.get() is request.environ["test.transaction"]
    return {"tag": request.matchdict["tag"], "same": same}


def transaction_recorder(handler: Any, registry: Any) -> Any:
    """A tween under pyramid_tm's: records the transaction it began, where it began it."""

    def record_transaction(request: Request) -> Any:
        request.environ["test.transaction"] = request.tm.get()
        return handler(request)

    return record_transaction


async def coroutine_view(request: Request) -> dict[str, Any]:
    _write(request, "a")
    await asyncio.sleep(0.005)
    _write(request, "b")
    if not request.registry.settings["test.io_in_threads"]:
        # A sync session over an async engine does its I/O through the
        # request greenlet, from a coroutine view too.
        request.dbsession.execute(select(Row.id).limit(1)).all()
    return _finish(request)


def executor_view(request: Request) -> dict[str, Any]:
    # Runs in a worker thread with a copy of the request's context.
    _write(request, "a")
    time.sleep(0.005)
    _write(request, "b")
    if request.registry.settings["test.io_in_threads"]:
        # A sync engine's I/O runs here, in the thread.  (A session over an
        # async engine cannot do I/O in a thread: its rows are flushed at
        # commit, in the request greenlet.)
        request.dbsession.execute(select(Row.id).limit(1)).all()
    return _finish(request)


def greenlet_view(request: Request) -> dict[str, Any]:
    _write(request, "a")
    await_(asyncio.sleep(0.005))
    _write(request, "b")
    if not request.registry.settings["test.io_in_threads"]:
        request.dbsession.execute(select(Row.id).limit(1)).all()
    return _finish(request)


def boom_view(exc: Boom, request: Request) -> Response:
    return Response(f"failed {exc}", status=500)


def hang_view(request: Request) -> dict[str, Any]:
    """Writes, holds a connection, then waits until its client disconnects."""
    registry = request.registry
    _write(request, "a")
    request.dbsession.execute(select(Row.id).limit(1)).all()
    registry.entered.add(request.matchdict["tag"])
    if registry.settings["test.io_in_threads"]:
        # The whole pipeline runs in a worker thread, which a disconnect
        # cannot interrupt: it runs on until the test releases it.
        registry.gate.wait(PATIENCE)
    else:
        await_(asyncio.Event().wait())
    return {"tag": request.matchdict["tag"]}


def status_view(request: Request) -> dict[str, Any]:
    registry = request.registry
    return {"entered": sorted(registry.entered), "checkedout": registry.bind.pool.checkedout()}


def make_app(database: Path, manager: str, pipeline: str) -> Router:
    """The cookiecutter stack.  A sync engine needs the executor pipeline:
    pyramid_tm commits in a tween, which would otherwise block the loop."""
    io_in_threads = pipeline == "executor"
    settings: dict[str, Any] = {
        "aiopyramid_ng.pipeline": pipeline,
        "test.io_in_threads": io_in_threads,
    }
    if manager == "explicit":
        settings["tm.manager_hook"] = "pyramid_tm.explicit_manager"
    engine = create_engine(f"sqlite:///{database}")
    Base.metadata.create_all(engine)
    if io_in_threads:
        bind = engine
    else:
        engine.dispose()
        # Sync sessions over an async engine: their I/O waits on the loop.
        async_engine = create_async_engine(f"sqlite+aiosqlite:///{database}")
        bind = async_engine.sync_engine
    with Configurator(settings=settings) as config:
        config.include("aiopyramid_ng")
        include_tm_with_sessions(config, sessionmaker(bind=bind))
        config.add_tween(f"{__name__}.transaction_recorder", under="pyramid_tm.tm_tween_factory")
        config.registry.engine = engine
        if not io_in_threads:
            config.registry.async_engine = async_engine
            config.add_subscriber(dispose_async_engine, ApplicationShutdown)
        views = {"coroutine": coroutine_view, "executor": executor_view, "greenlet": greenlet_view}
        add_views_by_kind(config, views, suffix="/{tag}", renderer="json")
        config.add_exception_view(boom_view, Boom)
        config.registry.bind = bind
        config.registry.entered = set()
        config.registry.gate = threading.Event()
        config.add_route("hang", "/hang/{tag}")
        config.add_view(hang_view, route_name="hang", renderer="json", mapper=GreenletMapper)
        config.add_route("status", "/status")
        config.add_view(status_view, route_name="status", renderer="json", mapper=GreenletMapper)
        return config.make_wsgi_app()


def stored_tags(app: Router) -> list[str]:
    with Session(app.registry.engine) as session:
        return sorted(session.scalars(select(Row.tag)))


def clear(app: Router) -> None:
    with Session(app.registry.engine) as session, session.begin():
        session.query(Row).delete()


def plan(count: int, prefix: str) -> tuple[Requests, list[str]]:
    """``count`` requests over every view kind; the expected rows."""
    requests: Requests = []
    expected: list[str] = []
    for number in range(count):
        kind = KINDS[number % len(KINDS)]
        tag = f"{prefix}{kind}{number}"
        fail = number % 4 == 0
        requests.append(("GET", f"/{kind}/{tag}", {"params": {"fail": "1"} if fail else {}}))
        if not fail:
            expected += [f"{tag}-a", f"{tag}-b"]
    return requests, sorted(expected)


def get_each(client: webtest.TestApp, requests: Requests) -> None:
    """Send the planned requests one by one; each fails or succeeds as planned."""
    for _, path, options in requests:
        client.get(path, params=options["params"], status=500 if options["params"] else 200)


SETUPS = [("threadlocal", "executor"), ("threadlocal", "greenlet"), ("explicit", "greenlet")]
IDS = ["-".join(setup) for setup in SETUPS]


@pytest.fixture(scope="module", params=SETUPS, ids=IDS)
def app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Router:
    manager, pipeline = request.param
    return make_app(tmp_path_factory.mktemp("tm") / "db.sqlite", manager, pipeline)


server = server_fixture()


def test_interleaved_requests_commit_exactly_their_own_rows(server: str, app: Router) -> None:
    clear(app)
    requests, expected = plan(100, "u")
    responses = concurrently(server, requests)
    for (_, path, options), response in zip(requests, responses, strict=True):
        if options["params"]:
            assert (response.status_code, response.text) == (500, f"failed {path.split('/')[2]}")
        else:
            assert response.status_code == 200, response.text
            assert response.json()["same"] is True
    assert stored_tags(app) == expected


def _wait_for_status(base: str, what: str, condition: Callable[[Any], bool]) -> None:
    wait_until(lambda: httpx.get(f"{base}/status", timeout=PATIENCE).json(), what, condition)


def test_a_disconnected_request_releases_its_transaction(server: str, app: Router) -> None:
    clear(app)
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection((HOST, port), timeout=PATIENCE) as connection:
        connection.sendall(b"GET /hang/gone HTTP/1.1\r\nHost: localhost\r\n\r\n")
        _wait_for_status(server, "the request to enter", lambda status: "gone" in status["entered"])
        assert httpx.get(f"{server}/status").json()["checkedout"] >= 1
    app.registry.gate.set()
    _wait_for_status(server, "its connection to return", lambda status: status["checkedout"] == 0)
    if app.registry.settings["test.io_in_threads"]:
        # As on a threaded server, the request ran to its end and committed.
        assert stored_tags(app) == ["gone-a"]
    else:
        # Cancelled in its request greenlet: the transaction was aborted.
        assert stored_tags(app) == []


@pytest.mark.parametrize(("manager", "pipeline"), SETUPS, ids=IDS)
def test_in_process_asgi_and_webtest(
    tmp_path: Path, leak_check: LeakCheck, manager: str, pipeline: str
) -> None:
    app = make_app(tmp_path / "db.sqlite", manager, pipeline)
    requests, expected = plan(12, "t")
    with TestApp(make_asgi_app(app)) as client:
        get_each(client, requests)
    assert stored_tags(app) == expected
    clear(app)
    # Plain WSGI: each request runs on the calling thread's loop.
    get_each(webtest.TestApp(app), requests)
    assert stored_tags(app) == expected
    if pipeline == "greenlet":
        # No lifespan in plain WSGI: close the connections made on this thread's loop.
        thread_loop().run_until_complete(app.registry.async_engine.dispose())
    # The application's pool threads may stay; nothing else may.
    leak_check.assert_clean(max_new_threads=DEFAULT_MAX_WORKERS)


def test_webtest_from_several_threads(tmp_path: Path) -> None:
    app = make_app(tmp_path / "db.sqlite", "threadlocal", "executor")
    requests, expected = plan(24, "w")
    client = webtest.TestApp(app)
    assert in_threads(partial(get_each, client), [requests[n::4] for n in range(4)]) == []
    assert stored_tags(app) == expected


def test_outside_requests_the_thread_keeps_its_manager() -> None:
    assert isinstance(transaction.manager, ContextTransactionManager)
    seen: list[Any] = []
    thread = threading.Thread(target=lambda: seen.append(transaction.manager.manager))
    thread.start()
    thread.join()
    assert seen[0] is not transaction.manager.manager
    with transaction.manager as txn:
        assert transaction.get() is txn


def test_request_manager_follows_an_explicit_thread_manager() -> None:
    seen: list[bool] = []

    def policy(environ: Any, router: Any) -> None:
        seen.append(transaction.manager.explicit)

    wrapped = RequestTransactionPolicy(policy)
    transaction.manager.explicit = True
    try:
        wrapped({}, None)
    finally:
        transaction.manager.explicit = False
    wrapped({}, None)
    assert seen == [True, False]
    assert "RequestTransactionPolicy around" in repr(wrapped)


def test_a_transaction_the_test_harness_owns_is_never_ended(tmp_path: Path) -> None:
    """The cookiecutter's conftest: one explicit, doomed transaction per test, handed in."""
    engine = create_engine(f"sqlite:///{tmp_path / 'harness.db'}")
    Base.metadata.create_all(engine)
    tm = transaction.TransactionManager(explicit=True)
    tm.begin()
    tm.doom()
    session = sessionmaker(bind=engine)()
    zope.sqlalchemy.register(session, transaction_manager=tm)

    def add_row(request: Request) -> Response:
        request.dbsession.add(Row(tag=request.params["name"]))
        request.dbsession.flush()
        return Response(str(request.dbsession.query(Row).count()))

    def add_row_then_fail(request: Request) -> Response:
        add_row(request)
        raise RuntimeError("the view failed")

    def failed(exc: RuntimeError, request: Request) -> Response:
        return Response("failed", status=500)

    with Configurator() as config:
        config.include("pyramid_tm")
        config.include("aiopyramid_ng")
        # As the cookiecutter's models do: the session the test handed in.
        config.add_request_method(
            lambda request: request.environ["app.dbsession"], "dbsession", reify=True
        )
        config.add_route("add", "/add")
        config.add_route("fail", "/fail")
        config.add_view(add_row, route_name="add")
        config.add_view(add_row_then_fail, route_name="fail")
        config.add_exception_view(failed, RuntimeError)
        app = config.make_wsgi_app()
    # As the cookiecutter's testapp fixture does.
    environ = {"tm.active": True, "tm.manager": tm, "app.dbsession": session}
    client = webtest.TestApp(app, extra_environ=environ)
    assert client.get("/add", {"name": "a"}).text == "1"
    assert client.get("/add", {"name": "b"}).text == "2"
    assert client.get("/fail", {"name": "c"}, status=500).text == "failed"
    # Still the test's transaction, still doomed, holding every row so far.
    assert tm.get().isDoomed()
    assert session.query(Row).count() == 3
    tm.abort()  # the fixture's teardown: no NoTransaction
    with Session(engine) as fresh:
        assert fresh.query(Row).count() == 0
    session.close()
    engine.dispose()
