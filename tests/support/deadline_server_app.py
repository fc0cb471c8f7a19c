"""The application the deadline tests serve with real servers in a subprocess.

Its views have deadlines (``timeout=``) and do their slow work where a
deadline reaches it: a ``synchronize``'d ``__acl__`` (the permission check,
before a WebSocket view accepts), a coroutine view's ``await``, a plain
view's thread.  ``/stats`` reports the request greenlets and tasks alive,
so a test can check that requests over their deadline left none behind.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response

from aiopyramid_ng.asgi import make_asgi_app
from aiopyramid_ng.bridge import RequestGreenlet
from aiopyramid_ng.websocket import WebSocket, WebsocketMapper
from tests.support.deadlines import ACLPolicy, Guarded

#: The deadline of every view here but ``/fast`` and ``/stats``, seconds.
TIMEOUT = 0.3


async def echo_later(ws: WebSocket) -> None:
    """Accepted: answers each message after twice the deadline, which no longer applies."""
    while (message := await ws.recv()) is not None:
        await asyncio.sleep(2 * TIMEOUT)
        await ws.send(message)


async def sleepy(request: Request) -> Response:
    await asyncio.sleep(float(request.params.get("s", "5")))
    return Response("slept")


def blocking(request: Request) -> Response:
    time.sleep(float(request.params.get("s", "1")))
    return Response("blocked")


def fast(request: Request) -> Response:
    return Response("fast")


async def stats(request: Request) -> dict[str, Any]:
    gc.collect()
    current = asyncio.current_task()
    return {
        "greenlets": sum(1 for obj in gc.get_objects() if isinstance(obj, RequestGreenlet) and obj),
        "tasks": sorted(
            str(getattr(task.get_coro(), "__qualname__", task))
            for task in asyncio.all_tasks()
            if task is not current
        ),
    }


def make_router() -> Any:
    with Configurator() as config:
        config.include("aiopyramid_ng")
        config.set_security_policy(ACLPolicy())
        config.add_route("ws", "/ws", factory=Guarded)
        config.add_view(
            echo_later, route_name="ws", mapper=WebsocketMapper, permission="view", timeout=TIMEOUT
        )
        config.add_route("guarded", "/guarded", factory=Guarded)
        config.add_view(fast, route_name="guarded", permission="view", timeout=TIMEOUT)
        config.add_route("sleepy", "/sleepy")
        config.add_view(sleepy, route_name="sleepy", timeout=TIMEOUT)
        config.add_route("blocking", "/blocking")
        config.add_view(blocking, route_name="blocking", timeout=TIMEOUT)
        config.add_route("fast", "/fast")
        config.add_view(fast, route_name="fast")
        config.add_route("stats", "/stats")
        config.add_view(stats, route_name="stats", renderer="json")
        return config.make_wsgi_app()


app = make_asgi_app(make_router())
