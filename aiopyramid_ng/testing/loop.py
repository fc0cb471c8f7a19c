"""The event loop a ``TestApp`` owns, and the application's lifespan on it.

The loop runs only while the test waits for something (a response, a
WebSocket message); between two calls the application's tasks are simply
paused.  Everything the application leaves on the loop is cleaned up in
:meth:`TestLoop.close`, which a ``TestApp`` never closed by its test calls
when it is garbage-collected (as WebTest's ``TestApp`` objects never are).
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from ..types import ASGIApp, LifespanScope, ReceiveEvent, SendEvent

__all__ = ["AppCall", "TestLoop", "next_or_end"]

T = TypeVar("T")

_LIFESPAN_SCOPE: LifespanScope = {
    "type": "lifespan",
    "asgi": {"version": "3.0", "spec_version": "2.0"},
}


class TestLoop:
    """One event loop, the lifespan task of ``app`` on it, and a bound on every wait.

    :param timeout: seconds any single wait may take before it fails with
        :exc:`TimeoutError` naming what it waited for (a hung application
        fails its test instead of freezing it).
    """

    __test__ = False

    def __init__(self, app: ASGIApp, timeout: float):
        self.app = app
        self.timeout = timeout
        self.loop = asyncio.new_event_loop()
        self._lifespan: asyncio.Future[None] | None = None
        self._inbox: asyncio.Queue[ReceiveEvent] = asyncio.Queue()
        self._replies: asyncio.Queue[SendEvent] = asyncio.Queue()

    def run(self, awaitable: Awaitable[T], waiting_for: str) -> T:
        """Run the loop until ``awaitable`` is done, at most :attr:`timeout` seconds."""
        if _running_loop() is not None:
            raise RuntimeError(
                "A TestApp runs its own event loop and cannot be used from code that "
                "runs in one (an async def test): use it from a plain def test, or "
                "drive the ASGI application with an async client."
            )

        async def bounded() -> T:
            try:
                return await asyncio.wait_for(awaitable, self.timeout)
            except TimeoutError:
                raise TimeoutError(
                    f"The application did not answer within {self.timeout} s "
                    f"(waiting for {waiting_for}); raise TestApp(..., timeout=) "
                    "if it is just slow."
                ) from None

        return self.loop.run_until_complete(bounded())

    def spawn(self, awaitable: Awaitable[None]) -> asyncio.Future[None]:
        """Schedule ``awaitable`` (an application call) on the loop; it runs when the loop does."""
        return asyncio.ensure_future(awaitable, loop=self.loop)

    def start(self) -> None:
        """Run the lifespan startup.

        :raises RuntimeError: when the application reports a failed startup.
        """
        self._lifespan = self.spawn(self.app(_LIFESPAN_SCOPE, self._inbox.get, self._replies.put))
        self._step("startup")

    def _step(self, step: Literal["startup", "shutdown"]) -> None:
        task = self._lifespan
        if task is None:
            return
        event: ReceiveEvent = (
            {"type": "lifespan.startup"} if step == "startup" else {"type": "lifespan.shutdown"}
        )

        async def exchange() -> SendEvent | None:
            await self._inbox.put(event)
            return await next_or_end(self._replies, task)

        reply = self.run(exchange(), f"the lifespan {step}")
        if reply is None:
            # The application ended the lifespan scope without answering: it
            # does not support lifespan (an error is how ASGI apps say so).
            self._lifespan = None
            if not task.cancelled():
                task.exception()
            return
        if (
            reply["type"] == "lifespan.startup.failed"
            or reply["type"] == "lifespan.shutdown.failed"
        ):
            raise RuntimeError(f"Lifespan {step} failed: {reply.get('message', '')}")

    @property
    def closed(self) -> bool:
        return self.loop.is_closed()

    def close(self) -> None:
        """Run the lifespan shutdown, end what is left on the loop, close it.  Idempotent."""
        if self.loop.is_closed():
            return
        if _running_loop() is not None:
            # Collected from inside another loop (an async test): this loop
            # cannot run now, so its tasks can only be dropped.
            self._abandon()
            return
        try:
            self._step("shutdown")
        finally:
            task, self._lifespan = self._lifespan, None
            try:
                if task is not None:
                    # After its shutdown reply the application returns.
                    self.run(task, "the end of the lifespan scope")
            finally:
                self._cancel_the_rest()
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                self.loop.close()

    def _cancel_the_rest(self) -> None:
        pending = [task for task in asyncio.all_tasks(self.loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.wait(pending, timeout=self.timeout))

    def _abandon(self) -> None:
        pending = [task for task in asyncio.all_tasks(self.loop) if not task.done()]
        if pending:
            warnings.warn(
                f"A TestApp was garbage-collected inside a running event loop with "
                f"{len(pending)} task(s) of its application pending; close it "
                "(or use it as a context manager) to run its lifespan shutdown.",
                ResourceWarning,
                stacklevel=1,
            )
        self.loop.close()


class AppCall:
    """One call of the application on a :class:`TestLoop`, read message by message.

    ``outbox`` is where the call's ``send`` puts what the application sends;
    ``check`` raises what the application raised (the ``TestApp``'s harness).
    """

    def __init__(
        self,
        loop: TestLoop,
        call: Awaitable[None],
        outbox: asyncio.Queue[SendEvent],
        check: Callable[[], None],
    ):
        self._loop = loop
        self._outbox = outbox
        self._check = check
        self._task = loop.spawn(call)

    def next(self, waiting_for: str) -> SendEvent | None:
        """The application's next message; None once it returned without one."""

        async def next_message() -> SendEvent | None:
            message = await next_or_end(self._outbox, self._task)
            if message is not None:
                return message
            self._task.result()  # the application's exception, if any
            self._check()
            return None

        return self._loop.run(next_message(), waiting_for)

    def finish(self, waiting_for: str) -> None:
        """Run the application to its end, dropping what it still sends; raise what it raised."""
        if not self._task.done():
            self._loop.run(self._drain(), waiting_for)
        if not self._task.cancelled():
            self._task.result()
        self._check()

    async def _drain(self) -> None:
        # Nobody reads what the application sends once the test stopped reading.
        while not self._task.done():
            await next_or_end(self._outbox, self._task)


async def next_or_end(queue: asyncio.Queue[T], task: asyncio.Future[None]) -> T | None:
    """The next item of ``queue``, or None if ``task`` (what fills it) ends first."""
    get = asyncio.ensure_future(queue.get())
    waiting: list[asyncio.Future[Any]] = [get, task]
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if get.done():
        return get.result()
    get.cancel()
    return None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
