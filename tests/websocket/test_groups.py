"""Groups and broadcast: many members on one loop, in-process and over uvicorn.

In-process, the members are sessions of :class:`aiopyramid_ng.testing.TestApp`
(or, where a test needs the lifespan and a strict look at the loop's tasks,
asgiref's communicator); over uvicorn they are ``websockets`` clients, and
the slow member is one whose socket has a tiny receive buffer and which
never reads.  The application is ``groups_app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
import socket
from collections.abc import Iterator
from operator import not_
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from asgiref.testing import ApplicationCommunicator
from pyramid.exceptions import ConfigurationError
from pyramid.registry import Registry
from pyramid.router import Router
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from aiopyramid_ng.asgi import ASGIApplication, make_asgi_app
from aiopyramid_ng.broadcast import Hub, MemoryBackend, hub_of, make_backend
from aiopyramid_ng.broadcast.hub import SENDER_NAME
from aiopyramid_ng.exceptions import BroadcastError, WebsocketClosed, see
from aiopyramid_ng.testing import TestApp
from tests.support.leaks import LeakCheck
from tests.support.servers import HOST, uvicorn_thread, wait_until
from tests.websocket import groups_app
from tests.websocket.groups_app import hub, make_app
from tests.websocket.test_views import PATIENCE, Client, ws_scope

MEMBER_PATHS = ["/ws/member", "/ws/sync-member", "/ws/class-member"]


def ours(task_names: list[str]) -> list[str]:
    """The add-on's own tasks among ``task_names`` (senders, subscriptions, readers)."""
    return [name for name in task_names if name.startswith("aiopyramid_ng.")]


# -- in-process, through TestApp --------------------------------------------------------


def test_every_member_receives_each_message_once_and_in_order() -> None:
    router = make_app()
    with TestApp(router, timeout=PATIENCE) as app:
        members = [app.websocket_connect(f"{MEMBER_PATHS[n % 3]}?group=room") for n in range(30)]
        for member in members:
            assert member.receive_text() == "joined"
        assert hub(router).groups() == {"room": 30}
        # Two publishers at once: a member's view, and an HTTP view.
        for number in range(20):
            members[0].send_text(f"ws{number}")
        app.post("/say?group=room&prefix=http&count=20")
        for member in members:
            received = [member.receive_text() for _ in range(40)]
            assert [m for m in received if m.startswith("ws")] == [f"ws{n}" for n in range(20)]
            assert [m for m in received if m.startswith("http")] == [f"http{n}:" for n in range(20)]
        # Once: a duplicate of any of them would arrive before this.
        app.post("/say?group=room&prefix=end")
        for member in members:
            assert member.receive_text() == "end0:"
            member.close()
        assert hub(router).groups() == {}
        assert ours(app.get("/tasks").json) == []


def test_http_views_tweens_and_subscribers_broadcast_to_websocket_members() -> None:
    with TestApp(make_app(), timeout=PATIENCE) as app:
        news = app.websocket_connect("/ws/member?group=news")
        room = app.websocket_connect("/ws/sync-member?group=room")
        for member in (news, room):
            assert member.receive_text() == "joined"
        app.post("/say?group=room&prefix=async")
        app.post("/say-plain?group=room&prefix=plain")
        app.post("/say?group=room&prefix=bin&binary=1")
        assert room.receive_text() == "async0:"
        assert room.receive_text() == "plain0:"
        assert room.receive_bytes() == b"bin0:"
        app.get("/tasks", headers={"X-Announce": "hello", "X-Notify": "bye"})
        assert news.receive_text() == "tween: hello"
        assert news.receive_text() == "subscriber: bye"
        # The handshake of a WebSocket is a request like any other.
        other = app.websocket_connect("/ws/member?group=other", headers={"X-Announce": "hi"})
        assert news.receive_text() == "tween: hi"
        assert other.receive_text() == "joined"
        # Nobody is in this group: not an error.
        app.post("/say?group=nobody", status=204)
        for member in (news, room, other):
            member.close()


