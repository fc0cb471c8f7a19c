"""Async event subscribers: awaited in order before ``notify`` returns."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pyramid.config import Configurator
from pyramid.events import (
    ApplicationCreated,
    BeforeRender,
    BeforeTraversal,
    ContextFound,
    NewRequest,
    NewResponse,
)
from pyramid.request import Request
from pyramid.response import Response
from webtest import TestApp

from aiopyramid_ng.events import ApplicationShutdown, ApplicationStartup
from aiopyramid_ng.exceptions import ScopeError
from aiopyramid_ng.helpers import spawn_greenlet, synchronize
from aiopyramid_ng.subscribers import AwaitingNotify
from tests.support.apps import get_response, make_app, tick
from tests.support.leaks import LeakCheck


async def on_new_request(event: NewRequest) -> None:
    await tick()
    event.request.trail = ["NewRequest"]


async def on_before_traversal(event: BeforeTraversal) -> None:
    await tick()
    event.request.trail.append("BeforeTraversal")


def on_context_found(event: ContextFound) -> None:
    # A plain subscriber after an async one sees the async one's work.
    event.request.trail.append("ContextFound")


async def on_before_render(event: BeforeRender) -> None:
    await tick()
    event["trail"] = [*event["request"].trail, "BeforeRender"]


async def on_new_response(event: NewResponse) -> None:
    await tick()
    event.response.headers["X-Trail"] = ",".join([*event.request.trail, "NewResponse"])


class PathPredicate:
    """Subscriber predicate: the request's path starts with ``prefix``."""

    def __init__(self, prefix: str, config: Configurator):
        self.prefix = prefix

    def text(self) -> str:
        return f"path_prefix = {self.prefix}"

    phash = text

    def __call__(self, event: NewResponse) -> bool:
        return bool(event.request.path.startswith(self.prefix))


class Predicated:
    """A subscriber with an ``(event, *objects)``-style callable instance."""

    async def __call__(self, event: NewResponse) -> None:
        await tick()
        event.response.headers["X-Predicated"] = event.request.path


async def traced(request: Request) -> dict[str, Any]:
    await tick()
    request.trail.append("view")
    return {"who": request.params.get("who", "")}


def setup(config: Configurator) -> None:
    config.add_subscriber(on_new_request, NewRequest)
    config.add_subscriber(on_before_traversal, BeforeTraversal)
    config.add_subscriber(on_context_found, ContextFound)
    config.add_subscriber(on_before_render, BeforeRender)
    config.add_subscriber(on_new_response, NewResponse)
    config.add_subscriber_predicate("path_prefix", PathPredicate)
    config.add_subscriber(Predicated(), NewResponse, path_prefix="/traced")
    config.add_subscriber(Predicated(), NewResponse, path_prefix="/elsewhere")
    config.add_route("traced", "/traced")
    config.add_view(traced, route_name="traced", renderer="json")


EXPECTED = "NewRequest,BeforeTraversal,ContextFound,view,NewResponse"


def test_every_request_event_awaited_in_order_webtest() -> None:
    app = TestApp(make_app(setup))
    response = app.get("/traced", params={"who": "ann"})
    assert response.headers["X-Trail"] == EXPECTED
    assert response.headers["X-Predicated"] == "/traced"
    assert response.json == {"who": "ann"}


def test_before_render_sees_async_subscriber_values() -> None:
    seen: list[list[str]] = []

    def setup_render(config: Configurator) -> None:
        setup(config)

        def record(event: BeforeRender) -> None:
            seen.append(event["trail"])

        config.add_subscriber(record, BeforeRender)

    TestApp(make_app(setup_render)).get("/traced")
    assert seen == [["NewRequest", "BeforeTraversal", "ContextFound", "view", "BeforeRender"]]


def test_interleaved_requests_keep_their_own_events(leak_check: LeakCheck) -> None:
    app = make_app(setup)

    async def main() -> None:
        responses = await asyncio.gather(
            *(get_response(app, f"/traced?who=u{n}") for n in range(200))
        )
        for n, response in enumerate(responses):
            assert response.status_code == 200
            assert response.headers["X-Trail"] == EXPECTED
            assert response.json == {"who": f"u{n}"}
        leak_check.assert_clean(asyncio.get_running_loop())

    asyncio.run(main())


def test_failing_async_subscriber_reaches_exception_view() -> None:
    async def refuse(event: NewRequest) -> None:
        await tick()
        raise LookupError(event.request.path)

    def failing(config: Configurator) -> None:
        config.add_subscriber(refuse, NewRequest)
        config.add_view(
            lambda exc, request: Response(f"caught {exc}", status=503),
            context=LookupError,
        )

    response = TestApp(make_app(failing)).get("/anything", status=503)
    assert response.text == "caught /anything"


def test_synchronized_subscriber_keeps_working() -> None:
    @synchronize
    async def lookup(path: str) -> str:
        await tick()
        return path.upper()

    def legacy(event: NewResponse) -> None:
        event.response.headers["X-Upper"] = lookup(event.request.path)

    def setup_legacy(config: Configurator) -> None:
        config.add_subscriber(legacy, NewResponse)
        config.add_view(lambda request: Response("ok"), name="x")

    assert TestApp(make_app(setup_legacy)).get("/x").headers["X-Upper"] == "/X"


