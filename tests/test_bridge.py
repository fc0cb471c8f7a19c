"""The greenlet bridge on its own: results, context, exceptions, cancellation."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import random
import traceback
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor

import pytest
from greenlet import GreenletExit, getcurrent, greenlet
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from aiopyramid_ng import bridge
from aiopyramid_ng.bridge import (
    RequestGreenlet,
    direct_call,
    in_bridge,
    request_loop,
    spawn_greenlet,
    spawn_greenlet_watched,
)
from aiopyramid_ng.bridge import await_in_greenlet as await_
from aiopyramid_ng.exceptions import ScopeError
from tests.support.leaks import LeakCheck

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


def parent_of(child: greenlet) -> greenlet:
    """The greenlet ``child`` switches back to (a request greenlet's is its driver)."""
    parent = child.parent
    assert parent is not None
    return parent


async def double_later(value: int, delay: float = 0.001) -> int:
    await asyncio.sleep(delay)
    return value * 2


def test_result_and_current_task() -> None:
    def sync_code() -> tuple[int, bool, bool]:
        task = asyncio.current_task()
        assert in_bridge()
        return await_(double_later(21)), task is not None, asyncio.current_task() is task

    async def main() -> tuple[int, bool, bool]:
        return await spawn_greenlet(sync_code)

    assert asyncio.run(main()) == (42, True, True)


def test_coroutine_that_never_suspends_needs_no_switch() -> None:
    switches = []

    async def immediate() -> str:
        return "now"

    def sync_code() -> str:
        previous = greenlet.settrace(lambda event, args: switches.append(event))
        try:
            return await_(immediate())
        finally:
            greenlet.settrace(previous)

    assert asyncio.run(spawn_greenlet(sync_code)) == "now"
    assert switches == []


def test_awaits_futures_and_tasks() -> None:
    def sync_code() -> list[object]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        loop.call_later(0.001, future.set_result, "future")
        task = asyncio.ensure_future(double_later(2))
        return [await_(future), await_(task), await_(asyncio.sleep(0, "sleep"))]

    assert asyncio.run(spawn_greenlet(sync_code)) == ["future", 4, "sleep"]


def test_contextvars_flow_both_ways_and_reset_across() -> None:
    def sync_code() -> str:
        seen = var.get()
        var.set("from greenlet")
        return seen

    async def main() -> None:
        token = var.set("from task")
        assert await spawn_greenlet(sync_code) == "from task"
        assert var.get() == "from greenlet"

        def reset_in_greenlet() -> None:
            var.reset(token)

        await spawn_greenlet(reset_in_greenlet)
        assert var.get() == "unset"

        # And a token made in the greenlet resets on the Task's side.
        tokens = []
        await spawn_greenlet(lambda: tokens.append(var.set("inner")))
        assert var.get() == "inner"
        var.reset(tokens[0])
        assert var.get() == "unset"

    asyncio.run(main())


def test_nested_sync_async_sync() -> None:
    depth: list[int] = []

    def level(n: int) -> int:
        if n == 0:
            return 0
        return await_(async_level(n))

    async def async_level(n: int) -> int:
        await asyncio.sleep(0)
        depth.append(n)
        return 1 + level(n - 1)

    assert asyncio.run(spawn_greenlet(level, 20)) == 20
    assert depth == list(range(20, 0, -1))


def test_nested_spawn_greenlet_inside_a_request_greenlet() -> None:
    async def outer() -> int:
        return await spawn_greenlet(lambda: await_(double_later(5)))

    assert asyncio.run(spawn_greenlet(lambda: await_(outer()))) == 10


def test_greenlet_below_a_request_greenlet_may_wait() -> None:
    def sync_code() -> int:
        child = greenlet(lambda: await_(double_later(8)))
        return int(child.switch())

    assert asyncio.run(spawn_greenlet(sync_code)) == 16


def test_exception_is_the_same_object_with_both_frames() -> None:
    raised: list[BaseException] = []

    async def failing() -> None:
        await asyncio.sleep(0)
        error = ValueError("boom")
        raised.append(error)
        raise error

    def sync_caller() -> None:
        await_(failing())

    async def main() -> None:
        with pytest.raises(ValueError) as info:
            await spawn_greenlet(sync_caller)
        assert info.value is raised[0]
        frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
        assert "sync_caller" in frames
        assert "failing" in frames

    asyncio.run(main())


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_base_exceptions_are_forwarded(exc_type: type[BaseException]) -> None:
    async def raising() -> None:
        await asyncio.sleep(0)
        raise exc_type()

    def sync_caller() -> None:
        await_(raising())

    async def main() -> BaseException:
        try:
            await spawn_greenlet(sync_caller)
        except BaseException as exc:
            return exc
        raise AssertionError("nothing was raised")

    assert type(asyncio.run(main())) is exc_type


def test_cancellation_runs_finally_and_ends_cancelled() -> None:
    order: list[str] = []

    def waiting() -> None:
        try:
            await_(asyncio.sleep(10))
        finally:
            order.append("finally")

    async def main() -> None:
        task = asyncio.create_task(spawn_greenlet(waiting))
        await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        order.append("cancelled")

    asyncio.run(main())
    assert order == ["finally", "cancelled"]


def test_swallowed_cancellation_still_ends_cancelled() -> None:
    def swallowing() -> str:
        try:
            await_(asyncio.sleep(10))
        except asyncio.CancelledError:
            return "swallowed"
        return "not cancelled"

    async def main() -> None:
        task = asyncio.create_task(spawn_greenlet(swallowing))
        await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_timeout_inside_a_synchronized_coroutine() -> None:
    async def slow() -> None:
        async with asyncio.timeout(0.001):
            await asyncio.sleep(10)

    def sync_code() -> str:
        try:
            await_(slow())
        except TimeoutError:
            return "timed out"
        return "no timeout"

    async def main() -> str:
        task = asyncio.current_task()
        assert task is not None
        result = await spawn_greenlet(sync_code)
        assert task.cancelling() == 0
        return result

    assert asyncio.run(main()) == "timed out"


def test_closing_the_driver_unwinds_the_greenlet() -> None:
    order: list[str] = []

    def waiting() -> None:
        try:
            await_(asyncio.sleep(10))
        finally:
            order.append("unwound")

    async def main() -> None:
        driver = spawn_greenlet(waiting)
        future = driver.send(None)  # runs until the greenlet suspends
        assert isinstance(future, asyncio.Future)
        driver.close()
        assert order == ["unwound"]

    asyncio.run(main())


def test_a_greenlet_that_refuses_to_stop_is_reported() -> None:
    def stubborn() -> None:
        for _ in range(3):
            try:
                await_(asyncio.sleep(10))
            except (GeneratorExit, GreenletExit):
                continue

    async def main() -> None:
        driver = spawn_greenlet(stubborn)
        driver.send(None)
        with pytest.raises(RuntimeError, match="kept waiting after its request was closed"):
            driver.close()

    asyncio.run(main())


def test_await_outside_a_bridge_raises_scope_error_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ScopeError, match="not running in a request greenlet"):
            await_(double_later(1))
        gc.collect()