@pytest.mark.parametrize("path", ["/ws/sync-member", "/ws/class-member", "/ws/member"])
def test_a_member_joins_broadcasts_and_leaves(path: str) -> None:
    router = make_app()
    with TestApp(router, timeout=PATIENCE) as app:
        members = [app.websocket_connect(f"{path}?group=room") for _ in range(3)]
        for member in members:
            assert member.receive_text() == "joined"
        members[0].send_text("hello")
        for member in members:
            assert member.receive_text() == "hello"
        members[1].send_text("leave")
        assert members[1].receive_text() == "left"
        assert hub(router).groups() == {"room": 2}
        app.post("/say?group=room&prefix=after")
        for member in (members[0], members[2]):
            assert member.receive_text() == "after0:"
        # What it would have received is ahead of the answer to its next message.
        members[1].send_text("leave")
        assert members[1].receive_text() == "left"
        for member in members:
            member.close()
        assert hub(router).groups() == {}


def test_a_member_that_closed_its_connection_gets_no_more_broadcasts() -> None:
    router = make_app()
    with TestApp(router, timeout=PATIENCE) as app:
        closer = app.websocket_connect("/ws/member?group=room")
        other = app.websocket_connect("/ws/member?group=room")
        for member in (closer, other):
            assert member.receive_text() == "joined"
        closer.send_text("close")
        with pytest.raises(WebsocketClosed) as caught:
            closer.receive()
        assert caught.value.code == 4001
        assert other.receive_text() == "closed: ConnectionClosedError"
        assert hub(router).groups() == {"room": 1}
        other.close()


def test_the_hub_of_an_application_without_the_add_on() -> None:
    with pytest.raises(RuntimeError, match="has no broadcast hub") as caught:
        hub_of(Registry())
    assert str(caught.value).endswith(see("websocket-groups"))


def test_a_request_method_kept_past_its_request_is_an_error() -> None:
    groups_app.kept.clear()
    with TestApp(make_app(), timeout=PATIENCE) as app:
        app.post("/keep")
    gc.collect()
    with pytest.raises(ReferenceError, match=r"broadcast\(\) was kept past the end") as caught:
        groups_app.kept[0]("room", "hi")
    assert str(caught.value).endswith(see("websocket-groups"))


# -- bad groups, messages and settings ----------------------------------------------------


@pytest.mark.parametrize(
    ("group", "message", "error", "text"),
    [
        ("int", "ok", TypeError, "A group name is a str, not int (5)"),
        ("none", "ok", TypeError, "A group name is a str, not NoneType"),
        ("empty", "ok", ValueError, "A group name has 1 to 200 characters; '' has 0"),
        ("long", "ok", ValueError, "has 201"),
        ("ok", "dict", TypeError, "bytes (a binary frame), not dict; encode it first"),
        ("ok", "bytearray", TypeError, "not bytearray"),
        ("ok", "none", TypeError, "not NoneType"),
    ],
)
def test_bad_group_names_and_messages_are_refused(
    group: str, message: str, error: type[Exception], text: str
) -> None:
    with TestApp(make_app(), timeout=PATIENCE) as app:
        with pytest.raises(error, match=re.escape(text)) as caught:
            app.post(f"/bad?group={group}&message={message}")
        assert str(caught.value).endswith(see("websocket-groups"))


def test_joining_a_bad_group_fails_the_view(caplog: pytest.LogCaptureFixture) -> None:
    router = make_app()
    test_app = TestApp(router, timeout=PATIENCE, raise_app_exceptions=False)
    with test_app as app, caplog.at_level(logging.ERROR):
        member = app.websocket_connect("/ws/member?group=")
        with pytest.raises(WebsocketClosed) as caught:
            member.receive()
    assert caught.value.code == 1011
    assert "A group name has 1 to 200 characters" in caplog.text
    assert hub(router).groups() == {}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("aiopyramid_ng.broadcast.url", "http://localhost:6379"),
        ("aiopyramid_ng.broadcast.url", "memory://elsewhere"),
        ("aiopyramid_ng.broadcast.url", "redis://"),
        ("aiopyramid_ng.broadcast.url", "redis://localhost:sixty/0"),
        ("aiopyramid_ng.broadcast.url", "redis://localhost:99999/0"),
        ("aiopyramid_ng.broadcast.url", "rediss://localhost:6380/zero"),
        ("aiopyramid_ng.broadcast.timeout", "0"),
        ("aiopyramid_ng.broadcast.timeout", "soon"),
        ("aiopyramid_ng.broadcast.queue_size", "-1"),
        ("aiopyramid_ng.broadcast.queue_size", "many"),
        ("aiopyramid_ng.broadcast.overflow", "drop_newest"),
    ],
)
def test_bad_settings_fail_at_commit_naming_the_setting(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(f"The setting {name} = {value!r}")):
        make_app(**{name: value})


