"""synchronize, use_executor, spawn_greenlet and the application's executor."""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError
from pyramid.request import Request
from pyramid.response import Response
from pyramid.threadlocal import get_current_request
from webtest import TestApp

from aiopyramid_ng.bridge import in_bridge
from aiopyramid_ng.exceptions import ScopeError
from aiopyramid_ng.executor import AppExecutor
from aiopyramid_ng.helpers import spawn_greenlet, synchronize, use_executor
from aiopyramid_ng.interfaces import IAppExecutor
from aiopyramid_ng.settings import DEFAULT_MAX_WORKERS
from aiopyramid_ng.threads import run_in_thread
from tests.support.apps import get_response, make_app, make_one_view_app
from tests.support.leaks import LeakCheck


@synchronize
async def add_later(a: int, b: int) -> int:
    await asyncio.sleep(0.001)
    return a + b


@synchronize(strict=False)
async def lenient_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


class Resource:
    def __init__(self, children: dict[str, Any]) -> None:
        self.children = children

    @synchronize
    async def __getitem__(self, name: str) -> Any:
        await asyncio.sleep(0)
        return self.children[name]

    @property
    @synchronize
    async def size(self) -> int:
        await asyncio.sleep(0)
        return len(self.children)

    @synchronize
    async def method(self, suffix: str) -> str:
        await asyncio.sleep(0)
        return ",".join(self.children) + suffix


def test_synchronize_in_a_request_greenlet() -> None:
    def sync_code() -> tuple[int, Any, int, str]:
        resource = Resource({"a": 1, "b": 2})
        return add_later(1, 2), resource["b"], resource.size, resource.method("!")

    assert asyncio.run(spawn_greenlet(sync_code)) == (3, 2, 2, "a,b!")


def test_synchronize_keeps_the_function_identity() -> None:
    assert add_later.__name__ == "add_later"
    assert add_later.__wrapped__.__name__ == "add_later"  # type: ignore[attr-defined]


def test_synchronize_refuses_a_plain_function_when_strict() -> None:
    def plain() -> None:
        """Not a coroutine."""

    with pytest.raises(ConfigurationError, match=r"plain.*async def"):
        synchronize(plain)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        synchronize(strict=True)(plain)  # type: ignore[arg-type]
    assert synchronize(strict=False)(plain) is plain  # type: ignore[arg-type]


def test_strict_synchronize_on_the_loop_outside_a_greenlet_raises() -> None:
    async def main() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ScopeError, match="outside any request greenlet"):
                add_later(1, 2)
            gc.collect()

    asyncio.run(main())


def test_lenient_synchronize_on_the_loop_returns_the_coroutine() -> None:
    async def main() -> int:
        coroutine = lenient_add(2, 3)
        assert asyncio.iscoroutine(coroutine)
        result: int = await coroutine
        return result

    assert asyncio.run(main()) == 5
    assert asyncio.run(spawn_greenlet(lenient_add, 2, 3)) == 5


def test_synchronize_from_a_thread_serving_no_request_raises() -> None:
    errors: list[BaseException] = []

    def in_thread() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                add_later(1, 2)
            except ScopeError as exc:
                errors.append(exc)
            gc.collect()

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert len(errors) == 1
    assert "serves no request" in str(errors[0])


def _executor_app(max_workers: int) -> Any:
    async def fetch_name(request: Request) -> str:
        await asyncio.sleep(0.001)
        assert get_current_request() is request
        name: str = request.params["name"]
        return name

    fetch = synchronize(fetch_name)

    def blocking(request: Request) -> Response:
        assert not in_bridge()
        name = fetch(request)
        return Response(f"{name} in {threading.current_thread().name}")

    return make_one_view_app(blocking, **{"aiopyramid_ng.executor.max_workers": str(max_workers)})


def test_synchronize_from_an_executor_thread_with_a_one_thread_pool() -> None:
    app = _executor_app(max_workers=1)
    assert TestApp(app).get("/?name=solo").text == "solo in aiopyramid_ng_0"

    async def main() -> list[str]:
        responses = await asyncio.gather(*(get_response(app, f"/?name={n}") for n in range(30)))
        return [response.text for response in responses]

    assert asyncio.run(main()) == [f"{n} in aiopyramid_ng_0" for n in range(30)]
    app.registry.getUtility(IAppExecutor).shutdown()