def test_await_on_the_loop_outside_a_bridge_raises_scope_error() -> None:
    async def main() -> None:
        assert not in_bridge()
        with pytest.raises(ScopeError, match="spawn_greenlet"):
            await_(double_later(1))

    asyncio.run(main())


def test_request_loop_is_known_in_the_request_context() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert await spawn_greenlet(request_loop) is loop
        assert contextvars.copy_context().run(request_loop) is loop

    asyncio.run(main())


def test_many_interleaved_greenlets_on_one_loop() -> None:
    def worker(i: int) -> tuple[int, int]:
        var.set(f"request {i}")
        for _ in range(5):
            await_(asyncio.sleep(random.random() / 1000))
            assert var.get() == f"request {i}"
            assert isinstance(getcurrent(), RequestGreenlet)
        return i, await_(double_later(i, 0))

    async def main() -> list[tuple[int, int]]:
        check = LeakCheck()
        results = await asyncio.gather(*(spawn_greenlet(worker, i) for i in range(500)))
        check.assert_clean(asyncio.get_running_loop())
        return results

    assert asyncio.run(main()) == [(i, 2 * i) for i in range(500)]


def test_sqlalchemy_greenlet_protocol_is_understood() -> None:
    # SQLAlchemy's own await_: check the marker, switch the raw awaitable to
    # the parent, get its outcome back.
    def sqlalchemy_style_await(awaitable: object) -> object:
        current = getcurrent()
        assert getattr(current, "__sqlalchemy_greenlet_provider__", False)
        return parent_of(current).switch(awaitable)

    async def failing() -> None:
        await asyncio.sleep(0)
        raise LookupError("from the database")

    def sync_orm_code() -> list[object]:
        results = [sqlalchemy_style_await(double_later(4))]
        try:
            sqlalchemy_style_await(failing())
        except LookupError as exc:
            results.append(exc.args[0])
        results.append(await_(double_later(5)))  # both protocols in one greenlet
        return results

    async def main() -> list[object]:
        return await spawn_greenlet(sync_orm_code)

    assert asyncio.run(main()) == [8, "from the database", 10]