def test_the_url_chooses_the_backend() -> None:
    # Imported here: only this test needs the Redis client.
    from aiopyramid_ng.broadcast.redis import RedisBackend

    assert isinstance(make_backend("memory://", 1.0), MemoryBackend)
    assert isinstance(make_backend("redis://localhost:6379/0", 1.0), RedisBackend)
    assert isinstance(make_backend("rediss://localhost:6380/0", 1.0), RedisBackend)


def test_a_closed_hub_refuses_until_it_starts_again() -> None:
    async def scenario() -> None:
        closed = Hub(MemoryBackend)
        assert repr(closed) == "<Hub new, 0 member(s) in 0 group(s)>"
        await closed.publish("room", "first use starts it")
        assert repr(closed) == "<Hub running, 0 member(s) in 0 group(s)>"
        await closed.close()
        assert repr(closed) == "<Hub closed, 0 member(s) in 0 group(s)>"
        with pytest.raises(BroadcastError, match="The application has shut down") as caught:
            await closed.publish("room", "late")
        assert str(caught.value).endswith(see("websocket-groups"))
        await closed.start()
        await closed.publish("room", "started again")
        await closed.close()

    asyncio.run(scenario())


# -- connections ending, the server shutting down: strict about the loop's tasks ---------


async def lifespan_started(app: ASGIApplication) -> ApplicationCommunicator:
    lifespan = ApplicationCommunicator(app, {"type": "lifespan"})
    await lifespan.send_input({"type": "lifespan.startup"})
    assert (await lifespan.receive_output(PATIENCE))["type"] == "lifespan.startup.complete"
    return lifespan


async def lifespan_ended(lifespan: ApplicationCommunicator) -> None:
    await lifespan.send_input({"type": "lifespan.shutdown"})
    assert (await lifespan.receive_output(PATIENCE))["type"] == "lifespan.shutdown.complete"
    await lifespan.wait(PATIENCE)


async def members_of(app: ASGIApplication, count: int, query: str) -> list[Client]:
    """``count`` members, of the three kinds of views in turn, once they joined."""
    members = [Client(app, ws_scope(MEMBER_PATHS[n % 3], query=query)) for n in range(count)]
    # All at once: the first joiner of a group subscribes it, the others wait for that.
    await asyncio.gather(*(member.accepted() for member in members))
    for member in members:
        assert (await member.receive())["text"] == "joined"
    return members


def pending_tasks(loop: asyncio.AbstractEventLoop, *but: asyncio.Future[Any]) -> list[str]:
    current = asyncio.current_task(loop)
    return [t.get_name() for t in asyncio.all_tasks(loop) if t is not current and t not in but]


def test_a_member_that_ends_leaves_its_groups(leak_check: LeakCheck) -> None:
    router = make_app()
    app = make_asgi_app(router)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        lifespan = await lifespan_started(app)
        members = await members_of(app, 24, "group=a&group=b")
        assert hub(router).groups() == {"a": 24, "b": 8}  # only the async view joins both
        for number, member in enumerate(members):
            way = number % 4
            if way == 0:
                await member.disconnect(1001)  # the client closes
            elif way == 1:
                await member.send_text("boom")  # the async view fails; the others broadcast it
                await member.disconnect()
            elif way == 2:
                member.communicator.future.cancel()  # the server drops it
            else:
                await member.send_text("leave")  # leaves its first group, then the client goes
                await member.receive()
                await member.disconnect()
        for member in members:
            with contextlib.suppress(asyncio.CancelledError):
                await member.communicator.wait(PATIENCE)
        await asyncio.sleep(0)  # the backend's unsubscriptions
        assert hub(router).groups() == {}
        assert pending_tasks(loop, lifespan.future) == []
        await lifespan_ended(lifespan)
        # The lifespan shutdown stopped the application's pool from a thread of the loop's own.
        leak_check.assert_clean(loop, max_new_threads=1)

    asyncio.run(scenario())


def test_a_member_whose_peer_leaves_while_it_joins_is_not_left_in_the_group(
    leak_check: LeakCheck,
) -> None:
    router = make_app()
    app = make_asgi_app(router)

    async def scenario() -> None:
        client = Client(app, ws_scope("/ws/member", query="group=room"))
        # The peer is gone before the view runs: its reader hears it while the
        # view waits for the group's subscription, the first of the hub.
        await client.communicator.send_input({"type": "websocket.connect"})
        await client.disconnect()
        assert (await client.receive())["type"] == "websocket.accept"
        await client.done()
        await asyncio.sleep(0)  # the backend's unsubscription
        assert hub(router).groups() == {}
        await hub(router).close()
        leak_check.assert_clean(asyncio.get_running_loop())

    asyncio.run(scenario())