def test_use_executor_copies_the_context_and_uses_the_app_pool() -> None:
    @use_executor
    def blocking_lookup(request: Request) -> tuple[bool, str]:
        return get_current_request() is request, threading.current_thread().name

    async def view(request: Request) -> Response:
        same, thread = await blocking_lookup(request)
        return Response(f"{same} {thread}")

    app = make_one_view_app(view, **{"aiopyramid_ng.executor.max_workers": "2"})
    assert TestApp(app).get("/").text.startswith("True aiopyramid_ng_")


def test_use_executor_with_a_given_executor_and_outside_any_app() -> None:
    pool = ThreadPoolExecutor(1, thread_name_prefix="given")

    @use_executor(executor=pool)
    def on_given() -> str:
        return threading.current_thread().name

    @use_executor
    def on_fallback() -> str:
        return threading.current_thread().name

    async def main() -> tuple[str, str]:
        return await on_given(), await on_fallback()

    try:
        given, fallback = asyncio.run(main())
    finally:
        pool.shutdown()
    assert given.startswith("given")
    assert fallback.startswith("aiopyramid_ng")


def test_cancelled_executor_work_is_let_finish_before_the_caller_unwinds() -> None:
    started = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def blocking() -> None:
        started.set()
        release.wait(5)
        order.append("thread done")

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            task = asyncio.create_task(run_in_thread(pool, blocking))
            await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
            task.cancel()
            await asyncio.sleep(0.01)
            assert not task.done(), "the caller unwound while its thread still ran"
            task.cancel()  # asking twice changes nothing
            await asyncio.sleep(0)
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await task
            order.append("caller unwound")

    asyncio.run(main())
    assert order == ["thread done", "caller unwound"]


def test_cancelled_executor_work_that_never_started_is_withdrawn() -> None:
    release = threading.Event()
    ran: list[str] = []

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            blocker = asyncio.ensure_future(run_in_thread(pool, release.wait, 5))
            queued = asyncio.create_task(run_in_thread(pool, ran.append, "queued"))
            await asyncio.sleep(0.01)
            queued.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
            release.set()
            assert await blocker is True

    asyncio.run(main())
    assert ran == []


def test_executor_work_outliving_its_closed_loop_ends_quietly() -> None:
    """A loop closed while its thread runs: the thread's outcome has nobody to go to."""
    release = threading.Event()
    submitted: list[Future[Any]] = []

    class RecordingPool(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
            future = super().submit(fn, *args, **kwargs)
            submitted.append(future)
            return future

    with RecordingPool(1) as pool:
        loop = asyncio.new_event_loop()
        call = run_in_thread(pool, release.wait, 5)
        task = loop.create_task(call)
        loop.run_until_complete(asyncio.sleep(0.01))
        loop.close()  # the task is still waiting for the thread
        release.set()
        assert submitted[0].result(timeout=5) is None  # the worker raised nothing
    assert not task.done()
    call.close()
    del task  # asyncio logs the pending Task it destroys here, inside the test
    gc.collect()


def test_cancelled_executor_work_that_fails_is_not_reported_as_lost() -> None:
    started = threading.Event()
    release = threading.Event()

    def failing() -> None:
        started.set()
        release.wait(5)
        raise RuntimeError("after cancellation")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        reported: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        with ThreadPoolExecutor(1) as pool:
            task = asyncio.create_task(run_in_thread(pool, failing))
            await loop.run_in_executor(None, started.wait, 5)
            task.cancel()
            await asyncio.sleep(0)
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await task
        gc.collect()
        assert reported == []

    asyncio.run(main())


def test_cancelling_a_request_whose_view_runs_in_a_thread() -> None:
    started = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def blocking(request: Request) -> Response:
        request.add_finished_callback(lambda request: order.append("finished callback"))
        started.set()
        release.wait(5)
        order.append("view done")
        return Response("never sent")

    app = make_one_view_app(blocking)

    async def main() -> None:
        check = LeakCheck()
        task = asyncio.create_task(get_response(app, "/"))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
        task.cancel()
        await asyncio.sleep(0.01)
        assert order == []
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        check.assert_clean(asyncio.get_running_loop(), max_new_threads=DEFAULT_MAX_WORKERS)

    asyncio.run(main())
    assert order == ["view done", "finished callback"]


def test_cancelling_an_awaiting_view_runs_its_finally_and_callbacks_once() -> None:
    reached = asyncio.Event()
    order: list[str] = []

    async def waiting(request: Request) -> Response:
        request.add_finished_callback(lambda request: order.append("finished callback"))
        try:
            reached.set()
            await asyncio.sleep(10)
        finally:
            order.append("finally")
        return Response("never sent")

    app = make_one_view_app(waiting)

    async def main() -> None:
        check = LeakCheck()
        tasks = [asyncio.create_task(get_response(app, "/")) for _ in range(20)]
        await reached.wait()
        await asyncio.sleep(0.01)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(result, asyncio.CancelledError) for result in results)
        check.assert_clean(asyncio.get_running_loop())

    asyncio.run(main())
    assert order == ["finally", "finished callback"] * 20