def test_lifespan_events_awaited_through_spawn_greenlet() -> None:
    log: list[str] = []

    async def started(event: ApplicationStartup) -> None:
        await tick()
        log.append(f"start {event.app}")

    async def stopped(event: ApplicationShutdown) -> None:
        await tick()
        log.append(f"stop {event.app}")

    with Configurator() as config:
        config.include("aiopyramid_ng")
        config.add_subscriber(started, ApplicationStartup)
        config.add_subscriber(stopped, ApplicationShutdown)
        registry = config.registry

    async def main() -> None:
        await spawn_greenlet(registry.notify, ApplicationStartup("app", registry))
        assert log == ["start app"]
        await spawn_greenlet(registry.notify, ApplicationShutdown("app", registry))

    asyncio.run(main())
    assert log == ["start app", "stop app"]


def test_async_subscriber_outside_any_bridge_names_it() -> None:
    async def on_created(event: ApplicationCreated) -> None:
        await tick()

    with Configurator() as config:
        config.include("aiopyramid_ng")
        config.add_subscriber(on_created, ApplicationCreated)
    registry = config.registry

    async def main() -> None:
        # On the loop, outside a request greenlet: nothing may block here.
        registry.notify(ApplicationCreated(None))

    with pytest.raises(ScopeError, match=r"on_created returned an awaitable.*spawn_greenlet"):
        asyncio.run(main())


def test_async_subscriber_in_executor_view_runs_on_request_loop() -> None:
    class Ping:
        def __init__(self, request: Request):
            self.request = request

    async def on_ping(event: Ping) -> None:
        await tick()
        event.request.pinged = asyncio.get_running_loop()

    def blocking(request: Request) -> Response:
        request.registry.notify(Ping(request))
        return Response(str(request.pinged is not None))

    def setup_blocking(config: Configurator) -> None:
        config.add_subscriber(on_ping, Ping)
        config.add_view(blocking, name="blocking")

    assert TestApp(make_app(setup_blocking)).get("/blocking").text == "True"


def test_notify_installed_once() -> None:
    with Configurator() as config:
        config.include("aiopyramid_ng")
        config.include("aiopyramid_ng.subscribers")
        notify = config.registry.notify
    assert isinstance(notify, AwaitingNotify)
    assert repr(notify).startswith("<AwaitingNotify of")


def test_notify_without_listeners_calls_nothing() -> None:
    from pyramid.registry import Registry

    registry = Registry("empty")
    AwaitingNotify(registry)(NewRequest(Request.blank("/")))
    assert not registry.has_listeners


def test_subscriber_own_scope_error_propagates_unchanged() -> None:
    class Ping:
        pass

    async def refuse(event: Ping) -> None:
        await tick()
        raise ScopeError("the subscriber's own")

    def blocking(request: Request) -> Response:
        try:
            request.registry.notify(Ping())
        except ScopeError as exc:
            return Response(str(exc))
        return Response("not raised")

    def setup_blocking(config: Configurator) -> None:
        config.add_subscriber(refuse, Ping)
        config.add_view(blocking, name="blocking")

    assert TestApp(make_app(setup_blocking)).get("/blocking").text == "the subscriber's own"


# --- request events are notified only when something hears them ---------------------------


def _app_with(setup: Any = None) -> Any:
    def hello(request: Request) -> Response:
        return Response("hello")

    with Configurator() as config:
        config.include("aiopyramid_ng")
        config.add_route("hello", "/")
        config.add_view(hello, route_name="hello")
        if setup is not None:
            setup(config)
        return config.make_wsgi_app()


def test_the_addon_alone_leaves_request_events_unnotified() -> None:
    app = _app_with()
    assert app.registry.has_listeners is False
    notified: list[object] = []
    app.registry.notify = notified.append  # the Router would call it for a request event
    assert TestApp(app).get("/").text == "hello"
    assert notified == []


@pytest.mark.parametrize(
    "event_class", [NewRequest, BeforeTraversal, ContextFound, NewResponse, BeforeRender]
)
def test_a_subscriber_of_any_request_event_keeps_them_notified(event_class: type) -> None:
    heard: list[object] = []

    def setup(config: Configurator) -> None:
        config.add_subscriber(heard.append, event_class)
        config.add_route("rendered", "/rendered")
        config.add_view(lambda request: {"a": 1}, route_name="rendered", renderer="json")

    app = _app_with(setup)
    assert app.registry.has_listeners is True
    TestApp(app).get("/rendered")
    assert [type(event) for event in heard] == [event_class]


def test_a_catch_all_subscriber_keeps_request_events_notified() -> None:
    heard: list[str] = []
    app = _app_with(lambda config: config.add_subscriber(lambda e: heard.append(type(e).__name__)))
    assert app.registry.has_listeners is True
    del heard[:]  # ApplicationCreated
    TestApp(app).get("/")
    assert heard == ["NewRequest", "BeforeTraversal", "ContextFound", "NewResponse"]


def test_a_subscriber_registered_after_creation_is_heard() -> None:
    app = _app_with()
    heard: list[object] = []
    later = Configurator(registry=app.registry)
    later.add_subscriber(heard.append, NewRequest)
    later.commit()
    assert app.registry.has_listeners is True
    TestApp(app).get("/")
    assert [type(event) for event in heard] == [NewRequest]


def test_application_events_are_delivered_while_request_events_are_skipped() -> None:
    class Ping:
        pass

    heard: list[object] = []

    async def on_ping(event: Ping) -> None:
        await tick()
        heard.append(event)

    def setup(config: Configurator) -> None:
        config.add_subscriber(on_ping, Ping)
        config.add_subscriber(heard.append, ApplicationShutdown)

    app = _app_with(setup)
    assert app.registry.has_listeners is False
    ping, shutdown = Ping(), ApplicationShutdown(app, app.registry)

    async def main() -> None:
        await spawn_greenlet(app.registry.notify, ping)
        await spawn_greenlet(app.registry.notify, shutdown)

    asyncio.run(main())
    assert heard == [ping, shutdown]
