"""The Redis broadcast backend against a real ``redis-server`` (see ``tests/support/redis.py``).

A fake ``deliver`` (:class:`Inbox`) records what reaches each backend; two
backends on one loop are two processes.  Redis is stopped, restarted and
frozen under them, and every scenario ends with no task left on the loop and
no connection left open.  Timeouts are one second, so the bounds asserted
here are in seconds too.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest
import trustme
from redis import Redis as BlockingRedis
from redis.asyncio import Redis

from aiopyramid_ng.broadcast.backend import Data
from aiopyramid_ng.broadcast.redis import BACKOFF_CAP, CHANNEL_PREFIX, RedisBackend, masked
from aiopyramid_ng.exceptions import BroadcastError, see
from tests.support.leaks import LeakCheck
from tests.support.redis import RedisServer, running_redis
from tests.support.servers import HOST, free_port

pytestmark = pytest.mark.servers

T = TypeVar("T")

#: The backends' timeout in these tests.
TIMEOUT = 1.0
#: What a bound on a duration allows beyond it: scheduling, a loaded machine.
SLACK = 0.5
#: Upper bound for anything to happen; reached only if something hangs.
PATIENCE = 15.0
LOGGER = "aiopyramid_ng.broadcast.redis"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path) as server:
        yield server


class Inbox:
    """A fake ``deliver``: records every ``(group, message)`` it is called with."""

    def __init__(self) -> None:
        self.received: list[tuple[str, Data]] = []

    def __call__(self, group: str, message: Data) -> None:
        self.received.append((group, message))

    def of(self, group: str) -> list[Data]:
        return [message for name, message in self.received if name == group]

    def holds(self, group: str, *messages: Data) -> bool:
        """Has every one of ``messages`` reached ``group``?"""
        return set(messages) <= set(self.of(group))

    def counts(self, total: int) -> bool:
        """Has it received ``total`` messages?"""
        return len(self.received) == total


async def eventually(condition: Callable[[], bool], what: str) -> float:
    """Wait until ``condition()`` holds; return the seconds it took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not condition():
        if loop.time() - started > PATIENCE:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.005)
    return loop.time() - started


@asynccontextmanager
async def started(url: str, inbox: Inbox | None = None) -> AsyncIterator[RedisBackend]:
    """A started backend for the block, closed after it."""
    backend = RedisBackend(url, TIMEOUT)
    await backend.start(inbox if inbox is not None else Inbox())
    try:
        yield backend
    finally:
        await backend.close()


@asynccontextmanager
async def admin(server: RedisServer) -> AsyncIterator[Redis]:
    """A plain client of ``server``, for what the tests check on the Redis side."""
    client = Redis.from_url(server.url, single_connection_client=True)
    try:
        yield client
    finally:
        await client.aclose()


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    """Run ``scenario`` on a new loop; assert it left no task, thread or greenlet behind."""
    leaks = LeakCheck()

    async def main() -> T:
        result = await scenario()
        leaks.assert_clean(asyncio.get_running_loop())
        return result

    result = asyncio.run(main())
    leaks.assert_clean()
    return result


def lines(caplog: pytest.LogCaptureFixture, start: str) -> list[str]:
    messages = [record.getMessage() for record in caplog.records if record.name == LOGGER]
    return [message for message in messages if message.startswith(start)]


def test_text_and_bytes_arrive_as_they_were_published(redis_server: RedisServer) -> None:
    published: list[Data] = ["héllo ✓", "", b"\x00\xff binary", b"", "t", b"b"]

    async def scenario() -> list[tuple[str, Data]]:
        inbox = Inbox()
        async with started(redis_server.url, inbox) as backend:
            await backend.subscribe("room")
            for message in published:
                await backend.publish("room", message)
            await eventually(partial(inbox.counts, len(published)), "the messages")
        return inbox.received

    received = run(scenario)
    assert received == [("room", message) for message in published]
    assert [type(message) for _, message in received] == [type(m) for m in published]