def test_spawn_greenlet_from_any_task() -> None:
    def sync_code(a: int, *, b: int) -> int:
        return add_later(a, b)

    async def main() -> list[int]:
        return await asyncio.gather(*(spawn_greenlet(sync_code, n, b=1) for n in range(50)))

    assert asyncio.run(main()) == [n + 1 for n in range(50)]


@pytest.mark.parametrize("value", ["0", "-3", "many", ""])
def test_bad_max_workers_fails_at_commit(value: str) -> None:
    with pytest.raises(ConfigurationError, match=r"aiopyramid_ng\.executor\.max_workers"):
        make_app(lambda config: None, **{"aiopyramid_ng.executor.max_workers": value})


def test_set_executor_directive_replaces_the_pool_and_is_not_owned() -> None:
    pool = ThreadPoolExecutor(1, thread_name_prefix="mine")

    def view(request: Request) -> Response:
        return Response(threading.current_thread().name)

    def setup(config: Configurator) -> None:
        config.set_executor(pool)
        config.add_route("view", "/")
        config.add_view(view, route_name="view")

    try:
        app = make_app(setup)
        assert TestApp(app).get("/").text.startswith("mine")
        holder = app.registry.getUtility(IAppExecutor)
        holder.shutdown()
        assert pool.submit(lambda: "still running").result() == "still running"
    finally:
        pool.shutdown()


def test_owned_executor_is_created_lazily_and_shut_down() -> None:
    holder = AppExecutor(2)
    first = holder.get()
    assert holder.get() is first
    holder.shutdown()
    with pytest.raises(RuntimeError):
        first.submit(print)
    assert holder.get() is not first
    holder.shutdown()


def test_executor_work_from_a_coroutine_a_blocked_worker_waits_for() -> None:
    # One thread: the view occupies it, synchronizes a coroutine, and that
    # coroutine needs the pool again. The waiting thread runs that work itself.
    @use_executor
    def blocking_part(n: int) -> str:
        assert get_current_request() is not None
        return f"{n} in {threading.current_thread().name}"

    @synchronize
    async def mixed(n: int) -> str:
        await asyncio.sleep(0)
        return await blocking_part(n)

    def view(request: Request) -> Response:
        return Response(mixed(int(request.params["n"])))

    app = make_one_view_app(view, **{"aiopyramid_ng.executor.max_workers": "1"})

    async def main() -> list[str]:
        responses = await asyncio.gather(*(get_response(app, f"/?n={n}") for n in range(10)))
        return [response.text for response in responses]

    try:
        assert asyncio.run(main()) == [f"{n} in aiopyramid_ng_0" for n in range(10)]
    finally:
        app.registry.getUtility(IAppExecutor).shutdown()


def test_cancelling_a_request_cancels_what_its_thread_waits_for() -> None:
    entered = threading.Event()
    order: list[str] = []

    @synchronize
    async def long_wait() -> None:
        try:
            entered.set()
            await asyncio.sleep(10)
        finally:
            order.append("coroutine unwound")

    def blocking(request: Request) -> Response:
        request.add_finished_callback(lambda request: order.append("finished callback"))
        try:
            long_wait()
        except asyncio.CancelledError:
            order.append("thread saw the cancellation")
            raise
        return Response("never sent")

    app = make_one_view_app(blocking)

    async def main() -> None:
        check = LeakCheck()
        task = asyncio.create_task(get_response(app, "/"))
        await asyncio.get_running_loop().run_in_executor(None, entered.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        check.assert_clean(asyncio.get_running_loop(), max_new_threads=DEFAULT_MAX_WORKERS)

    try:
        asyncio.run(main())
    finally:
        app.registry.getUtility(IAppExecutor).shutdown()
    assert order == ["coroutine unwound", "thread saw the cancellation", "finished callback"]
