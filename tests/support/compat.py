"""What the add-on compatibility tests share: their server, views of every kind, a database.

Each ``test_compat_*`` module builds a Pyramid application with an add-on,
serves it with :func:`serve` (uvicorn in a thread of the test process, so a
test can look at the application's database afterwards) and hammers it with
:func:`concurrently`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
import pytest
import zope.sqlalchemy
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.router import Router
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from aiopyramid_ng.asgi import make_asgi_app
from aiopyramid_ng.config import GreenletMapper
from aiopyramid_ng.events import ApplicationShutdown
from aiopyramid_ng.helpers import await_
from tests.support.servers import PATIENCE, uvicorn_thread

T = TypeVar("T")

#: The kinds of view, each served at ``/{kind}`` by :func:`add_views_by_kind`.
KINDS = ("coroutine", "executor", "greenlet")
#: Requests to send, each as ``(method, path, httpx options)``.
Requests = list[tuple[str, str, dict[str, Any]]]

# -- serving -----------------------------------------------------------------------


@contextmanager
def serve(app: Router) -> Iterator[str]:
    """Serve ``app`` through the ASGI adapter with uvicorn in a thread; yield its base URL."""
    # The backlog holds every connection of a burst sent by concurrently().
    with uvicorn_thread(make_asgi_app(app), log_level="warning", backlog=1024) as base:
        yield base


def server_fixture() -> Any:
    """A module-scoped fixture that serves the module's ``app`` fixture with :func:`serve`.

    Assign it to ``server`` in the test module.
    """

    @pytest.fixture(scope="module")
    def server(app: Router) -> Iterator[str]:
        with serve(app) as base:
            yield base

    return server


async def _send_all(base: str, requests: Requests) -> list[Any]:
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=PATIENCE, limits=limits) as client:
        return await asyncio.gather(
            *(client.request(method, path, **options) for method, path, options in requests)
        )


def concurrently(base: str, requests: Requests) -> list[Any]:
    """Send ``(method, path, options)`` requests all at once; return the httpx responses."""
    return asyncio.run(_send_all(base, requests))


def in_threads(work: Callable[[T], object], shares: Iterable[T]) -> list[BaseException]:
    """Call ``work(share)`` for every share, each in a thread of its own, all at once.

    Returns what the calls raised, once every thread has finished.
    """
    failures: list[BaseException] = []

    def run(share: T) -> None:
        try:
            work(share)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


# -- views of every kind -------------------------------------------------------------


def views_answering(
    answer: Callable[[Request, str], T], pause: float
) -> dict[str, Callable[[Request], Any]]:
    """A view of each of :data:`KINDS` that returns ``answer(request, kind)``.

    The coroutine and greenlet views first wait ``pause`` seconds on the
    loop, so that interleaved requests switch in the middle of the request.
    """

    async def coroutine_view(request: Request) -> T:
        await asyncio.sleep(pause)
        return answer(request, "coroutine")

    def executor_view(request: Request) -> T:
        return answer(request, "executor")

    def greenlet_view(request: Request) -> T:
        await_(asyncio.sleep(pause))
        return answer(request, "greenlet")

    return {"coroutine": coroutine_view, "executor": executor_view, "greenlet": greenlet_view}


def add_views_by_kind(
    config: Configurator,
    views: Mapping[str, Callable[..., Any]],
    *,
    suffix: str = "",
    request_method: str | None = None,
    **view_options: Any,
) -> None:
    """Serve each ``kind: view`` of ``views`` at ``/{kind}{suffix}``, a route named ``kind``.

    The greenlet view gets :class:`~aiopyramid_ng.config.GreenletMapper`; the
    others the default mapper, which runs an ``async def`` view as a
    coroutine and any other in the executor.
    """
    for kind, view in views.items():
        mapper = {"mapper": GreenletMapper} if kind == "greenlet" else {}
        config.add_route(kind, f"/{kind}{suffix}", request_method=request_method)
        config.add_view(view, route_name=kind, **view_options, **mapper)


# -- a database ----------------------------------------------------------------------


class Base(DeclarativeBase):
    pass


class Row(Base):
    """A row a request wrote, named by ``tag``."""

    __tablename__ = "rows"
    id: Mapped[int] = mapped_column(primary_key=True)
    tag: Mapped[str] = mapped_column(String(50))


def include_tm_with_sessions(config: Configurator, sessions: sessionmaker[Session]) -> None:
    """Include pyramid_tm, and give each request a reified ``dbsession`` from ``sessions``.

    As in Pyramid's cookiecutter, the session joins the transaction that
    pyramid_tm begins for the request (through zope.sqlalchemy).
    """
    config.include("pyramid_tm")

    def dbsession(request: Request) -> Session:
        session = sessions()
        zope.sqlalchemy.register(session, transaction_manager=request.tm)
        return session

    config.add_request_method(dbsession, reify=True)


async def dispose_async_engine(event: ApplicationShutdown) -> None:
    """Close the connections of ``registry.async_engine`` on the loop that opened them."""
    await event.registry.async_engine.dispose()