def test_closing_the_hub_ends_the_senders_of_members_still_there(leak_check: LeakCheck) -> None:
    router = make_app()
    app = make_asgi_app(router)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        members = await members_of(app, 6, "group=room")  # no lifespan: started on first use
        assert len([n for n in pending_tasks(loop) if n.startswith(SENDER_NAME)]) == 6
        await hub(router).close()  # as at a shutdown whose views would not end in time
        assert hub(router).groups() == {}
        assert not [n for n in pending_tasks(loop) if n.startswith(SENDER_NAME)]
        await members[0].send_text("too late")  # the view fails: the hub is closed
        assert (await members[0].receive())["code"] == 1011
        for member in members:
            await member.disconnect()
            await member.done()
        leak_check.assert_clean(loop)

    asyncio.run(scenario())


def test_server_shutdown_closes_members_with_1001_and_ends_every_sender(
    leak_check: LeakCheck,
) -> None:
    router = make_app()
    app = make_asgi_app(router)

    async def scenario() -> list[Any]:
        loop = asyncio.get_running_loop()
        lifespan = await lifespan_started(app)
        members = await members_of(app, 9, "group=room")
        senders = [name for name in pending_tasks(loop) if name.startswith(SENDER_NAME)]
        assert len(senders) == 9
        await lifespan_ended(lifespan)
        closes = [await member.receive() for member in members]
        for member in members:
            await member.done()
        assert hub(router).groups() == {}
        # The lifespan shutdown stopped the application's pool from a thread of the loop's own.
        leak_check.assert_clean(loop, max_new_threads=1)
        return closes

    closes = asyncio.run(scenario())
    assert closes == [{"type": "websocket.close", "code": 1001, "reason": ""}] * 9


# -- over uvicorn, with websockets clients ----------------------------------------------


@contextlib.contextmanager
def served(**settings: Any) -> Iterator[tuple[Router, str]]:
    router = make_app(**settings)
    with uvicorn_thread(make_asgi_app(router)) as url:
        yield router, url


async def member(url: str, path: str = "/ws/member?group=room", **options: Any) -> Any:
    client = await connect(
        url.replace("http://", "ws://") + path,
        open_timeout=PATIENCE,
        close_timeout=PATIENCE,
        # Uncompressed, a message takes its size on the wire: the test's
        # padding, compressed, would never fill a slow member's buffers.
        compression=None,
        **options,
    )
    assert await client.recv() == "joined"
    return client


