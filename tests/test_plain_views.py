"""The default mapper's plain views: probation in the pool, promotion, demotion (issue 13).

Views here either obviously never wait (they return at once) or obviously
do (``time.sleep``); the assertions are about where each call ran (the
thread it reported) and what was logged, never about how long it took.
In WSGI mode (WebTest) and in :func:`~tests.support.apps.get_response` the
event loop runs in the test's own thread, so a call that ran there ran in
the request greenlet; one that ran in a thread named ``aiopyramid_ng...``
ran in the pool.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import webtest
from pyramid.config import Configurator
from pyramid.events import NewRequest
from pyramid.exceptions import ConfigurationError
from pyramid.request import Request
from pyramid.response import Response
from pyramid.threadlocal import get_current_request

from aiopyramid_ng.adaptive import CLEAR_WAIT, DEMOTE_AFTER, PROMOTE_AFTER, Placement, Run
from aiopyramid_ng.config import ExecutorMapper, GreenletMapper
from aiopyramid_ng.exceptions import NestedLoopError
from aiopyramid_ng.helpers import synchronize, use_executor
from aiopyramid_ng.interfaces import IAppExecutor
from aiopyramid_ng.settings import DEFAULT_MAX_WORKERS
from aiopyramid_ng.testing import TestApp as ASGITestApp
from tests.support.apps import get_response, make_app, tick
from tests.support.leaks import LeakCheck

LOGGER = "aiopyramid_ng.adaptive"
LOOP, POOL = "loop", "pool"
#: The thread that imports the module runs the tests, and so the loops of their requests.
MAIN = threading.get_ident()


def place() -> str:
    """Where the caller runs: the test's thread (which runs the loop) or a pool thread."""
    if threading.get_ident() == MAIN:
        return LOOP
    assert threading.current_thread().name.startswith("aiopyramid_ng")
    return POOL


@pytest.fixture(autouse=True)
def _loop_thread() -> None:
    assert threading.get_ident() == MAIN, "place() needs the tests run in the importing thread"


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        yield caplog


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


def compute(seconds: float) -> None:
    """Keep the thread computing for ``seconds`` of its own CPU time (however long that takes)."""
    started = time.thread_time()
    while time.thread_time() - started < seconds:
        pass


class Probe:
    """A plain view that reports where each call ran, told what to do by ``behaviour``."""

    def __init__(self, name: str) -> None:
        self.places: list[str] = []
        #: "quick", "sleep" (``sleep_for`` seconds), "compute" (``sleep_for`` seconds of
        #: CPU), "loop" (asyncio.run), "suspend" (a synchronized coroutine that sleeps on
        #: the loop), "fail" (a RuntimeError of its own).
        self.behaviour = "quick"
        self.sleep_for = 0.02

        def view(request: Request) -> Response:
            assert get_current_request() is request
            self.places.append(place())
            return Response(self.act(request))

        view.__name__ = view.__qualname__ = name
        self.view = view

    def act(self, request: Request) -> str:
        if self.behaviour == "sleep":
            time.sleep(self.sleep_for)
        elif self.behaviour == "compute":
            compute(self.sleep_for)
        elif self.behaviour == "loop":
            coroutine = _answer()
            try:
                answer: str = asyncio.run(coroutine)
                return answer
            finally:
                coroutine.close()  # refused unstarted on the loop thread
        elif self.behaviour == "suspend":
            return _sleep_on_the_loop(0.02)
        elif self.behaviour == "fail":
            raise RuntimeError("unrelated")
        answer = request.params.get("n", "ok")
        return str(answer)


async def _answer() -> str:
    await asyncio.sleep(0)
    return "answered"