def test_rediss_carries_messages_over_tls_with_the_certificate_checked(tmp_path: Path) -> None:
    authority = trustme.CA()
    certificate = authority.issue_cert(HOST)
    chain, key, trusted = tmp_path / "chain.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    chain.write_bytes(b"".join(pem.bytes() for pem in certificate.cert_chain_pems))
    certificate.private_key_pem.write_to_path(str(key))
    authority.cert_pem.write_to_path(str(trusted))

    with running_redis(tmp_path, tls=(chain, key)) as server:
        assert server.url.startswith("rediss://")

        async def scenario() -> tuple[list[tuple[str, Data]], BroadcastError]:
            inbox = Inbox()
            checked = f"{server.url}?ssl_ca_certs={trusted}"
            async with started(checked, inbox) as member, started(checked) as sender:
                await member.subscribe("secure")
                await sender.publish("secure", "text")
                await sender.publish("secure", b"bytes")
                await eventually(partial(inbox.counts, 2), "both messages")
            # Without the authority that signed it, the certificate is refused.
            with pytest.raises(BroadcastError) as caught:
                await RedisBackend(server.url, TIMEOUT).start(Inbox())
            return inbox.received, caught.value

        received, refused = run(scenario)
    assert received == [("secure", "text"), ("secure", b"bytes")]
    causes: list[BaseException] = []
    cause: BaseException | None = refused
    while cause is not None:
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    assert any(isinstance(cause, ssl.SSLCertVerificationError) for cause in causes), causes


def test_two_processes_see_each_others_messages_once_and_in_order(
    redis_server: RedisServer,
) -> None:
    count = 1000

    async def scenario() -> tuple[Inbox, Inbox, float]:
        first, second = Inbox(), Inbox()
        async with (
            started(redis_server.url, first) as one,
            started(redis_server.url, second) as two,
        ):
            await asyncio.gather(one.subscribe("chat"), two.subscribe("chat"))

            async def send(backend: RedisBackend, name: str) -> None:
                for number in range(count):
                    await backend.publish("chat", f"{name} {number}")
                await backend.publish("chat", f"{name} end")

            loop = asyncio.get_running_loop()
            began = loop.time()
            await asyncio.gather(send(one, "one"), send(two, "two"))
            for inbox in (first, second):
                last = partial(inbox.holds, "chat", "one end", "two end")
                await eventually(last, "both senders' last message")
            elapsed = loop.time() - began
        return first, second, elapsed

    first, second, elapsed = run(scenario)
    print(f"\n{2 * (count + 1)} messages to two subscribers in {elapsed:.2f} s")
    for inbox in (first, second):
        received = inbox.of("chat")
        assert len(received) == 2 * (count + 1)
        assert max(Counter(received).values()) == 1
        for name in ("one", "two"):
            sent = [f"{name} {number}" for number in range(count)] + [f"{name} end"]
            assert [m for m in received if isinstance(m, str) and m.startswith(name)] == sent


def test_many_groups_on_one_loop_each_message_reaches_its_members(
    redis_server: RedisServer,
) -> None:
    groups = [f"group {number}" for number in range(40)]
    # Three processes, each with members in its own share of the groups.
    shares = [groups[0::2], groups[1::3], groups[::5]]

    async def scenario() -> list[Inbox]:
        inboxes = [Inbox() for _ in shares]
        async with (
            started(redis_server.url, inboxes[0]) as one,
            started(redis_server.url, inboxes[1]) as two,
            started(redis_server.url, inboxes[2]) as three,
        ):
            backends = [one, two, three]
            await asyncio.gather(
                *(
                    backend.subscribe(group)
                    for backend, share in zip(backends, shares, strict=True)
                    for group in share
                )
            )
            # Every process publishes to every group, all at once.
            await asyncio.gather(
                *(
                    backend.publish(group, f"{group} from {index}")
                    for index, backend in enumerate(backends)
                    for group in groups
                )
            )
            for inbox, share in zip(inboxes, shares, strict=True):
                every = partial(inbox.counts, 3 * len(share))
                await eventually(every, "every message of the process's groups")
        return inboxes

    inboxes = run(scenario)
    for inbox, share in zip(inboxes, shares, strict=True):
        assert sorted(inbox.received) == sorted(
            (group, f"{group} from {index}") for group in share for index in range(3)
        )


