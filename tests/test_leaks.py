"""After 10,000 requests (some cancelled, some failing) nothing is left behind."""

from __future__ import annotations

import asyncio
import threading

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response
from pyramid.threadlocal import get_current_request, manager

from aiopyramid_ng.interfaces import IAppExecutor
from aiopyramid_ng.settings import DEFAULT_MAX_WORKERS
from tests.support.apps import get_response, make_app
from tests.support.leaks import LeakCheck

TOTAL = 10_000
BATCH = 250


async def awaiting(request: Request) -> Response:
    mode = int(request.params["n"]) % 10
    await asyncio.sleep(0 if mode else 0.05)  # every tenth waits long enough to be cancelled
    assert get_current_request() is request
    if mode == 1:
        raise ValueError(request.params["n"])
    return Response(request.params["n"])


def blocking(request: Request) -> Response:
    assert get_current_request() is request
    return Response(request.params["n"])


def setup(config: Configurator) -> None:
    config.add_route("awaiting", "/awaiting")
    config.add_route("blocking", "/blocking")
    config.add_view(awaiting, route_name="awaiting")
    config.add_view(blocking, route_name="blocking")


def test_nothing_leaks_after_10000_requests() -> None:
    app = make_app(setup)
    outcomes = {"ok": 0, "failed": 0, "cancelled": 0}

    async def batch(start: int) -> None:
        tasks = []
        for n in range(start, start + BATCH):
            kind = "blocking" if n % 20 == 5 else "awaiting"
            tasks.append(asyncio.create_task(get_response(app, f"/{kind}?n={n}")))
        await asyncio.sleep(0.001)
        for n, task in zip(range(start, start + BATCH), tasks, strict=True):
            if n % 10 == 0:
                task.cancel()
        for n, result in zip(
            range(start, start + BATCH),
            await asyncio.gather(*tasks, return_exceptions=True),
            strict=True,
        ):
            if isinstance(result, asyncio.CancelledError):
                assert n % 10 == 0
                outcomes["cancelled"] += 1
            elif isinstance(result, ValueError):
                assert result.args == (str(n),)
                outcomes["failed"] += 1
            else:
                assert not isinstance(result, BaseException), result
                assert result.text == str(n)
                outcomes["ok"] += 1

    async def main() -> None:
        check = LeakCheck()
        for start in range(0, TOTAL, BATCH):
            await batch(start)
        check.assert_clean(asyncio.get_running_loop(), max_new_threads=DEFAULT_MAX_WORKERS)

    # Compared by identity: a thread of an earlier test may end meanwhile.
    threads_before = set(threading.enumerate())
    asyncio.run(main())
    app.registry.getUtility(IAppExecutor).shutdown()
    assert set(threading.enumerate()) <= threads_before
    assert manager.stack == []
    assert outcomes == {"ok": 8000, "failed": 1000, "cancelled": 1000}