def stalled_socket(url: str) -> socket.socket:
    """A socket to the server whose tiny receive buffer fills at once when nobody reads it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((HOST, urlsplit(url).port or 80))
    return sock


def tasks_of(url: str) -> list[str]:
    """The add-on's tasks pending on the server's loop."""
    return ours(httpx.get(f"{url}/tasks", timeout=PATIENCE).json())


async def read(client: ClientConnection, count: int) -> list[str]:
    return [str(await client.recv()) for _ in range(count)]


@pytest.mark.servers
def test_many_members_over_uvicorn() -> None:
    total = 100
    with served() as (router, url):

        async def scenario() -> list[list[str]]:
            paths = [f"{path}?group=room" for path in MEMBER_PATHS]
            members = [await member(url, paths[n % 3]) for n in range(60)]
            async with httpx.AsyncClient(base_url=url, timeout=PATIENCE) as http:
                posted = asyncio.ensure_future(
                    http.post("/say", params={"group": "room", "prefix": "http", "count": total})
                )
                for number in range(total):
                    await members[0].send(f"ws{number}")
                assert (await posted).status_code == 204
                received = await asyncio.gather(*(read(m, 2 * total) for m in members))
                await http.post("/say", params={"group": "room", "prefix": "end"})
                assert [await m.recv() for m in members] == ["end0:"] * len(members)
                for client in members:
                    await client.close()
            await asyncio.to_thread(wait_until, hub(router).groups, "no group left", not_)
            await asyncio.to_thread(wait_until, lambda: tasks_of(url), "no task left", not_)
            return received

        for received in asyncio.run(asyncio.wait_for(scenario(), PATIENCE)):
            assert [m for m in received if m.startswith("ws")] == [f"ws{n}" for n in range(total)]
            assert [m for m in received if m.startswith("http")] == [
                f"http{n}:" for n in range(total)
            ]


#: Rounds of broadcasts the slow-member tests send, how many each, and how large.
ROUNDS, PER_ROUND, SIZE = 30, 10, 65536


async def rounds(http: httpx.AsyncClient, fast: list[ClientConnection]) -> list[float]:
    """Broadcast :data:`ROUNDS` rounds; return how long the fast members took for each."""
    loop = asyncio.get_running_loop()
    durations = []
    for number in range(ROUNDS):
        started = loop.time()
        params: dict[str, str | int] = {
            "group": "room",
            "prefix": f"{number}.",
            "count": PER_ROUND,
            "size": SIZE,
        }
        assert (await http.post("/say", params=params)).status_code == 204
        for received in await asyncio.gather(*(read(m, PER_ROUND) for m in fast)):
            assert [m.split(":")[0] for m in received] == [
                f"{number}.{n}" for n in range(PER_ROUND)
            ]
        durations.append(loop.time() - started)
    return durations


def sent() -> list[str]:
    """The prefixes of every message :func:`rounds` broadcast, in order."""
    return [f"{r}.{n}" for r in range(ROUNDS) for n in range(PER_ROUND)]


@pytest.mark.servers
def test_a_member_that_never_reads_is_closed_with_1013_the_others_keep_their_pace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with served(**{"aiopyramid_ng.broadcast.queue_size": "4"}) as (router, url):

        async def scenario() -> tuple[list[float], list[str], int | None]:
            slow = await member(url, sock=stalled_socket(url), max_queue=1)
            fast = [await member(url) for _ in range(10)]
            async with httpx.AsyncClient(base_url=url, timeout=PATIENCE) as http:
                durations = await rounds(http, fast)
            # Reading at last, it gets what was on its way, then the close.
            got = []
            with pytest.raises(ConnectionClosed):
                while True:
                    got.append(str(await slow.recv()).split(":")[0])
            for client in fast:
                await client.close()
            return durations, got, slow.close_code

        with caplog.at_level(logging.WARNING, "aiopyramid_ng.broadcast"):
            durations, got, code = asyncio.run(asyncio.wait_for(scenario(), PATIENCE))
        assert code == 1013
        assert got == sent()[: len(got)] and len(got) < len(sent())
        assert hub(router).evicted == 1
        assert max(durations) < PATIENCE / ROUNDS
        assert caplog.text.count("with 1013: its client did not read the 4 broadcast") == 1


@pytest.mark.servers
def test_drop_oldest_drops_counts_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    settings = {
        "aiopyramid_ng.broadcast.queue_size": "4",
        "aiopyramid_ng.broadcast.overflow": "drop_oldest",
    }
    with served(**settings) as (router, url):

        async def scenario() -> list[str]:
            slow = await member(url, sock=stalled_socket(url), max_queue=1)
            vanishing = await member(url, sock=stalled_socket(url), max_queue=1)
            fast = [await member(url) for _ in range(10)]
            async with httpx.AsyncClient(base_url=url, timeout=PATIENCE) as http:
                await rounds(http, fast)
            vanishing.transport.abort()  # behind, it leaves without reading
            last = sent()[-1]
            got = [str(await slow.recv()).split(":")[0]]
            while got[-1] != last:
                got.append(str(await slow.recv()).split(":")[0])
            for client in [slow, *fast]:
                await client.close()
            return got

        with caplog.at_level(logging.WARNING, "aiopyramid_ng.broadcast"):
            got = asyncio.run(asyncio.wait_for(scenario(), PATIENCE))
            wait_until(lambda: caplog.text, "the drops to be counted", lambda t: "caught up" in t)
            wait_until(hub(router).groups, "the members to leave", not_)
        order = {prefix: index for index, prefix in enumerate(sent())}
        assert [order[prefix] for prefix in got] == sorted(order[prefix] for prefix in got)
        caught_up = re.findall(r"caught up; (\d+) of its broadcast messages", caplog.text)
        left = re.findall(r"left its groups; (\d+) of its broadcast messages", caplog.text)
        assert len(caught_up) == 1 and len(left) == 1
        assert len(got) + int(caught_up[0]) == len(sent())
        assert hub(router).dropped == int(caught_up[0]) + int(left[0])
        assert hub(router).evicted == 0
        # Once per member falling behind, not once per message.
        assert caplog.text.count("dropping its oldest waiting messages") == 2