def test_sqlalchemy_protocol_cancellation_reaches_the_greenlet() -> None:
    order: list[str] = []

    def sync_orm_code() -> None:
        try:
            parent_of(getcurrent()).switch(asyncio.sleep(10))
        except asyncio.CancelledError:
            order.append("cancelled in greenlet")
            raise

    async def main() -> None:
        task = asyncio.create_task(spawn_greenlet(sync_orm_code))
        await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert order == ["cancelled in greenlet"]


def test_sync_sqlalchemy_over_an_async_engine_needs_no_thread() -> None:
    async def main() -> list[int]:
        engine = create_async_engine("sqlite+aiosqlite:///:memory:")

        def sync_queries() -> list[int]:
            # The plain, synchronous API: its I/O goes through the bridge.
            with engine.sync_engine.connect() as connection:
                return [connection.execute(text(f"select {n}")).scalar_one() for n in range(3)]

        try:
            return await spawn_greenlet(sync_queries)
        finally:
            await engine.dispose()

    assert asyncio.run(main()) == [0, 1, 2]


def test_a_returned_greenlet_is_reused_and_keeps_nothing_of_its_request() -> None:
    class Payload:
        pass

    def identify(payload: Payload) -> greenlet:
        var.set("set by the request")
        return getcurrent()

    async def main() -> None:
        check = LeakCheck()
        payload = Payload()
        first = await spawn_greenlet(identify, payload)
        gone = weakref.ref(payload)
        del payload
        gc.collect()
        # Parked: not a request greenlet, no context, no reference to the request's data.
        assert gone() is None
        assert not isinstance(first, RequestGreenlet)
        assert first.gr_context is None
        check.assert_clean(asyncio.get_running_loop())
        assert await spawn_greenlet(identify, Payload()) is first

    asyncio.run(main())


def test_a_greenlet_that_raised_is_not_reused() -> None:
    def fail() -> greenlet:
        raise LookupError(getcurrent())

    async def main() -> None:
        with pytest.raises(LookupError) as raised:
            await spawn_greenlet(fail)
        failed = raised.value.args[0]
        assert failed.dead
        assert await spawn_greenlet(getcurrent) is not failed

    asyncio.run(main())


def test_idle_greenlets_beyond_the_pool_size_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bridge, "POOL_SIZE", 2)
    monkeypatch.setattr(bridge._pool, "idle", [])

    def hold() -> greenlet:
        await_(asyncio.sleep(0.001))
        return getcurrent()

    async def main() -> None:
        served = await asyncio.gather(*(spawn_greenlet(hold) for _ in range(5)))
        assert sum(not g.dead for g in served) == 2

    asyncio.run(main())


@pytest.mark.parametrize("protocol", ["await_", "sqlalchemy"])
def test_on_suspend_runs_once_at_the_first_wait(protocol: str) -> None:
    calls: list[str] = []

    def waits_twice() -> str:
        calls.append("started")
        for _ in range(2):
            if protocol == "await_":
                await_(asyncio.sleep(0))
            else:
                parent_of(getcurrent()).switch(asyncio.sleep(0))
        return "done"

    async def main() -> None:
        assert (
            await spawn_greenlet_watched(lambda: calls.append("suspended"), waits_twice) == "done"
        )
        assert await spawn_greenlet_watched(lambda: calls.append("never"), lambda: "at once") == (
            "at once"
        )

    asyncio.run(main())
    assert calls == ["started", "suspended"]


class _CallableObject:
    def __call__(self, value: int) -> int:
        return value + 1


def test_direct_call_binds_a_python_call_method_and_leaves_the_rest() -> None:
    instance = _CallableObject()
    call = direct_call(instance)
    assert call == instance.__call__  # a bound method: runs in the caller's loop
    assert call(1) == 2

    def function(value: int) -> int:
        return value

    assert direct_call(function) is function
    assert direct_call(len) is len


def test_a_parked_greenlet_keeps_nothing_of_its_first_request() -> None:
    class Environ:
        pass

    def handle(environ: Environ) -> str:
        return "done"

    def first_request_of_a_thread() -> weakref.ref[Environ]:
        # A thread of its own: its greenlets are new, not parked by earlier tests.
        environ = Environ()
        assert asyncio.run(spawn_greenlet(handle, environ)) == "done"
        assert bridge._pool.idle, "the greenlet was parked"
        return weakref.ref(environ)

    with ThreadPoolExecutor(1) as pool:
        environ = pool.submit(first_request_of_a_thread).result()
        gc.collect()
        assert environ() is None
