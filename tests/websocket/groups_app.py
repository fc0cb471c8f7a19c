"""The application of the group tests: members that join groups, and requests that broadcast.

A member connects to ``/ws/member?group=a&group=b`` (async view),
``/ws/sync-member`` (plain view) or ``/ws/class-member``
(``WebsocketConnectionView``), joins its groups and answers ``joined``.
Whatever it then receives it broadcasts to its first group, except
``leave`` (it leaves that group and answers ``left``), ``boom`` (its view
raises) and, to the async view, ``close`` (it closes with 4001, tries to
join another group, and broadcasts what that raised to its first group).
``POST /say`` broadcasts from an async HTTP view, ``/say-plain`` from a
plain one in the thread pool, and the headers
``X-Announce`` and ``X-Notify`` make a tween and a subscriber broadcast to
``news``.  ``/tasks`` lists the tasks pending on the loop serving it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pyramid.config import Configurator
from pyramid.events import NewResponse
from pyramid.registry import Registry
from pyramid.request import Request
from pyramid.response import Response
from pyramid.router import Router

from aiopyramid_ng.broadcast import Hub, hub_of
from aiopyramid_ng.exceptions import ConnectionClosedError
from aiopyramid_ng.helpers import await_
from aiopyramid_ng.websocket import (
    SyncWebSocket,
    WebSocket,
    WebsocketConnectionView,
    WebsocketMapper,
)

#: The values ``/bad`` broadcasts, by name, as group or as message.
BAD: dict[str, Any] = {
    "int": 5,
    "none": None,
    "empty": "",
    "long": "g" * 201,
    "dict": {"text": "hi"},
    "bytearray": bytearray(b"hi"),
    "ok": "ok",
}


def groups_of(request: Request) -> list[str]:
    groups: list[str] = request.GET.getall("group")
    return groups or ["room"]


async def member(ws: WebSocket) -> None:
    groups = groups_of(ws.request)
    for group in groups:
        await ws.join(group)
    await ws.send("joined")
    while (message := await ws.recv()) is not None:
        if message == "leave":
            await ws.leave(groups[0])
            await ws.send("left")
        elif message == "boom":
            raise ValueError("boom")
        elif message == "close":
            await ws.close(4001)
            try:
                await ws.join("late")
            except ConnectionClosedError as exc:
                await ws.request.broadcast(groups[0], f"closed: {type(exc).__name__}")
        else:
            await ws.request.broadcast(groups[0], message)


def sync_member(ws: SyncWebSocket) -> None:
    group = groups_of(ws.request)[0]
    ws.join(group)
    ws.join(group)  # twice is once
    ws.send("joined")
    while (message := ws.recv()) is not None:
        if message == "leave":
            ws.leave(group)
            ws.send("left")
        else:
            await_(ws.request.broadcast(group, message))


class ClassMember(WebsocketConnectionView):
    async def on_open(self) -> None:
        await self.join(groups_of(self.request)[0])
        await self.send("joined")

    async def on_message(self, message: str | bytes) -> None:
        if message == "leave":
            await self.leave(groups_of(self.request)[0])
            await self.send("left")
        else:
            await self.request.broadcast(groups_of(self.request)[0], message)


def messages_of(request: Request) -> list[str | bytes]:
    """``count`` messages ``<prefix><n>``, padded to ``size`` characters; bytes if ``binary``."""
    prefix = request.params.get("prefix", "")
    count = int(request.params.get("count", "1"))
    size = int(request.params.get("size", "0"))
    texts = [f"{prefix}{n}:".ljust(size, "x") for n in range(count)]
    if request.params.get("binary"):
        return [text.encode() for text in texts]
    return list(texts)


async def say(request: Request) -> Response:
    for message in messages_of(request):
        await request.broadcast(request.params["group"], message)
    return Response(status=204)


def say_plain(request: Request) -> Response:
    # A plain view runs in the thread pool: await_ sends the coroutine to the loop.
    for message in messages_of(request):
        await_(request.broadcast(request.params["group"], message))
    return Response(status=204)


async def bad(request: Request) -> Response:
    await request.broadcast(BAD[request.params["group"]], BAD[request.params["message"]])
    return Response(status=204)


kept: list[Callable[..., Any]] = []


async def keep(request: Request) -> Response:
    kept.append(request.broadcast)
    return Response(status=204)


async def tasks(request: Request) -> Response:
    current = asyncio.current_task()
    names = sorted(t.get_name() for t in asyncio.all_tasks() if t is not current)
    return Response(json=names)


def announcing_tween_factory(handler: Any, registry: Registry) -> Any:
    async def announcing_tween(request: Request) -> Any:
        announcement = request.headers.get("X-Announce")
        if announcement:
            await request.broadcast("news", f"tween: {announcement}")
        return await handler(request)

    return announcing_tween


async def notify(event: NewResponse) -> None:
    note = event.request.headers.get("X-Notify")
    if note:
        await event.request.broadcast("news", f"subscriber: {note}")


def hub(router: Router) -> Hub:
    return hub_of(router.registry)


def make_app(**settings: Any) -> Router:
    with Configurator(settings=settings) as config:
        config.include("aiopyramid_ng")
        ws = {"mapper": WebsocketMapper}
        for name, view, options in [
            ("member", member, ws),
            ("sync-member", sync_member, ws),
            ("class-member", ClassMember, {}),
        ]:
            config.add_route(name, f"/ws/{name}")
            config.add_view(view, route_name=name, **options)
        for name, view in [
            ("say", say),
            ("say-plain", say_plain),
            ("bad", bad),
            ("keep", keep),
            ("tasks", tasks),
        ]:
            config.add_route(name, f"/{name}")
            config.add_view(view, route_name=name)
        config.add_tween("tests.websocket.groups_app.announcing_tween_factory")
        config.add_subscriber(notify, NewResponse)
        return config.make_wsgi_app()
