"""The ``redis://`` and ``rediss://`` broadcast backend: Redis pub/sub, one channel per group.

Each process holds one subscriber connection, shared by all its groups: the
group ``room`` is the channel ``aiopyramid_ng:room``, subscribed while the
process has members in it.  Publishing goes through a small pool of other
connections (at most :data:`PUBLISH_CONNECTIONS`).  A message travels as a
one-byte tag (``t`` for text, ``b`` for binary) followed by its payload, so
that a ``str`` arrives as a ``str`` and ``bytes`` as ``bytes``.

Failure behaviour, which the hub relies on:

* :meth:`RedisBackend.publish` gives up after the timeout with
  :class:`~aiopyramid_ng.exceptions.BroadcastError`; it never hangs and never
  sends a message twice.
* The subscriber is read by a task of its own that nothing else waits for.
  When its connection is lost (closed, or silent: a ``PING`` unanswered for
  a timeout) it closes the idle publishing connections too, reconnects with
  capped exponential backoff and jitter, subscribes every group again, and
  logs the outage once and the recovery once.  Messages published meanwhile
  are lost for this process (delivery is at most once); HTTP requests and
  open WebSocket connections go on as before, and ``subscribe`` and
  ``unsubscribe`` return at once (the next connection applies them).
* :meth:`RedisBackend.start` fails with ``BroadcastError`` when Redis cannot
  be reached within the timeout, and a malformed URL is a :exc:`ValueError`
  of the constructor; both name the URL with its password masked.

Importing this module needs the ``redis`` package: ``pip install
'aiopyramid_ng[redis]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn
from urllib.parse import parse_qs, urlsplit

from ..exceptions import BroadcastError, see
from .backend import Data, Deliver

try:
    from redis.asyncio import BlockingConnectionPool, Redis
    from redis.asyncio.client import PubSub
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisError
except ModuleNotFoundError as missing:
    raise ModuleNotFoundError(
        "A redis:// or rediss:// aiopyramid_ng.broadcast.url needs the redis package "
        f"(redis-py 5.0.1 or later): pip install 'aiopyramid_ng[redis]'. "
        f"{see('setting-broadcast-url')}",
        name=missing.name,
    ) from missing

__all__ = [
    "BACKOFF_CAP",
    "BACKOFF_FIRST",
    "CHANNEL_PREFIX",
    "PUBLISH_CONNECTIONS",
    "RedisBackend",
    "decode",
    "encode",
    "masked",
]

logger = logging.getLogger(__name__)

#: Prepended to a group's name to make its Redis channel.
CHANNEL_PREFIX = "aiopyramid_ng:"
#: The most connections a process publishes on at once; more publishers wait
#: for one of them (within the timeout) rather than open a connection each.
PUBLISH_CONNECTIONS = 4
#: The first reconnection delay, doubled after each failed attempt up to
#: :data:`BACKOFF_CAP`; each delay is drawn between its half and itself.
BACKOFF_FIRST = 0.1
BACKOFF_CAP = 5.0

_PREFIX = CHANNEL_PREFIX.encode()
_TEXT = b"t"
_BINARY = b"b"
#: What a lost, refused or silent connection raises (``TimeoutError`` is also
#: what ``asyncio.timeout`` raises when the timeout passes).
_LOST = (RedisError, OSError, TimeoutError)
#: The password of ``scheme://user:password@host``, up to the last ``@`` of the
#: authority (as :func:`urllib.parse.urlsplit` reads it).
_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*):[^/?#]*@")
#: A ``password=`` query option (redis-py accepts one).
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*")
_DIGITS = re.compile(r"[0-9]+")


def masked(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``: fit for logs and messages."""
    return _QUERY_PASSWORD.sub(r"\1***", _PASSWORD.sub(r"\1:***@", url))


