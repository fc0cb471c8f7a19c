"""helpers.Lock across waits, and the blocking detector."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError
from pyramid.request import Request
from pyramid.response import Response
from webtest import TestApp

from aiopyramid_ng.bridge import spawn_greenlet
from aiopyramid_ng.helpers import Lock, await_, use_executor
from tests.support.apps import get_response, make_app
from tests.support.leaks import LeakCheck


def test_lock_serialises_read_modify_write_across_waits() -> None:
    lock = Lock()
    state = {"count": 0, "inside": 0, "most_inside": 0}

    def increment() -> None:
        with lock:
            state["inside"] += 1
            state["most_inside"] = max(state["most_inside"], state["inside"])
            value = state["count"]
            await_(asyncio.sleep(0.001))
            state["count"] = value + 1
            state["inside"] -= 1

    async def increment_async() -> None:
        async with lock:
            value = state["count"]
            await asyncio.sleep(0)
            state["count"] = value + 1

    async def unrelated() -> str:
        await asyncio.sleep(0)
        return "served"

    async def main() -> None:
        check = LeakCheck()
        results = await asyncio.gather(
            *(spawn_greenlet(increment) for _ in range(50)),
            *(increment_async() for _ in range(50)),
            *(unrelated() for _ in range(50)),
        )
        assert results[100:] == ["served"] * 50
        assert not lock.locked()
        check.assert_clean(asyncio.get_running_loop())

    asyncio.run(main())
    assert state["count"] == 100
    assert state["most_inside"] == 1


def test_lock_from_a_worker_thread_serving_a_request() -> None:
    lock = Lock()
    order: list[str] = []

    @use_executor
    def in_thread(n: int) -> None:
        with lock:
            order.append(f"in {n}")
            order.append(f"out {n}")

    def in_greenlet() -> None:
        with lock:
            order.append("in greenlet")
            await_(asyncio.sleep(0.001))
            order.append("out greenlet")

    async def main() -> None:
        await asyncio.gather(spawn_greenlet(in_greenlet), in_thread(1), in_thread(2))

    asyncio.run(main())
    pairs = [tuple(order[i : i + 2]) for i in range(0, len(order), 2)]
    assert sorted(pairs) == [("in 1", "out 1"), ("in 2", "out 2"), ("in greenlet", "out greenlet")]


def test_release_of_an_unheld_lock_raises() -> None:
    with pytest.raises(RuntimeError):
        asyncio.run(spawn_greenlet(Lock().release))


def test_a_threading_lock_held_across_a_wait_freezes_the_loop() -> None:
    # What Lock prevents: the holder waits on the loop, the second greenlet
    # blocks the loop thread on the lock, so the holder never resumes.
    lock = threading.Lock()
    outcome: dict[str, Any] = {}

    def holder() -> None:
        with lock:
            await_(asyncio.sleep(0))
            outcome["holder resumed before the waiter gave up"] = "waiter" not in outcome

    def waiter() -> None:
        outcome["waiter"] = lock.acquire(timeout=0.2)
        if outcome["waiter"]:
            lock.release()

    async def main() -> None:
        await asyncio.gather(spawn_greenlet(holder), spawn_greenlet(waiter))

    asyncio.run(main())
    assert outcome == {"waiter": False, "holder resumed before the waiter gave up": False}


def _blocking_app(**settings: str) -> Any:
    def busy(request: Request) -> Response:
        time.sleep(0.05)  # blocks the loop: this view runs in the greenlet
        return Response("done")

    async def polite(request: Request) -> Response:
        await asyncio.sleep(0.05)
        return Response("done")

    def setup(config: Configurator) -> None:
        config.add_route("busy", "/busy")
        config.add_route("polite", "/polite")
        config.add_view(busy, route_name="busy", mapper="aiopyramid_ng.config.GreenletMapper")
        config.add_view(polite, route_name="polite")

    return make_app(setup, **settings)


def test_blocking_detector_names_the_request_and_view(caplog: pytest.LogCaptureFixture) -> None:
    app = _blocking_app(**{"aiopyramid_ng.debug.blocking_ms": "20"})
    with caplog.at_level(logging.WARNING, logger="aiopyramid_ng.debug"):
        TestApp(app).get("/polite")
        assert caplog.records == []

        async def main() -> None:
            await asyncio.gather(*(get_response(app, "/busy") for _ in range(3)))

        asyncio.run(main())
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 3
    for message in messages:
        assert "request GET /busy ran" in message
        assert "busy" in message.split("view:")[1]
        assert "use_executor" in message


def test_blocking_detector_is_off_without_the_setting(caplog: pytest.LogCaptureFixture) -> None:
    app = _blocking_app()
    with caplog.at_level(logging.WARNING, logger="aiopyramid_ng.debug"):
        TestApp(app).get("/busy")
    assert caplog.records == []


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_bad_blocking_threshold_fails_at_commit(value: str) -> None:
    with pytest.raises(ConfigurationError, match=r"aiopyramid_ng\.debug\.blocking_ms"):
        _blocking_app(**{"aiopyramid_ng.debug.blocking_ms": value})