@synchronize
async def _sleep_on_the_loop(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "suspended"


def one_view_app(view: Callable[..., Any], **settings: Any) -> webtest.TestApp:
    def setup(config: Configurator) -> None:
        config.add_route("view", "/")
        config.add_view(view, route_name="view")

    return webtest.TestApp(make_app(setup, **settings))


def promote(app: webtest.TestApp, probe: Probe) -> None:
    """Call the probe until it runs in the request greenlet; check it began in the pool."""
    for _ in range(10 * PROMOTE_AFTER):
        app.get("/")
        if probe.places[-1] == LOOP:
            break
    assert probe.places[-1] == LOOP, probe.places
    # Never before its probation was over; promoted on a quick streak afterwards.
    assert probe.places[:PROMOTE_AFTER] == [POOL] * PROMOTE_AFTER
    assert probe.places.index(LOOP) >= PROMOTE_AFTER


# -- promotion ---------------------------------------------------------------------------------


def test_a_quick_view_runs_in_the_pool_then_in_the_request_greenlet(
    logs: pytest.LogCaptureFixture,
) -> None:
    probe = Probe("quick_view")
    app = one_view_app(probe.view)
    promote(app, probe)
    for _ in range(3 * PROMOTE_AFTER):
        assert app.get("/?n=7").text == "7"
    assert probe.places[-3 * PROMOTE_AFTER :] == [LOOP] * (3 * PROMOTE_AFTER)
    [promoted] = records(logs, logging.DEBUG)
    assert "function tests.test_plain_views.quick_view" in promoted
    assert f"ran {PROMOTE_AFTER} times in a row in the thread pool without waiting" in promoted
    assert records(logs, logging.WARNING) == []


def test_a_view_that_sleeps_stays_in_the_pool(logs: pytest.LogCaptureFixture) -> None:
    probe = Probe("sleepy_view")
    probe.behaviour = "sleep"  # 20 ms, over the 10 ms limit
    app = one_view_app(probe.view)
    for _ in range(PROMOTE_AFTER + 4):
        app.get("/")
    assert probe.places == [POOL] * (PROMOTE_AFTER + 4)
    [settled] = records(logs, logging.DEBUG)
    assert "function tests.test_plain_views.sleepy_view waited" in settled
    assert "in the thread pool, on I/O, a lock or a sleep: it stays in the thread pool" in settled
    # For good: quick from now on, it is no longer measured, never promoted.
    probe.behaviour = "quick"
    for _ in range(2 * PROMOTE_AFTER):
        app.get("/")
    assert set(probe.places) == {POOL}
    assert len(records(logs, logging.DEBUG)) == 1


def test_a_view_that_waits_briefly_on_every_call_is_never_promoted(
    logs: pytest.LogCaptureFixture,
) -> None:
    probe = Probe("briefly_sleepy_view")
    probe.behaviour, probe.sleep_for = "sleep", 0.002
    app = one_view_app(probe.view)
    for _ in range(3 * PROMOTE_AFTER):
        app.get("/")
    assert probe.places == [POOL] * (3 * PROMOTE_AFTER)
    assert records(logs, logging.DEBUG) == []  # still on probation: no wait settled it


def test_a_slow_run_during_probation_restarts_the_count() -> None:
    probe = Probe("sometimes_slow_view")
    # Computing 5 ms is slow beside a 1 ms limit, and never settles a view.
    probe.sleep_for = 0.005
    app = one_view_app(probe.view, **{"aiopyramid_ng.plain_views.inline_ms": "1"})
    for _ in range(PROMOTE_AFTER - 1):
        app.get("/")
    probe.behaviour = "compute"
    app.get("/")
    probe.behaviour = "quick"
    for _ in range(PROMOTE_AFTER - 1):
        app.get("/")
    assert set(probe.places) == {POOL}
    promote(app, probe)
    assert probe.places.index(LOOP) >= 2 * PROMOTE_AFTER


# -- demotion ----------------------------------------------------------------------------------


def test_a_promoted_view_that_blocks_goes_back_to_the_pool_with_one_warning(
    logs: pytest.LogCaptureFixture,
) -> None:
    probe = Probe("turned_blocking_view")
    app = one_view_app(probe.view)
    promote(app, probe)
    probe.behaviour = "sleep"
    app.get("/")
    assert probe.places[-1] == LOOP  # that call held the loop: the last one to
    for _ in range(3):
        app.get("/")
    assert probe.places[-3:] == [POOL] * 3
    probe.behaviour = "quick"  # for good: never promoted again
    for _ in range(2 * PROMOTE_AFTER):
        app.get("/")
    assert probe.places[-2 * PROMOTE_AFTER :] == [POOL] * (2 * PROMOTE_AFTER)
    [warning] = records(logs, logging.WARNING)
    assert warning.startswith(
        "plain view function tests.test_plain_views.turned_blocking_view waited "
    )
    assert "on the event loop (on I/O, a lock or a sleep) while nothing else ran" in warning
    assert "every other request on the loop waits meanwhile" in warning
    assert "It runs in the thread pool from now on" in warning
    assert "mapper=ExecutorMapper" in warning
    assert "aiopyramid_ng.plain_views = executor" in warning
    assert "howitworks.html#howitworks-plain-views" in warning


def test_a_promoted_view_that_computes_too_long_goes_back_to_the_pool(
    logs: pytest.LogCaptureFixture,
) -> None:
    probe = Probe("turned_busy_view")
    app = one_view_app(probe.view, **{"aiopyramid_ng.plain_views.inline_ms": "2"})
    promote(app, probe)
    probe.behaviour, probe.sleep_for = "compute", 0.005
    app.get("/")
    app.get("/")
    assert probe.places[-2:] == [LOOP, POOL]
    [warning] = records(logs, logging.WARNING)
    assert "turned_busy_view computed for " in warning
    assert "more than the 2 ms aiopyramid_ng.plain_views.inline_ms allows" in warning


def fake_run(wall: float, cpu: float, others: float, slept: bool = True) -> Run:
    """A run as the clocks would report it (they cannot be made to show a lock handoff)."""
    run = Run.__new__(Run)
    run.wall, run.cpu, run.slept = wall, cpu, slept
    run.waited = wall - cpu if slept else 0.0
    run.explained = others >= run.waited / 2
    return run


@pytest.mark.parametrize(
    "wait",
    [
        # Another thread computed meanwhile: maybe the interpreter lock, however long.
        fake_run(wall=0.03, cpu=0.0001, others=0.03),
        # Nothing else ran, but not longer than the limit.
        fake_run(wall=0.004, cpu=0.0001, others=0.0),
    ],
    ids=["while other threads ran", "short"],
)
def test_waits_that_may_be_noise_demote_only_three_in_a_row(
    wait: Run, caplog: pytest.LogCaptureFixture
) -> None:
    placement = Placement("function some.view")
    placement.inline = True
    quick = fake_run(wall=0.0002, cpu=0.0002, others=0.0)
    preempted = fake_run(wall=0.05, cpu=0.0001, others=0.0, slept=False)
    assert wait.waited > CLEAR_WAIT > quick.waited
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        for run in [wait] * (DEMOTE_AFTER - 1) + [quick, preempted]:
            placement.judge(run)
        for run in [wait] * (DEMOTE_AFTER - 1):
            placement.judge(run)
        assert placement.inline  # a quick run broke the first series; preemption is no wait
        assert records(caplog, logging.WARNING) == []
        placement.judge(wait)
    assert not placement.inline
    [warning] = records(caplog, logging.WARNING)
    assert f"some.view waited on the event loop {DEMOTE_AFTER} times in a row" in warning
    assert "or the interpreter lock while other threads ran" in warning


def test_one_long_wait_while_nothing_else_ran_demotes_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    placement = Placement("function some.view")
    placement.inline = True
    long_wait = fake_run(wall=0.011, cpu=0.0001, others=0.001)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        placement.judge(long_wait)
        # Judged again by a call another loop made meanwhile: still one warning.
        placement.judge(long_wait)
    assert not placement.inline
    assert len(records(caplog, logging.WARNING)) == 1


def test_an_unrelated_runtime_error_leaves_a_promoted_view_promoted(
    logs: pytest.LogCaptureFixture,
) -> None:
    probe = Probe("failing_view")
    app = one_view_app(probe.view)
    promote(app, probe)
    probe.behaviour = "fail"
    with pytest.raises(RuntimeError, match="unrelated"):
        app.get("/")
    probe.behaviour = "quick"
    app.get("/")
    assert probe.places[-2:] == [LOOP, LOOP]
    assert records(logs, logging.WARNING) == []


def test_a_view_that_suspends_through_the_bridge_is_not_judged(
    logs: pytest.LogCaptureFixture,
) -> None:
    probe = Probe("suspending_view")
    app = one_view_app(probe.view)
    promote(app, probe)
    probe.behaviour = "suspend"  # 20 ms on the loop, through a synchronized coroutine
    for _ in range(2 * DEMOTE_AFTER):
        assert app.get("/").text == "suspended"
    assert probe.places[-2 * DEMOTE_AFTER :] == [LOOP] * (2 * DEMOTE_AFTER)
    assert records(logs, logging.WARNING) == []


def test_a_nested_event_loop_demotes_at_once_and_fails_one_request(
    logs: pytest.LogCaptureFixture,
) -> None:
    probe = Probe("loop_starting_view")
    app = one_view_app(probe.view)
    promote(app, probe)
    probe.behaviour = "loop"
    with pytest.raises(NestedLoopError, match="loop_starting_view"):
        app.get("/")
    assert probe.places[-1] == LOOP
    for _ in range(3):  # in the pool a loop of its own is allowed
        assert app.get("/").text == "answered"
    assert probe.places[-3:] == [POOL] * 3
    [warning] = records(logs, logging.WARNING)
    assert "loop_starting_view tried to start an event loop of its own" in warning
    assert "this request failed with NestedLoopError" in warning
    assert "mapper=ExecutorMapper" in warning


# -- what does not adapt -----------------------------------------------------------------------


def test_the_executor_setting_keeps_every_plain_view_in_the_pool(
    logs: pytest.LogCaptureFixture,
) -> None:
    probe = Probe("always_pooled_view")
    app = one_view_app(probe.view, **{"aiopyramid_ng.plain_views": "executor"})
    for _ in range(3 * PROMOTE_AFTER):
        app.get("/")
    assert probe.places == [POOL] * (3 * PROMOTE_AFTER)
    assert records(logs, logging.DEBUG) == []


def test_executor_mapper_and_use_executor_never_run_inline_greenlet_mapper_always() -> None:
    executor_probe, greenlet_probe = Probe("executor_mapped"), Probe("greenlet_mapped")
    in_executor: list[str] = []

    @use_executor
    def blocking_part() -> None:
        in_executor.append(place())

    async def coroutine_view(request: Request) -> Response:
        await blocking_part()
        return Response("ok")

    def setup(config: Configurator) -> None:
        for name, view, mapper in (
            ("executor", executor_probe.view, ExecutorMapper),
            ("greenlet", greenlet_probe.view, GreenletMapper),
            ("coroutine", coroutine_view, None),
        ):
            config.add_route(name, f"/{name}")
            config.add_view(view, route_name=name, mapper=mapper)

    app = webtest.TestApp(make_app(setup))
    for _ in range(3 * PROMOTE_AFTER):
        for path in ("/executor", "/greenlet", "/coroutine"):
            app.get(path)
    assert executor_probe.places == [POOL] * (3 * PROMOTE_AFTER)
    assert in_executor == [POOL] * (3 * PROMOTE_AFTER)
    assert greenlet_probe.places == [LOOP] * (3 * PROMOTE_AFTER)


def test_the_executor_pipeline_is_unchanged() -> None:
    probe = Probe("pipeline_view")
    app = one_view_app(probe.view, **{"aiopyramid_ng.pipeline": "executor"})
    for _ in range(2 * PROMOTE_AFTER):
        app.get("/")
    assert probe.places == [POOL] * (2 * PROMOTE_AFTER)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("aiopyramid_ng.plain_views", "inline", "is not one of 'adaptive' or 'executor'"),
        ("aiopyramid_ng.plain_views.inline_ms", "0", "is not a positive number of milliseconds"),
        ("aiopyramid_ng.plain_views.inline_ms", "fast", "is not a positive number"),
    ],
)
def test_a_bad_setting_fails_at_start_up_naming_it(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        make_app(lambda config: None, **{name: value})
    assert f"The setting {name} = {value!r} {message}" in str(caught.value)
    assert "configuration.html#setting-plain-views" in str(caught.value)


# -- exception views and view shapes -----------------------------------------------------------


def test_plain_exception_views_see_their_exception_in_the_pool_and_inline() -> None:
    places: list[str] = []

    def raises(request: Request) -> Response:
        raise KeyError(request.params["n"])

    def on_key_error(exc: KeyError, request: Request) -> Response:
        places.append(place())
        handled = sys.exc_info()[1]
        assert handled is exc
        try:
            raise  # Pyramid calls an exception view while handling its exception
        except KeyError as again:
            assert again is exc
        return Response(f"handled {exc.args[0]}", status=400)

    def setup(config: Configurator) -> None:
        config.add_route("raises", "/raises")
        config.add_view(raises, route_name="raises")
        config.add_exception_view(on_key_error, context=KeyError)

    app = webtest.TestApp(make_app(setup))
    for n in range(3 * PROMOTE_AFTER):
        assert app.get(f"/raises?n={n}", status=400).text == f"handled {n}"
    assert places[:PROMOTE_AFTER] == [POOL] * PROMOTE_AFTER
    assert places[-PROMOTE_AFTER:] == [LOOP] * PROMOTE_AFTER


class ClassView:
    def __init__(self, request: Request) -> None:
        self.request = request

    def __call__(self) -> dict[str, str]:
        return {"shape": "class", "place": place()}

    def other(self) -> dict[str, str]:
        return {"shape": "class attr", "place": place()}


class CallableInstance:
    def __call__(self, context: object, request: Request) -> dict[str, str]:
        return {"shape": "instance", "place": place()}


def _with_option(request: Request, option: str) -> dict[str, str]:
    return {"shape": option, "place": place()}


def _function(request: Request) -> dict[str, str]:
    return {"shape": "function", "place": place()}


@pytest.mark.parametrize(
    ("view", "attr", "shape"),
    [
        (_function, None, "function"),
        (ClassView, None, "class"),
        (ClassView, "other", "class attr"),
        (CallableInstance(), None, "instance"),
        (functools.partial(_with_option, option="partial"), None, "partial"),
    ],
    ids=["function", "class", "class attr", "callable instance", "partial"],
)
def test_every_view_shape_is_promoted(view: Any, attr: str | None, shape: str) -> None:
    def setup(config: Configurator) -> None:
        config.add_route("view", "/")
        config.add_view(view, route_name="view", renderer="json", attr=attr)

    app = webtest.TestApp(make_app(setup))
    bodies = [app.get("/").json for _ in range(3 * PROMOTE_AFTER)]
    assert {body["shape"] for body in bodies} == {shape}
    assert [body["place"] for body in bodies[:PROMOTE_AFTER]] == [POOL] * PROMOTE_AFTER
    assert [body["place"] for body in bodies[-PROMOTE_AFTER:]] == [LOOP] * PROMOTE_AFTER


# -- several loops, many requests --------------------------------------------------------------


#: Long enough that only repeated waits judge a view: on a loaded machine, a
#: request among several threads may wait that long for the interpreter lock.
PATIENT = {"aiopyramid_ng.plain_views.inline_ms": "10000"}


def test_wsgi_mode_with_several_server_threads(logs: pytest.LogCaptureFixture) -> None:
    """Each thread runs its own loop, as each waitress thread does; one view serves them all."""
    seen: list[tuple[int, int, str]] = []  # (caller's thread, view's thread, answer)

    def view(request: Request) -> Response:
        if request.params.get("sleep"):
            time.sleep(0.02)
        seen.append((int(request.params["caller"]), threading.get_ident(), request.params["n"]))
        return Response(request.params["n"])

    def setup(config: Configurator) -> None:
        config.add_route("v", "/")
        config.add_view(view, route_name="v")

    router = make_app(setup, **PATIENT)
    failures: list[BaseException] = []
    start = threading.Barrier(4)

    def serve(calls: int, sleep: bool) -> None:
        try:
            app = webtest.TestApp(router)
            caller = threading.get_ident()
            start.wait(10)
            for n in range(calls):
                query = f"/?caller={caller}&n={caller}-{n}" + ("&sleep=1" if sleep else "")
                assert app.get(query).text == f"{caller}-{n}"
        except BaseException as exc:  # reported by the test's thread
            failures.append(exc)

    def run_all(calls: int, sleep: bool = False) -> None:
        seen.clear()
        start.reset()
        threads = [threading.Thread(target=serve, args=(calls, sleep)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert failures == []
        assert len(seen) == 4 * calls

    # Probation, four threads at once: promoted once, however many loops ran it.
    for _ in range(10):
        run_all(PROMOTE_AFTER)
        if all(caller == ran_in for caller, ran_in, _ in seen):
            break
    assert all(caller == ran_in for caller, ran_in, _ in seen)  # each in its own thread
    assert {caller for caller, _, _ in seen} == {ran_in for _, ran_in, _ in seen}
    assert len(records(logs, logging.DEBUG)) == 1
    # All four threads wait at once: demoted once, one warning.
    run_all(DEMOTE_AFTER, sleep=True)
    assert len(records(logs, logging.WARNING)) == 1
    run_all(2)
    assert all(caller != ran_in for caller, ran_in, _ in seen)  # back in the pool


async def _staggered(event: NewRequest) -> None:
    # Requests reach the view at different times, so that promotion happens
    # while others are still on their way to the view, or in the pool.
    for _ in range(int(event.request.params["n"]) % 4):
        await tick()


def test_many_interleaved_requests_through_promotion_keep_their_own_data(
    leak_check: LeakCheck,
) -> None:
    places: list[str] = []

    def view(request: Request) -> Response:
        assert get_current_request() is request
        places.append(place())
        return Response(request.params["n"])

    def setup(config: Configurator) -> None:
        config.add_subscriber(_staggered, NewRequest)
        config.add_route("view", "/")
        config.add_view(view, route_name="view")

    app = make_app(setup, **PATIENT)

    async def wave() -> list[str]:
        responses = await asyncio.gather(*(get_response(app, f"/?n={n}") for n in range(200)))
        return [response.text for response in responses]

    async def main() -> None:
        # The first wave starts in the pool, and is promoted on its way.
        assert await wave() == [str(n) for n in range(200)]
        assert places[:PROMOTE_AFTER] == [POOL] * PROMOTE_AFTER
        for _ in range(10 * PROMOTE_AFTER):
            if places[-1] == LOOP:
                break
            await get_response(app, "/?n=0")
        # The second one runs in the request greenlets, interleaved.
        places.clear()
        assert await wave() == [str(n) for n in range(200)]
        assert places == [LOOP] * 200
        leak_check.assert_clean(asyncio.get_running_loop(), max_new_threads=DEFAULT_MAX_WORKERS)

    asyncio.run(main())
    app.registry.getUtility(IAppExecutor).shutdown()


def test_promotion_through_the_in_process_asgi_client() -> None:
    probe = Probe("asgi_view")

    def setup(config: Configurator) -> None:
        config.add_route("view", "/")
        config.add_view(probe.view, route_name="view")

    with ASGITestApp(make_app(setup)) as app:
        for n in range(3 * PROMOTE_AFTER):
            assert app.get(f"/?n={n}").text == str(n)
    # The client runs its loop in the calling thread, as WebTest's WSGI mode does.
    assert probe.places[:PROMOTE_AFTER] == [POOL] * PROMOTE_AFTER
    assert probe.places[-PROMOTE_AFTER:] == [LOOP] * PROMOTE_AFTER