def _url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as a Redis URL, and how to fix it; ``None`` if nothing."""
    example = "redis://localhost:6379/0"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        return f"is not a valid URL ({error}): write it as {example}, with a port from 1 to 65535"
    if parts.scheme not in ("redis", "rediss"):
        return (
            f"has the scheme {parts.scheme!r}: use redis:// (or rediss:// for TLS), as in {example}"
        )
    if not parts.hostname:
        return f"names no host: write it as {example}"
    if port == 0:
        return f"has the port 0: give Redis's port (6379 by default), as in {example}"
    database = parts.path[1:]
    if database and not _DIGITS.fullmatch(database):
        return (
            f"has the path {parts.path!r}: the path is the database number, "
            f"as in {example} (or leave it out for database 0)"
        )
    for value in parse_qs(parts.query).get("db", []):
        if not _DIGITS.fullmatch(value):
            return f"has db={value!r}: the database is a number, as in {example}"
    return None


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _channel(group: str) -> bytes:
    return _PREFIX + group.encode()


def encode(message: Data) -> bytes:
    """The payload that carries ``message``: its tag, then its UTF-8 text or its bytes."""
    if isinstance(message, str):
        return _TEXT + message.encode()
    return _BINARY + message


def decode(payload: bytes) -> Data:
    """The message ``payload`` carries (the inverse of :func:`encode`).

    :raises ValueError: when ``payload`` was not made by :func:`encode` (its
        tag is unknown, or its text is not UTF-8).
    """
    tag, body = payload[:1], payload[1:]
    if tag == _TEXT:
        return body.decode()
    if tag == _BINARY:
        return body
    raise ValueError(f"unknown tag {tag!r}")


async def _untyped(method: Callable[[], Awaitable[object]]) -> None:
    """Await ``method()``, a PubSub method that only later redis-py releases annotate.

    Called through a typed parameter, it type-checks with either: a ``type:
    ignore`` on the call would be unused (an error) once the release annotates it.
    """
    await method()


class RedisBackend:
    """Carries a process's groups over Redis pub/sub (see the module's description).

    :param url: ``redis://[[user]:password@]host[:port][/db]``, or
        ``rediss://`` for TLS; redis-py's query options (``?ssl_ca_certs=``,
        ...) are accepted.
    :param timeout: seconds, greater than zero: how long :meth:`start` and
        :meth:`publish` wait for Redis, and how long a reconnection attempt
        may take.  A subscriber connection silent for this long is sent a
        ``PING``; still silent as long again, it is taken for lost (a frozen
        or unreachable Redis is noticed within about twice the timeout).
    :raises ValueError: when ``url`` or ``timeout`` is malformed; the message
        names the URL (password masked) and what to write instead.

    Connections are opened by :meth:`start`, on the loop that will use them,
    and closed by :meth:`close`.
    """

    def __init__(self, url: str, timeout: float):
        self.url = masked(url)
        problem = _url_problem(url)
        if problem is not None:
            raise ValueError(
                f"The broadcast URL {self.url!r} (aiopyramid_ng.broadcast.url) {problem}. "
                f"{see('setting-broadcast-url')}"
            )
        if not timeout > 0:
            raise ValueError(
                "The broadcast timeout (aiopyramid_ng.broadcast.timeout) must be a number of "
                f"seconds greater than 0, not {timeout!r}. {see('setting-broadcast-timeout')}"
            )
        self.timeout = timeout
        options: dict[str, Any] = {
            "socket_connect_timeout": timeout,
            "socket_timeout": timeout,
            # No retry inside redis-py: a command that fails is not sent again
            # (at most once), and the subscriber's own loop does the reconnecting.
            "retry": Retry(NoBackoff(), 0, supported_errors=()),
            # RESP2, which every Redis speaks.  redis-py 8's default, RESP3,
            # turns on its maintenance notifications, and with them off goes its
            # check that a pooled connection is still open: the first publish
            # after Redis restarted (or closed an idle connection) would fail.
            "protocol": 2,
        }
        try:
            pool = BlockingConnectionPool.from_url(
                url, max_connections=PUBLISH_CONNECTIONS, timeout=timeout, **options
            )
            self._publisher = Redis.from_pool(pool)
            self._subscriber = Redis.from_url(url, **options)
        except ValueError as error:
            raise ValueError(
                f"The broadcast URL {self.url!r} (aiopyramid_ng.broadcast.url) is not accepted "
                f"by redis-py ({error}): correct that part of it. {see('setting-broadcast-url')}"
            ) from None
        self._deliver: Deliver | None = None
        #: The groups with members in this process: subscribed while connected,
        #: subscribed again on reconnection.
        self._groups: set[str] = set()
        #: The subscriber's current pub/sub connection (live or being set up).
        self._pubsub: PubSub | None = None
        #: ``_pubsub`` once it is connected and every group's SUBSCRIBE sent:
        #: ``subscribe`` and ``unsubscribe`` then send on it themselves.
        self._live: PubSub | None = None
        #: Serializes sending on ``_pubsub`` and retiring it.
        self._sending = asyncio.Lock()
        #: ``subscribe`` calls waiting for Redis to confirm their channel, oldest first.
        self._confirming: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def start(self, deliver: Deliver) -> None:
        """Connect the subscriber and a publishing connection, then start reading.

        :raises BroadcastError: when Redis does not answer within the timeout
            (down, refused, wrong password, ...); nothing is left open.
        """
        self._deliver = deliver
        try:
            async with asyncio.timeout(self.timeout):
                await self._connect()
                await self._publisher.ping()
        except _LOST as error:
            await self.close()
            raise BroadcastError(
                f"Cannot reach Redis at {self.url} within {self.timeout:g} s "
                f"({_describe(error)}): start Redis there, or correct its host, port or "
                f"password in aiopyramid_ng.broadcast.url. {see('setting-broadcast-url')}"
            ) from error
        self._reader = asyncio.get_running_loop().create_task(
            self._run(), name=f"aiopyramid_ng broadcast subscriber {self.url}"
        )

    async def subscribe(self, group: str) -> None:
        """Receive ``group``'s messages from now on.

        While connected it returns once Redis confirmed the subscription (or
        after the timeout), so that a message published after it returns is
        delivered.  While disconnected it returns at once: the group is
        subscribed on reconnection.  It never raises for an outage.
        """
        if group in self._groups:
            return
        self._groups.add(group)
        channel = _channel(group)
        waiting: deque[asyncio.Future[None]] | None = None
        confirmed = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self.timeout):
                async with self._sending:
                    if self._live is None:
                        return
                    # Registered before sending: the reader may read the
                    # answer while this call still waits for the send.
                    waiting = self._confirming.setdefault(channel, deque())
                    waiting.append(confirmed)
                    await self._live.subscribe(channel)
                await confirmed
        except _LOST:
            pass  # the reader finds the connection lost and subscribes again
        finally:
            if waiting is not None:
                if confirmed in waiting:
                    waiting.remove(confirmed)
                if not waiting and self._confirming.get(channel) is waiting:
                    del self._confirming[channel]

    async def unsubscribe(self, group: str) -> None:
        """Stop delivering ``group``'s messages (at once) and unsubscribe its channel."""
        if group not in self._groups:
            return
        self._groups.discard(group)
        channel = _channel(group)
        # A connection that fails here is the reader's to find lost; the next
        # one subscribes only the groups still there.
        with contextlib.suppress(*_LOST):
            async with asyncio.timeout(self.timeout), self._sending:
                if self._live is not None:
                    await self._live.unsubscribe(channel)

    async def publish(self, group: str, message: Data) -> None:
        """Publish ``message`` to ``group`` in every process, this one included.

        Returns once Redis has taken it; messages one caller publishes one
        after the other arrive in that order.

        :raises BroadcastError: when Redis does not take it within the
            timeout.  It is not sent again; one that timed out after being
            sent may still have reached some subscribers.
        """
        try:
            async with asyncio.timeout(self.timeout):
                await self._publisher.publish(_channel(group), encode(message))
        except _LOST as error:
            raise BroadcastError(
                f"Could not broadcast to the group {group!r}: Redis at {self.url} did not "
                f"take the message within {self.timeout:g} s ({_describe(error)}), so it is "
                "lost. Messages are not kept while Redis is unreachable: check that it runs, "
                "and catch BroadcastError where a lost message matters. "
                f"{see('setting-broadcast-timeout')}"
            ) from error

    async def close(self) -> None:
        """Stop the reader task and close every connection; calling it again is harmless."""
        reader, self._reader = self._reader, None
        # A cancellation can be lost: Python 3.11's asyncio.wait_for (which
        # redis-py sends with) returns a result that arrives together with it.
        # So ask again until the reader has ended; wait() rather than await,
        # as the reader's CancelledError is not ours.
        while reader is not None and not reader.done():
            reader.cancel()
            await asyncio.wait([reader], timeout=0.1)
        await self._drop()
        await self._publisher.aclose()
        await self._subscriber.aclose()

    async def _connect(self) -> None:
        """Open a pub/sub connection, subscribe every group and make it the live one.

        The groups are read and the connection made live under the sending
        lock: a group that comes or goes later is sent by ``subscribe`` or
        ``unsubscribe`` themselves, so none is missed.  The caller bounds the
        time it takes.
        """
        pubsub = self._pubsub = self._subscriber.pubsub()
        # Connecting includes redis-py's handshake: Redis has answered once it returns.
        await _untyped(pubsub.connect)
        async with self._sending:
            if self._groups:
                await pubsub.subscribe(*map(_channel, self._groups))
            self._live = pubsub

    async def _drop(self) -> None:
        """Retire the current pub/sub connection; release the ``subscribe`` calls waiting."""
        async with self._sending:
            self._live = None
            pubsub, self._pubsub = self._pubsub, None
        for waiting in self._confirming.values():
            for confirmed in waiting:
                if not confirmed.done():
                    confirmed.set_result(None)
        self._confirming.clear()
        if pubsub is not None:
            await _untyped(pubsub.aclose)

    async def _run(self) -> None:
        """The reader task: deliver messages; on a loss, reconnect until Redis is back."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    await self._listen()
                except _LOST as error:
                    reason = _describe(error)
                await self._drop()
                # The idle publishing connections went down with it: closed now,
                # they are opened anew by the next publish rather than written to
                # (redis-py before 8 would not find them closed).
                await self._publisher.connection_pool.disconnect(inuse_connections=False)
                lost_at = loop.time()
                logger.warning(
                    "Lost the connection to Redis at %s (%s); reconnecting. Until it is back, "
                    "messages broadcast to this process's groups do not reach their members here.",
                    self.url,
                    reason,
                )
                attempts = await self._reconnect()
                logger.warning(
                    "Reconnected to Redis at %s after %.1f s (connection attempts: %d), "
                    "resubscribing %d groups. Messages broadcast meanwhile were lost for this "
                    "process.",
                    self.url,
                    loop.time() - lost_at,
                    attempts,
                    len(self._groups),
                )
        finally:
            await self._drop()

    async def _listen(self) -> NoReturn:
        """Read the live connection until it fails; ``PING`` it when it has been silent."""
        pubsub = self._live
        assert pubsub is not None
        loop = asyncio.get_running_loop()
        heard = loop.time()
        while True:
            message = await pubsub.get_message(timeout=self.timeout)
            # One timeout of silence sends a PING; a second one without its
            # answer is a loss (1.5: between the two, whatever timers do).
            if message is not None:
                heard = loop.time()
                self._handle(message)
            elif (silent := loop.time() - heard) > 1.5 * self.timeout:
                raise TimeoutError(f"no answer to PING for {silent:.1f} s")
            else:
                async with self._sending:
                    await pubsub.ping()

    async def _reconnect(self) -> int:
        """Try to connect until it works, sleeping between attempts; return how many it took."""
        attempts = 0
        while True:
            delay = min(BACKOFF_CAP, BACKOFF_FIRST * 2**attempts)
            await asyncio.sleep(random.uniform(delay / 2, delay))
            attempts += 1
            try:
                async with asyncio.timeout(self.timeout):
                    await self._connect()
            except _LOST:
                await self._drop()
            else:
                return attempts

    def _handle(self, message: dict[str, Any]) -> None:
        """Act on one pub/sub message: deliver it, or confirm a subscription."""
        kind, channel = message["type"], message["channel"]
        if kind == "subscribe":
            waiting = self._confirming.get(channel)
            if waiting:
                confirmed = waiting.popleft()
                if not confirmed.done():
                    confirmed.set_result(None)
            return
        if kind != "message":
            return
        group = channel[len(_PREFIX) :].decode()
        # Unsubscribed but already on its way: its members are gone.
        if group not in self._groups:
            return
        try:
            data = decode(message["data"])
        except ValueError as error:
            logger.warning(
                "Dropped a message on the Redis channel %r that aiopyramid_ng did not publish "
                "(%s): publish to groups with request.broadcast() only.",
                channel.decode(errors="replace"),
                error,
            )
            return
        assert self._deliver is not None
        try:
            self._deliver(group, data)
        except Exception:
            # One faulty delivery must not end the reader and so every group's.
            logger.exception("Delivering a message of the group %r failed", group)
