"""The application the WebSocket tests serve, in-process and under real servers.

Views record what happened to them on the registry's :class:`Probe`; under a
server in another process the ``/stats`` view reports it.  With the setting
``ws_tests.close_log``, :class:`Room` appends each ``on_close`` to that file,
which a test reads after the server process exited.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response
from pyramid.router import Router
from pyramid.security import Allowed, Denied
from pyramid.threadlocal import get_current_request

from aiopyramid_ng.bridge import RequestGreenlet
from aiopyramid_ng.helpers import await_, use_executor
from aiopyramid_ng.interfaces import IWebsocketConnections
from aiopyramid_ng.websocket import (
    SyncWebSocket,
    WebSocket,
    WebsocketClosed,
    WebsocketConnectionView,
    WebsocketMapper,
)
from tests.support.probe import Probe, probe_of


class UserHeaderPolicy:
    """The user is named by ``X-User`` or the ``user`` cookie; users may ``chat``."""

    def identity(self, request: Request) -> str | None:
        user: str | None = request.headers.get("X-User") or request.cookies.get("user")
        return user

    def authenticated_userid(self, request: Request) -> str | None:
        return self.identity(request)

    def permits(self, request: Request, context: Any, permission: str) -> Allowed | Denied:
        return Allowed("user") if self.identity(request) else Denied("anonymous")


# -- function views ------------------------------------------------------------------


async def echo(ws: WebSocket) -> None:
    probe = probe_of(ws.request)
    probe.counts["echo open"] += 1
    try:
        while (message := await ws.recv()) is not None:
            await ws.send(message)
    finally:
        probe.counts["echo finally"] += 1


def sync_echo(ws: SyncWebSocket) -> None:
    probe = probe_of(ws.request)
    try:
        while (message := ws.recv()) is not None:
            ws.send(message)
    finally:
        probe.counts["sync finally"] += 1


class BytesMapper(WebsocketMapper):
    use_bytes = True


async def kinds(ws: WebSocket) -> None:
    while (message := await ws.recv()) is not None:
        await ws.send(f"{type(message).__name__} {message!r}")


async def subprotocol(ws: WebSocket) -> None:
    await ws.send(ws.subprotocol or "none")


async def info(ws: WebSocket) -> None:
    request = ws.request
    details = {
        "identity": request.identity,
        "userid": request.authenticated_userid,
        "q": request.params.get("q"),
        "cookie": request.cookies.get("flavour"),
        "current": get_current_request() is request,
        "route": request.matched_route.name,
        "path_info": request.path_info,
        "script_name": request.script_name,
        "context": type(ws.context).__name__,
        "subpath": list(request.subpath),
    }
    await ws.send(json.dumps(details))
    # Each message is answered with who the current request belongs to, so
    # interleaved connections can check it stays their own.
    while await ws.recv() is not None:
        await ws.send(str(get_current_request().identity))


def _stop(code: int) -> None:
    raise WebsocketClosed(code, "bye")


async def closer(ws: WebSocket) -> None:
    await ws.recv()
    _stop(4001)  # deep inside the view


async def failing(ws: WebSocket) -> None:
    message = await ws.recv()
    raise ValueError(f"boom {message!s}")


async def late(ws: WebSocket) -> None:
    await ws.close(4002)
    probe = probe_of(ws.request)
    try:
        await ws.send("too late")
    except Exception as exc:
        probe.errors.append(str(exc))
        raise


async def relay(ws: WebSocket) -> None:
    """The first connection waits; the next one sends to it (closed by then)."""
    probe = probe_of(ws.request)
    if probe.relay is None:
        probe.relay = ws
        await ws.recv()
        return
    await ws.recv()
    await probe.relay.send("hello")


async def state(ws: WebSocket) -> None:
    await ws.send(f"{ws!r} {ws.closed} {ws.scope['type']} {ws.close_reason!r}")
    await ws.close(4003, "done")
    probe_of(ws.request).notes.append(f"{ws!r} {ws.closed} {ws.close_code} {ws.close_reason!r}")


@use_executor
def _from_thread(ws: SyncWebSocket) -> None:
    ws.send(f"thread {ws.recv()!r}")


def sync_via_thread(ws: SyncWebSocket) -> None:
    """Hands the connection to a worker thread, which receives and sends on it."""
    await_(_from_thread(ws))


def sync_closer(ws: SyncWebSocket) -> None:
    ws.close(4004, "sync")


def _raise_after(request: Request, response: Response) -> None:
    raise RuntimeError("response callback failure")


async def callback_fails(ws: WebSocket) -> None:
    ws.request.add_response_callback(_raise_after)


async def waiting(ws: WebSocket) -> None:
    """Waits on something else than the connection: only a cancellation ends it."""
    probe = probe_of(ws.request)
    probe.counts["waiting"] += 1
    try:
        await probe.event("never").wait()
    finally:
        probe.counts["waiting finally"] += 1


async def flavour_a(ws: WebSocket) -> None:
    await ws.send("request_param")


async def flavour_b(ws: WebSocket) -> None:
    await ws.send("header")


async def flavour_token(ws: WebSocket) -> None:
    await ws.send("custom")


def page(request: Request) -> Response:
    return Response("<html>a page</html>", content_type="text/html")


def forbidden_view(request: Request) -> Response:
    return Response("forbidden", status=403)


def stats(request: Request) -> dict[str, Any]:
    gc.collect()
    probe = probe_of(request)
    return {
        "counts": dict(probe.counts),
        "calls": dict(probe.calls),
        "errors": probe.errors,
        "greenlets": sum(1 for obj in gc.get_objects() if isinstance(obj, RequestGreenlet) and obj),
        "open": len(request.registry.getUtility(IWebsocketConnections)),
    }


# -- class views ---------------------------------------------------------------------


class Room(WebsocketConnectionView):
    """Records its callbacks under its ``id`` query parameter."""

    def record(self, call: str) -> None:
        probe_of(self.request).calls[self.request.params.get("id", "")].append(call)

    async def on_open(self) -> None:
        self.record("open")
        await self.send("welcome")

    async def on_message(self, message: str | bytes) -> None:
        self.record(f"message {message!r}")
        if message == "close":
            await self.close(4000, "asked")
        elif message == "fail":
            raise RuntimeError("room failure")
        else:
            await self.send(f"room {message!r}")

    async def on_close(self) -> None:
        assert self.ws is not None
        self.record(f"close {self.ws.close_code}")
        close_log = self.request.registry.settings.get("ws_tests.close_log")
        if close_log:
            with Path(close_log).open("a") as log:
                log.write(f"{self.request.params.get('id', '')} close {self.ws.close_code}\n")


class BrokenRoom(WebsocketConnectionView):
    def __init__(self, context: Any, request: Request):
        raise LookupError("broken before accepting")


# -- traversal -----------------------------------------------------------------------


class Leaf:
    def __init__(self, parent: Any, name: str):
        self.__parent__ = parent
        self.__name__ = name


class Root:
    __name__ = ""
    __parent__ = None

    def __init__(self, request: Request):
        self.request = request

    def __getitem__(self, name: str) -> Leaf:
        if name == "leaf":
            return Leaf(self, name)
        raise KeyError(name)


class TokenPredicate:
    """A custom view predicate: the ``token`` query parameter equals the value."""

    def __init__(self, value: str, config: Configurator):
        self.value = value

    def text(self) -> str:
        return f"token = {self.value}"

    phash = text

    def __call__(self, context: Any, request: Request) -> bool:
        return bool(request.params.get("token") == self.value)


# -- assembly ------------------------------------------------------------------------

WS = {"mapper": WebsocketMapper}

ROUTES: list[tuple[str, str, Any, dict[str, Any]]] = [
    ("echo", "/ws/echo", echo, {**WS, "permission": "chat"}),
    ("open", "/ws/open", echo, WS),
    ("sync", "/ws/sync", sync_echo, WS),
    ("bytes", "/ws/bytes", kinds, {"mapper": BytesMapper}),
    ("kinds", "/ws/kinds", kinds, WS),
    ("proto", "/ws/proto", subprotocol, {**WS, "ws_subprotocols": ["v2", "v1"]}),
    ("info", "/ws/info", info, {**WS, "permission": "chat"}),
    ("closer", "/ws/closer", closer, WS),
    ("failing", "/ws/failing", failing, WS),
    ("late", "/ws/late", late, WS),
    ("waiting", "/ws/waiting", waiting, WS),
    ("relay", "/ws/relay", relay, WS),
    ("state", "/ws/state", state, WS),
    ("sync_closer", "/ws/sync-closer", sync_closer, WS),
    ("sync_thread", "/ws/sync-thread", sync_via_thread, WS),
    ("callback_fails", "/ws/callback-fails", callback_fails, WS),
    ("friends", "/ws/friends", echo, {**WS, "ws_allowed_origins": ["https://friend.example"]}),
    ("room", "/ws/room", Room, {}),
    ("broken", "/ws/broken", BrokenRoom, {}),
    ("page", "/page", page, {}),
    ("stats", "/stats", stats, {"renderer": "json"}),
]


def make_router(**settings: Any) -> Router:
    with Configurator(settings=settings) as config:
        config.include("aiopyramid_ng")
        config.registry.probe = Probe()
        config.set_security_policy(UserHeaderPolicy())
        config.add_view_predicate("token", TokenPredicate)
        for name, pattern, view, options in ROUTES:
            config.add_route(name, pattern)
            config.add_view(view, route_name=name, **options)
        config.add_route("pred", "/ws/pred")
        config.add_view(flavour_a, route_name="pred", request_param="flavour=a", **WS)
        config.add_view(flavour_b, route_name="pred", header="X-Flavour:b", **WS)
        config.add_view(flavour_token, route_name="pred", token="secret", **WS)
        config.add_route("tree", "/tree/*traverse", factory=Root)
        config.add_view(info, route_name="tree", context=Leaf, permission="chat", **WS)
        config.add_forbidden_view(forbidden_view)
        return config.make_wsgi_app()
