"""Deadlines of subrequests: a subrequest's ``timeout=`` applies to its own work only.

The view of a subrequest (``request.invoke_subrequest``) runs within its
request's deadline: the earlier of the two wins, the request's deadline is
never moved, and past its own deadline the subrequest raises
``SubrequestTimeout`` (a 504 ``HTTPGatewayTimeout``) where it was invoked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response

from aiopyramid_ng.deadlines import current_deadline
from aiopyramid_ng.exceptions import SubrequestTimeout
from aiopyramid_ng.limits import DEADLINE, LIMIT_KEY
from aiopyramid_ng.settings import TIMEOUT
from aiopyramid_ng.testing import TestApp
from tests.support.apps import get_response, make_app
from tests.support.deadlines import deadline_lines, lingering, stubborn, timed_get
from tests.support.leaks import LeakCheck

#: Generous bound for "on time": far below what the view would take.
ON_TIME = 1.0

#: What the inner views saw, in order.
events: list[str] = []


@pytest.fixture(autouse=True)
def _clear_events() -> None:
    events.clear()


async def inner(request: Request) -> Response:
    """Sleeps ``s`` seconds; records whether it was cancelled."""
    try:
        await asyncio.sleep(float(request.params.get("s", "5")))
    except asyncio.CancelledError:
        events.append(f"{request.path} cancelled")
        raise
    return Response(f"{request.path} done")


def subrequest(
    request: Request, path: str, use_tweens: bool = False
) -> tuple[Response | None, BaseException | None, float]:
    """Invoke ``path``; return its response or the exception it raised, and its duration."""
    sub = Request.blank(path)
    events.append(f"invoke {path}")
    started = time.monotonic()
    try:
        response = request.invoke_subrequest(sub, use_tweens=use_tweens)
    except SubrequestTimeout as exc:
        events.append(f"{path} raised {exc.status_int}")
        assert sub.environ[LIMIT_KEY] == DEADLINE
        return None, exc, time.monotonic() - started
    events.append(f"{path} answered {response.status_int}")
    return response, None, time.monotonic() - started


async def outer(request: Request) -> Response:
    """Invokes the subrequest named by ``sub``, then sleeps ``after`` seconds."""
    response, exc, took = subrequest(
        request, request.params["sub"], use_tweens="tweens" in request.params
    )
    await asyncio.sleep(float(request.params.get("after", "0")))
    if exc is not None:
        return Response(f"outer without it after {took:.2f}")
    assert response is not None
    return Response(f"outer {response.status_int} after {took:.2f}: {response.text}")


def setup_routes(
    outer_timeout: float | None = None, **inner_timeouts: float | None
) -> Callable[[Configurator], None]:
    def setup(config: Configurator) -> None:
        config.add_route("outer", "/outer")
        config.add_view(outer, route_name="outer", timeout=outer_timeout)
        for name, timeout in inner_timeouts.items():
            config.add_route(name, f"/{name}")
            config.add_view(inner, route_name=name, timeout=timeout)

    return setup


# -- the request's deadline is never extended ----------------------------------------------


@pytest.mark.parametrize("parent", ["setting", "view option"])
def test_a_subrequest_timeout_never_extends_the_request_deadline(
    parent: str, caplog: pytest.LogCaptureFixture
) -> None:
    if parent == "setting":
        app = make_app(setup_routes(long=5), **{TIMEOUT.name: "0.3"})
    else:
        app = make_app(setup_routes(outer_timeout=0.3, long=5))
    with TestApp(app) as client:
        # The subrequest returns at once; its 5 s must not become the request's.
        response, took = timed_get(client, "/outer?sub=/long%3Fs%3D0&after=2")
        assert response.status_int == 504
        assert took < ON_TIME
    [line] = deadline_lines(caplog)
    assert line.startswith("GET /outer answered 504: over its deadline of 0.3 s")
    assert "view function tests.test_subrequest_deadlines.outer" in line  # not the inner view


def test_the_request_deadline_cuts_a_subrequest_with_a_longer_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with TestApp(make_app(setup_routes(outer_timeout=0.2, long=5))) as client:
        response, took = timed_get(client, "/outer?sub=/long%3Fs%3D3")
        assert response.status_int == 504  # the request's 504, not a SubrequestTimeout
        assert took < ON_TIME
    assert events == ["invoke /long?s=3", "/long cancelled"]
    [line] = deadline_lines(caplog)
    assert "GET /outer answered 504: over its deadline of 0.2 s (view option timeout=" in line
    assert "in inner" in line  # where the request waited: in the subrequest


# -- a subrequest over its own deadline ----------------------------------------------------


def test_a_subrequest_over_its_timeout_raises_and_the_request_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with TestApp(make_app(setup_routes(outer_timeout=2, short=0.1))) as client:
        # After the subrequest the request sleeps past the subrequest's
        # deadline, well within its own.
        response, took = timed_get(client, "/outer?sub=/short&after=0.3")
        assert response.status_int == 200
        assert response.text.startswith("outer without it after 0.1")
        assert took < ON_TIME
    assert events == ["invoke /short", "/short cancelled", "/short raised 504"]
    [line] = deadline_lines(caplog)
    assert line.startswith("Subrequest GET /short raised SubrequestTimeout (504)")
    assert "over its deadline of 0.1 s (view option timeout=; view function" in line
    assert "in inner" in line


def test_the_request_deadline_is_restored_after_a_subrequest_over_its_timeout() -> None:
    with TestApp(make_app(setup_routes(outer_timeout=0.5, short=0.1))) as client:
        response, took = timed_get(client, "/outer?sub=/short&after=3")
        assert response.status_int == 504  # the request's own 0.5 s still held
        assert 0.45 < took < ON_TIME + 0.5


def test_with_use_tweens_a_subrequest_over_its_timeout_answers_504() -> None:
    with TestApp(make_app(setup_routes(outer_timeout=2, short=0.1))) as client:
        response = client.get("/outer?sub=/short&tweens")
        assert response.text.startswith("outer 504 after 0.1")
        assert response.text.endswith(
            ": Gateway Timeout: the subrequest took longer than its 0.1 s.\n"
        )
    assert events == ["invoke /short", "/short cancelled", "/short answered 504"]


def test_a_subrequest_within_its_timeout_is_untouched() -> None:
    with TestApp(make_app(setup_routes(outer_timeout=1, short=0.5))) as client:
        response = client.get("/outer?sub=/short%3Fs%3D0.05&after=0.6")
        assert response.text.startswith("outer 200 after 0.0")
        assert response.text.endswith(": /short done")


def test_a_subrequest_that_swallows_its_cancellation_still_raises() -> None:
    def setup(config: Configurator) -> None:
        setup_routes(outer_timeout=2)(config)
        config.add_route("stubborn", "/stubborn")
        config.add_view(stubborn, route_name="stubborn", timeout=0.1)

    with TestApp(make_app(setup)) as client:
        assert client.get("/outer?sub=/stubborn").text.startswith("outer without it")


# -- nested subrequests --------------------------------------------------------------------


async def middle(request: Request) -> Response:
    """A subrequest that invokes another (``inner``), then sleeps ``after`` seconds."""
    response, _, _ = subrequest(request, request.params["inner"])
    await asyncio.sleep(float(request.params.get("after", "0")))
    return Response("middle without it" if response is None else f"middle: {response.text}")


def nested_setup(middle_timeout: float, inner_timeout: float) -> Callable[[Configurator], None]:
    def setup(config: Configurator) -> None:
        setup_routes(outer_timeout=2, inner=inner_timeout)(config)
        config.add_route("middle", "/middle")
        config.add_view(middle, route_name="middle", timeout=middle_timeout)

    return setup


def test_nested_the_innermost_deadline_expires_and_each_level_resumes_its_own() -> None:
    with TestApp(make_app(nested_setup(middle_timeout=0.5, inner_timeout=0.1))) as client:
        # The middle sleeps past the inner's deadline, within its own.
        response, took = timed_get(client, "/outer?sub=/middle%3Finner%3D/inner%26after%3D0.2")
        assert response.status_int == 200
        assert response.text.endswith(": middle without it")
        assert took < ON_TIME
    assert events == [
        "invoke /middle?inner=/inner&after=0.2",
        "invoke /inner",
        "/inner cancelled",
        "/inner raised 504",
        "/middle?inner=/inner&after=0.2 answered 200",
    ]


def test_nested_an_outer_subrequest_deadline_cuts_a_longer_inner_one() -> None:
    with TestApp(make_app(nested_setup(middle_timeout=0.15, inner_timeout=5))) as client:
        response, took = timed_get(client, "/outer?sub=/middle%3Finner%3D/inner")
        assert response.status_int == 200
        assert response.text.startswith("outer without it")
        assert took < ON_TIME
    # The inner subrequest unwound with the cancellation, which only the
    # middle one, whose deadline it was, turned into its SubrequestTimeout.
    assert events == [
        "invoke /middle?inner=/inner",
        "invoke /inner",
        "/inner cancelled",
        "/middle?inner=/inner raised 504",
    ]


# -- a subrequest made from a plain view, in a worker thread -------------------------------


def plain_outer(request: Request) -> Response:
    _, exc, took = subrequest(request, "/short")
    assert isinstance(exc, SubrequestTimeout)
    # The thread waits on the loop again: the interrupted subrequest's
    # cancellation must not reach this one.
    response, _, _ = subrequest(request, "/free?s=0.05")
    assert response is not None
    return Response(f"plain after {took:.2f}: {response.text}")


def test_a_subrequest_from_a_plain_view_in_a_thread_raises_on_time() -> None:
    def setup(config: Configurator) -> None:
        setup_routes(short=0.1, free=None)(config)
        config.add_route("plain", "/plain")
        config.add_view(plain_outer, route_name="plain", timeout=2)

    with TestApp(make_app(setup)) as client:
        response, took = timed_get(client, "/plain")
        assert response.status_int == 200
        assert response.text.startswith("plain after 0.1")
        assert response.text.endswith(": /free done")
        assert took < ON_TIME
    assert "/short cancelled" in events


def test_a_blocking_subrequest_in_a_thread_has_its_late_result_discarded() -> None:
    def blocking(request: Request) -> Response:
        time.sleep(0.3)
        return Response("late")

    def plain(request: Request) -> Response:
        _, exc, _ = subrequest(request, "/blocking")
        return Response("without it" if exc is not None else "with it")

    def setup(config: Configurator) -> None:
        config.add_route("blocking", "/blocking")
        config.add_view(blocking, route_name="blocking", timeout=0.1)
        config.add_route("plain", "/plain")
        config.add_view(plain, route_name="plain")

    with TestApp(make_app(setup)) as client:
        assert client.get("/plain").text == "without it"


# -- cancellations that are not the subrequest's -------------------------------------------


def test_a_servers_cancellation_while_a_subrequest_unwinds_is_never_swallowed() -> None:
    lingering_view = lingering(events, 0.2)

    def setup(config: Configurator) -> None:
        setup_routes(outer_timeout=5)(config)
        config.add_route("lingering", "/lingering")
        config.add_view(lingering_view, route_name="lingering", timeout=0.05)

    app = make_app(setup)

    async def main() -> None:
        check = LeakCheck()
        task = asyncio.create_task(get_response(app, "/outer?sub=/lingering"))
        await asyncio.sleep(0.1)  # past the subrequest's deadline, while it unwinds
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert events == ["invoke /lingering", "finally"]  # the outer view never resumed
        check.assert_clean(asyncio.get_running_loop())

    asyncio.run(main())


def test_interleaved_requests_with_subrequests_time_out_independently() -> None:
    app = make_app(setup_routes(outer_timeout=1, short=0.1))

    async def main() -> None:
        check = LeakCheck()
        paths = [f"/outer?sub=/short%3Fs%3D{0.5 if n % 2 else 0.01}" for n in range(60)]
        responses = await asyncio.gather(*(get_response(app, path) for path in paths))
        for n, response in enumerate(responses):
            assert response.status_int == 200, n
            assert response.text.startswith("outer without it" if n % 2 else "outer 200"), n
        deadline = current_deadline()
        assert deadline is None  # nothing leaked into the test's own context
        check.assert_clean(asyncio.get_running_loop())

    asyncio.run(main())


def test_a_subrequest_swallowing_both_its_deadline_and_a_servers_cancellation_is_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def stubborn(request: Request) -> Response:
        for _ in range(2):  # the subrequest's deadline, then the server's cancellation
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                events.append("swallowed")
        return Response("answered anyway")

    def setup(config: Configurator) -> None:
        setup_routes(outer_timeout=5)(config)
        config.add_route("stubborn", "/stubborn")
        config.add_view(stubborn, route_name="stubborn", timeout=0.05)

    app = make_app(setup)

    async def main() -> None:
        check = LeakCheck()
        task = asyncio.create_task(get_response(app, "/outer?sub=/stubborn"))
        await asyncio.sleep(0.15)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        check.assert_clean(asyncio.get_running_loop())

    asyncio.run(main())
    # Neither a SubrequestTimeout for the outer view nor a 504 for the request.
    assert events == ["invoke /stubborn", "swallowed", "swallowed"]
    assert deadline_lines(caplog) == []


def test_a_subrequest_timeout_the_view_lets_escape_is_the_requests_504() -> None:
    async def careless(request: Request) -> Response:
        return request.invoke_subrequest(Request.blank("/short"))

    def setup(config: Configurator) -> None:
        setup_routes(short=0.1)(config)
        config.add_route("careless", "/careless")
        config.add_view(careless, route_name="careless", timeout=2)

    with TestApp(make_app(setup)) as client:
        response = client.get("/careless", status=504)
        # Rendered by Pyramid's exception view for HTTP exceptions.
        assert response.text == "Gateway Timeout: the subrequest took longer than its 0.1 s.\n"


def test_a_subrequest_in_the_executor_pipeline_raises_on_time() -> None:
    def setup(config: Configurator) -> None:
        setup_routes(short=0.1, free=None)(config)
        config.add_route("plain", "/plain")
        config.add_view(plain_outer, route_name="plain", timeout=2)

    app = make_app(setup, **{"aiopyramid_ng.pipeline": "executor"})
    with TestApp(app) as client:
        response, took = timed_get(client, "/plain")
        assert response.status_int == 200
        assert response.text.startswith("plain after 0.1")
        assert took < ON_TIME


def subrequesting_tween(handler: Callable[[Request], Response], registry: Any) -> Any:
    def tween(request: Request) -> Response:
        if request.path == "/outer":
            subrequest(request, "/long?s=0")  # before the request's own view is found
        return handler(request)

    return tween


def test_a_subrequest_made_by_a_tween_never_extends_the_request_deadline() -> None:
    def setup(config: Configurator) -> None:
        config.add_tween("tests.test_subrequest_deadlines.subrequesting_tween")
        setup_routes(long=5)(config)

    with TestApp(make_app(setup, **{TIMEOUT.name: "0.3"})) as client:
        response, took = timed_get(client, "/outer?sub=/long%3Fs%3D0&after=2")
        assert response.status_int == 504
        assert took < ON_TIME
    assert events[:2] == ["invoke /long?s=0", "/long?s=0 answered 200"]