def test_unsubscribe_stops_delivery_and_the_channel(redis_server: RedisServer) -> None:
    async def scenario() -> tuple[Inbox, dict[str, int]]:
        inbox = Inbox()
        async with (
            started(redis_server.url, inbox) as member,
            started(redis_server.url) as sender,
            admin(redis_server) as client,
        ):
            await member.subscribe("left")
            await member.subscribe("stays")
            await member.subscribe("stays")  # a second time changes nothing
            await sender.publish("left", "before")
            await eventually(lambda: inbox.of("left") == ["before"], "the first message")
            await member.unsubscribe("left")
            await member.unsubscribe("never joined")
            await sender.publish("left", "after")
            await sender.publish("stays", "marker")
            await eventually(lambda: inbox.of("stays") == ["marker"], "the marker")
            channels = [f"{CHANNEL_PREFIX}left", f"{CHANNEL_PREFIX}stays"]
            counts = [count for _, count in await client.pubsub_numsub(*channels)]
            numsub = dict(zip(channels, counts, strict=True))
        return inbox, numsub

    inbox, numsub = run(scenario)
    assert inbox.received == [("left", "before"), ("stays", "marker")]
    assert numsub == {f"{CHANNEL_PREFIX}left": 0, f"{CHANNEL_PREFIX}stays": 1}


