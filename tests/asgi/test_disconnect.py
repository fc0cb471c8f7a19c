"""DisconnectWatch: the server's receive() stepped without a Task of its own."""

from __future__ import annotations

import asyncio
import contextlib
import types
from collections.abc import Generator
from typing import Any

import pytest

from aiopyramid_ng.asgi.disconnect import DisconnectWatch
from tests.support.asgi import Message


class Channel:
    """A server's receive(): an asyncio.Queue, as hypercorn and daphne use."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Message] = asyncio.Queue()
        self.calls = 0
        self.closed = 0

    async def receive(self) -> Message:
        self.calls += 1
        try:
            return await self.queue.get()
        except GeneratorExit:
            self.closed += 1
            raise


def watch_of(receive: Any) -> tuple[DisconnectWatch, list[str]]:
    seen: list[str] = []
    return DisconnectWatch(receive, lambda: seen.append("disconnect")), seen


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_disconnect_is_reported_once_and_ends_the_watch() -> None:
    async def main() -> None:
        channel = Channel()
        watch, seen = watch_of(channel.receive)
        await settle()
        assert watch.waiting and seen == []
        channel.queue.put_nowait({"type": "http.request", "body": b""})  # stray: ignored
        channel.queue.put_nowait({"type": "http.disconnect"})
        await settle()
        assert seen == ["disconnect"]
        assert not watch.waiting
        assert channel.calls == 2
        watch.stop()  # harmless once done
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(main())


def test_stop_closes_the_waiting_receive_where_it_waits() -> None:
    async def main() -> None:
        channel = Channel()
        watch, seen = watch_of(channel.receive)
        await settle()
        watch.stop()
        assert channel.closed == 1 and not watch.waiting
        # A message that arrives afterwards is nobody's: the queue keeps it.
        channel.queue.put_nowait({"type": "http.disconnect"})
        await settle()
        assert seen == [] and channel.queue.qsize() == 1

    asyncio.run(main())


def test_a_future_completed_just_before_stop_does_not_resume_the_watch() -> None:
    async def main() -> None:
        channel = Channel()
        watch, seen = watch_of(channel.receive)
        await settle()
        channel.queue.put_nowait({"type": "http.disconnect"})  # wakes the watch soon...
        watch.stop()  # ...but the request ends first
        await settle()
        assert seen == [] and channel.calls == 1

    asyncio.run(main())


async def disconnect_after_a_bare_yield() -> Message:
    await asyncio.sleep(0)
    return {"type": "http.disconnect"}


def test_a_bare_yield_resumes_on_the_next_iteration() -> None:
    async def main() -> None:
        _watch, seen = watch_of(disconnect_after_a_bare_yield)
        assert seen == []
        await settle()
        assert seen == ["disconnect"]

    asyncio.run(main())


def test_stop_cancels_the_scheduled_step_of_a_bare_yield() -> None:
    async def main() -> None:
        watch, seen = watch_of(disconnect_after_a_bare_yield)
        watch.stop()
        await settle()
        assert seen == []

    asyncio.run(main())


def test_a_failing_receive_is_logged_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    async def receive() -> Message:
        raise OSError("transport broke")

    async def main() -> None:
        watch, seen = watch_of(receive)
        assert not watch.waiting and seen == []

    asyncio.run(main())
    assert "receive() failed while watching for a disconnect" in caplog.text
    assert "OSError: transport broke" in caplog.text


def test_a_cancelled_wait_ends_the_watch_quietly(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        future = asyncio.get_running_loop().create_future()

        async def receive() -> Message:
            message: Message = await future
            return message

        watch, seen = watch_of(receive)
        future.cancel()  # as a server that shuts down might
        await settle()
        assert not watch.waiting and seen == []

    asyncio.run(main())
    assert caplog.text == ""


def test_an_unknown_yield_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    @types.coroutine
    def odd() -> Generator[Any, None, Message]:
        yield "not a future"
        return {"type": "http.disconnect"}

    async def main() -> None:
        watch, seen = watch_of(odd)
        assert not watch.waiting and seen == []

    asyncio.run(main())
    assert "which is not an asyncio future" in caplog.text


def test_a_receive_that_refuses_to_close_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        future = asyncio.get_running_loop().create_future()

        async def stubborn() -> Message:
            with contextlib.suppress(GeneratorExit):  # keeps waiting once: close() raises
                await future
            message: Message = await future  # closed for good when collected
            return message

        watch, _seen = watch_of(stubborn)
        watch.stop()
        future.cancel()

    asyncio.run(main())
    assert "receive() failed while the watch was stopped" in caplog.text