def test_a_message_on_its_way_when_its_group_is_left_is_not_delivered(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> Inbox:
        inbox = Inbox()
        async with started(redis_server.url, inbox) as member, started(redis_server.url) as sender:
            await member.subscribe("left")
            await member.subscribe("stays")
            # A blocking client lets nothing run on the loop meanwhile: the
            # message reaches the member's socket before it leaves, and is
            # read after.
            with BlockingRedis.from_url(redis_server.url) as blocking:
                blocking.publish(f"{CHANNEL_PREFIX}left", b"ton its way")
            await member.unsubscribe("left")
            await sender.publish("stays", "marker")
            await eventually(partial(inbox.holds, "stays", "marker"), "the marker")
        return inbox

    assert run(scenario).received == [("stays", "marker")]


def test_publish_raises_broadcast_error_within_the_timeout_while_redis_is_down(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> tuple[BroadcastError, float]:
        async with started(redis_server.url) as backend:
            await backend.publish("room", "while up")
            redis_server.stop()
            loop = asyncio.get_running_loop()
            began = loop.time()
            with pytest.raises(BroadcastError) as caught:
                await backend.publish("room", "while down")
            return caught.value, loop.time() - began

    error, elapsed = run(scenario)
    print(f"\npublish to a stopped Redis raised after {elapsed * 1000:.1f} ms")
    assert elapsed < TIMEOUT + SLACK
    message = str(error)
    assert "'room'" in message and redis_server.url in message and "lost" in message
    assert message.endswith(see("setting-broadcast-timeout"))


def test_the_first_publish_after_a_restart_goes_through(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)

    async def scenario() -> Inbox:
        inbox = Inbox()
        async with started(redis_server.url, inbox) as backend:
            await backend.subscribe("room")
            await backend.publish("room", "before")
            redis_server.stop()
            redis_server.start()
            # The loop reads the end of the old connections; the subscriber reconnects.
            await eventually(lambda: lines(caplog, "Reconnected") != [], "the reconnection")
            # The publishing connection of before is found closed and replaced,
            # rather than written to.
            await backend.publish("room", "after")
            await eventually(partial(inbox.holds, "room", "after"), "the message after")
        return inbox

    assert run(scenario).of("room") == ["before", "after"]


def test_publish_raises_broadcast_error_within_the_timeout_while_redis_hangs(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> float:
        async with started(redis_server.url) as backend:
            await backend.publish("room", "while up")
            redis_server.freeze()
            loop = asyncio.get_running_loop()
            began = loop.time()
            with pytest.raises(BroadcastError, match="within 1 s"):
                await backend.publish("room", "while frozen")
            elapsed = loop.time() - began
            redis_server.resume()
        return elapsed

    elapsed = run(scenario)
    print(f"\npublish to a frozen Redis raised after {elapsed:.3f} s")
    assert TIMEOUT - 0.05 < elapsed < TIMEOUT + SLACK


def test_after_a_restart_delivery_resumes_with_the_groups_of_now(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)

    async def scenario() -> tuple[Inbox, float, float]:
        inbox = Inbox()
        async with started(redis_server.url, inbox) as member:
            await member.subscribe("kept")
            await member.subscribe("left while down")
            redis_server.stop()
            await eventually(lambda: lines(caplog, "Lost") != [], "the outage to be noticed")
            # Nothing waits for the subscriber while it is down.
            loop = asyncio.get_running_loop()
            began = loop.time()
            await member.subscribe("joined while down")
            await member.unsubscribe("left while down")
            changes = loop.time() - began
            # Long enough for several attempts, each of which fails.
            await asyncio.sleep(1.5)
            redis_server.start()
            restarted = loop.time()
            async with started(redis_server.url) as sender:

                async def resubscribed() -> None:
                    # Published before the member subscribed again, a message is
                    # lost for it: send until both groups' arrive.
                    while not (inbox.of("kept") and inbox.of("joined while down")):
                        await sender.publish("kept", "kept")
                        await sender.publish("joined while down", "joined")
                        await sender.publish("left while down", "left")
                        await asyncio.sleep(0.02)

                await asyncio.wait_for(resubscribed(), PATIENCE)
                resumed = loop.time() - restarted
        return inbox, changes, resumed

    inbox, changes, resumed = run(scenario)
    print(f"\ndelivery resumed {resumed:.2f} s after Redis restarted")
    assert changes < 0.05
    assert resumed < BACKOFF_CAP + TIMEOUT + SLACK
    assert inbox.of("left while down") == []
    assert len(lines(caplog, "Lost the connection to Redis")) == 1
    recovered = lines(caplog, "Reconnected to Redis")
    assert len(recovered) == 1
    assert "resubscribing 2 groups" in recovered[0]


def test_joining_while_redis_hangs_returns_within_the_timeout(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> tuple[float, float, Inbox]:
        inbox = Inbox()
        async with started(redis_server.url, inbox) as member:
            await member.subscribe("before")
            redis_server.freeze()
            loop = asyncio.get_running_loop()
            frozen = loop.time()
            # Unconfirmed, it gives up after the timeout ...
            await member.subscribe("first")
            first = loop.time() - frozen
            # ... or sooner, when the silence is taken for a loss (2 s after
            # the freeze, while this one would wait until 2.4 s).
            await asyncio.sleep(1.4 - first)
            began = loop.time()
            await member.subscribe("second")
            second = loop.time() - began
            redis_server.resume()
            async with started(redis_server.url) as sender:

                async def delivered() -> None:
                    while not (inbox.of("first") and inbox.of("second")):
                        await sender.publish("first", "1")
                        await sender.publish("second", "2")
                        await asyncio.sleep(0.02)

                await asyncio.wait_for(delivered(), PATIENCE)
        return first, second, inbox

    first, second, inbox = run(scenario)
    print(f"\njoins while Redis hung returned after {first:.2f} s and {second:.2f} s")
    assert TIMEOUT - 0.05 < first < TIMEOUT + SLACK
    assert second < TIMEOUT
    assert set(inbox.of("first")) == {"1"} and set(inbox.of("second")) == {"2"}


def test_a_frozen_redis_is_noticed_by_its_silence_and_recovered_from(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)

    async def scenario() -> tuple[float, float]:
        inbox = Inbox()
        async with started(redis_server.url, inbox) as member:
            await member.subscribe("room")
            redis_server.freeze()
            noticed = await eventually(lambda: lines(caplog, "Lost") != [], "the silence")
            redis_server.resume()
            async with started(redis_server.url) as sender:

                async def delivered() -> None:
                    while not inbox.of("room"):
                        await sender.publish("room", "back")
                        await asyncio.sleep(0.02)

                loop = asyncio.get_running_loop()
                began = loop.time()
                await asyncio.wait_for(delivered(), PATIENCE)
                resumed = loop.time() - began
        return noticed, resumed

    noticed, resumed = run(scenario)
    print(f"\nfrozen Redis noticed after {noticed:.2f} s; delivery resumed {resumed:.2f} s later")
    # Silent for a timeout, then a PING without an answer for another.
    assert TIMEOUT < noticed < 2 * TIMEOUT + SLACK
    assert resumed < BACKOFF_CAP + TIMEOUT + SLACK
    assert "no answer to PING" in lines(caplog, "Lost")[0]
    assert len(lines(caplog, "Reconnected")) == 1


def test_start_fails_naming_the_url_without_its_password() -> None:
    port = free_port()
    url = f"redis://:s3cret@{HOST}:{port}/0"

    async def scenario() -> tuple[BroadcastError, float]:
        backend = RedisBackend(url, TIMEOUT)
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(BroadcastError) as caught:
            await backend.start(Inbox())
        return caught.value, loop.time() - began

    error, elapsed = run(scenario)
    assert elapsed < TIMEOUT + SLACK
    message = str(error)
    assert f"redis://:***@{HOST}:{port}/0" in message and "s3cret" not in message
    assert "aiopyramid_ng.broadcast.url" in message
    assert message.endswith(see("setting-broadcast-url"))


def test_start_fails_within_the_timeout_when_redis_hangs_or_refuses_the_password(
    redis_server: RedisServer,
) -> None:
    async def start(url: str) -> tuple[str, float]:
        backend = RedisBackend(url, TIMEOUT)
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(BroadcastError) as caught:
            await backend.start(Inbox())
        return str(caught.value), loop.time() - began

    async def scenario() -> tuple[str, float, str, float]:
        async with admin(redis_server) as client:
            await client.config_set("requirepass", "right")
        refused, refused_after = await start(f"redis://:wrong@{HOST}:{redis_server.port}/0")
        redis_server.freeze()
        try:
            hung, hung_after = await start(f"redis://:right@{HOST}:{redis_server.port}/0")
        finally:
            redis_server.resume()
        return refused, refused_after, hung, hung_after

    refused, refused_after, hung, hung_after = run(scenario)
    assert refused_after < TIMEOUT + SLACK
    assert "AuthenticationError" in refused and "wrong" not in refused
    assert TIMEOUT - 0.05 < hung_after < TIMEOUT + SLACK and "TimeoutError" in hung


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://localhost:6379/0", "has the scheme 'http': use redis://"),
        ("localhost:6379", "has the scheme 'localhost': use redis://"),
        ("redis://localhost:port/0", "is not a valid URL"),
        ("redis://localhost:70000/0", "with a port from 1 to 65535"),
        ("redis://localhost:0/0", "has the port 0"),
        ("redis://:pw@/0", "names no host"),
        ("redis://localhost:6379/zero", "the path is the database number"),
        ("redis://localhost:6379/0/1", "the path is the database number"),
        ("redis://localhost:6379?db=one", "has db='one'"),
        ("rediss://u:pw@localhost/0?socket_timeout=soon", "is not accepted by redis-py"),
    ],
)
def test_a_malformed_url_is_a_value_error_naming_it_and_the_fix(url: str, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        RedisBackend(url, TIMEOUT)
    message = str(caught.value)
    assert f"The broadcast URL {masked(url)!r} (aiopyramid_ng.broadcast.url) " in message
    assert problem in message and ":pw@" not in message
    assert message.endswith(see("setting-broadcast-url"))


def test_masked_hides_the_password_wherever_the_url_has_one() -> None:
    assert masked("redis://user:p@ss:w0rd@host:6379/0") == "redis://user:***@host:6379/0"
    assert masked("rediss://:secret@host/0?password=other&db=1") == (
        "rediss://:***@host/0?password=***&db=1"
    )
    assert masked("redis://user@host:6379") == "redis://user@host:6379"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://localhost", "redis://localhost"),
        ("redis://:secret@redis.internal:6380/2", "redis://:***@redis.internal:6380/2"),
        ("rediss://app:secret@[::1]:6379?db=3", "rediss://app:***@[::1]:6379?db=3"),
        ("redis://localhost:6379/?password=secret", "redis://localhost:6379/?password=***"),
    ],
)
def test_well_formed_urls_are_accepted_and_shown_without_password(url: str, shown: str) -> None:
    # Nothing connects before start().
    assert RedisBackend(url, TIMEOUT).url == shown


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan")])
def test_a_timeout_that_is_not_positive_is_a_value_error(timeout: float) -> None:
    with pytest.raises(ValueError, match=r"aiopyramid_ng\.broadcast\.timeout"):
        RedisBackend("redis://localhost:6379/0", timeout)


def test_close_leaves_no_task_and_no_connection(redis_server: RedisServer) -> None:
    async def scenario() -> list[int]:
        async with admin(redis_server) as client:
            own = await client.client_id()

            async def others() -> int:
                return sum(int(entry["id"]) != own for entry in await client.client_list())

            counts = [await others()]
            backend = RedisBackend(redis_server.url, TIMEOUT)
            await backend.start(Inbox())
            await backend.subscribe("room")
            counts.append(await others())
            await backend.close()
            await backend.close()  # a second time is harmless
            # Redis forgets a closed connection once it has read its end.
            for _ in range(100):
                if await others() == 0:
                    break
                await asyncio.sleep(0.01)
            counts.append(await others())
        return counts

    # Before start, after it (the subscriber and one publishing connection), after close.
    assert run(scenario) == [0, 2, 0]


def test_close_while_redis_is_down_ends_the_reconnecting(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)

    async def scenario() -> None:
        async with started(redis_server.url) as backend:
            await backend.subscribe("room")
            redis_server.stop()
            await eventually(lambda: lines(caplog, "Lost") != [], "the outage to be noticed")
            await asyncio.sleep(0.3)  # among the attempts

    run(scenario)  # asserts that no task is left
    assert lines(caplog, "Reconnected") == []


def test_a_failing_deliver_is_logged_and_delivery_goes_on(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    received: list[Data] = []

    def deliver(group: str, message: Data) -> None:
        if message == "boom":
            raise RuntimeError("a bug in deliver")
        received.append(message)

    async def scenario() -> None:
        backend = RedisBackend(redis_server.url, TIMEOUT)
        await backend.start(deliver)
        try:
            await backend.subscribe("room")
            for message in ("boom", "after"):
                await backend.publish("room", message)
            await eventually(lambda: received == ["after"], "the message after the failure")
        finally:
            await backend.close()

    run(scenario)
    [record] = [r for r in caplog.records if r.name == LOGGER]
    assert record.getMessage() == "Delivering a message of the group 'room' failed"
    assert record.exc_info is not None and str(record.exc_info[1]) == "a bug in deliver"


def test_messages_that_were_not_published_by_a_backend_are_dropped_with_a_warning(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)

    async def scenario() -> Inbox:
        inbox = Inbox()
        async with started(redis_server.url, inbox) as backend, admin(redis_server) as client:
            await backend.subscribe("room")
            for payload in (b"", b"xunknown tag", b"t\xff\xfe not UTF-8"):
                await client.publish(f"{CHANNEL_PREFIX}room", payload)
            await backend.publish("room", "fine")
            await eventually(lambda: inbox.received != [], "the backend's message")
        return inbox

    assert run(scenario).received == [("room", "fine")]
    dropped = lines(caplog, "Dropped a message on the Redis channel 'aiopyramid_ng:room'")
    assert len(dropped) == 3
    assert "unknown tag b''" in dropped[0] and "unknown tag b'x'" in dropped[1]
    assert "utf-8" in dropped[2]
