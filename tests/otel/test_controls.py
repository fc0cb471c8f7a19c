"""Server spans of the production controls: deadlines, load shedding, background tasks.

Requests go through the in-process ASGI path (``make_asgi_app`` and
``aiopyramid_ng.testing.http.exchange``) on the test's own loop, so that
many interleave, as under a server.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response
from webtest import TestApp as WSGITestApp

from aiopyramid_ng.asgi import ASGIApplication, make_asgi_app
from aiopyramid_ng.limits import DEADLINE, LIMIT_KEY, SHED
from aiopyramid_ng.otel.attributes import LIMIT, POOL_CALLS, POOL_RUN, VIEW
from aiopyramid_ng.settings import MAX_CONCURRENCY, MAX_QUEUE, MAX_WORKERS, TIMEOUT
from tests.otel.support import Recorder, exchange, http_scope, traced_app
from tests.support.leaks import LeakCheck
from tests.support.servers import wait_until

#: Generous bound for "answered on time": far below what the view would take.
ON_TIME = 1.0


def status_of(sent: list[Any]) -> int:
    status: int = sent[0]["status"]
    return status


def header(sent: list[Any], name: bytes) -> bytes | None:
    return next((value for key, value in sent[0]["headers"] if key == name), None)


def attributes_of(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def assert_limit_answer(span: ReadableSpan, status: int, limit: str) -> None:
    """``span`` is a server span the request limits answered with ``status``."""
    attributes = attributes_of(span)
    assert attributes["http.response.status_code"] == status
    assert attributes[LIMIT] == limit
    assert attributes["error.type"] == str(status)
    assert span.status.status_code is StatusCode.ERROR


def one_route(
    view: Callable[..., Any], path: str = "/view", **options: Any
) -> Callable[[Configurator], None]:
    def setup(config: Configurator) -> None:
        config.add_route("view", path)
        config.add_view(view, route_name="view", **options)

    return setup


def get(app: ASGIApplication, url: str) -> Any:
    """One GET of ``url`` (a path and a query) from ``app``."""
    path, _, query = url.partition("?")
    return exchange(app, http_scope(path, query=query.encode()), b"")


async def burst(app: ASGIApplication, urls: list[str], gap: float = 0.05) -> list[list[Any]]:
    """Send all of ``urls`` but the last at once, wait ``gap``, then the last one."""
    first = [asyncio.create_task(get(app, url)) for url in urls[:-1]]
    await asyncio.sleep(gap)
    last = await get(app, urls[-1])
    return [*(await asyncio.gather(*first)), last]


# -- (a) a deadline's 504 ---------------------------------------------------------------


def sleeping_view(recorder: Recorder) -> Callable[[Request], Any]:
    async def sleeping(request: Request) -> Response:
        with recorder.tracer.start_as_current_span("sleeping"):
            await asyncio.sleep(5)
        return Response("woke")  # pragma: no cover - over its deadline

    return sleeping


def test_the_timeout_setting_gives_a_504_span_marked_deadline(recorder: Recorder) -> None:
    router = traced_app(recorder, one_route(sleeping_view(recorder)), **{TIMEOUT.name: "0.1"})
    app = make_asgi_app(router)
    started = time.monotonic()
    sent = asyncio.run(exchange(app, http_scope("/view"), b""))
    assert time.monotonic() - started < ON_TIME
    assert status_of(sent) == 504
    span = recorder.server_span()
    assert span.name == "GET /view"
    assert_limit_answer(span, 504, DEADLINE)
    assert str(attributes_of(span)[VIEW]).endswith("sleeping")
    # The view's own span, cut short by the deadline, is the request's.
    assert [child.name for child in recorder.children_of(span)] == ["sleeping"]
    (point,) = recorder.durations()
    assert dict(point.attributes or {})["error.type"] == "504"


def test_a_view_timeout_gives_a_504_span_marked_deadline(recorder: Recorder) -> None:
    router = traced_app(recorder, one_route(sleeping_view(recorder), timeout=0.1))
    sent = asyncio.run(exchange(make_asgi_app(router), http_scope("/view"), b""))
    assert status_of(sent) == 504
    span = recorder.server_span()
    assert_limit_answer(span, 504, DEADLINE)
    assert [child.name for child in recorder.children_of(span)] == ["sleeping"]


def test_a_plain_view_over_its_deadline_in_a_thread_gives_a_504_span(recorder: Recorder) -> None:
    finished = threading.Event()

    def slow_plain(request: Request) -> Response:
        with recorder.tracer.start_as_current_span("in the thread"):
            time.sleep(0.4)
        finished.set()
        return Response("late")

    router = traced_app(recorder, one_route(slow_plain, timeout=0.1))
    app = make_asgi_app(router)
    started = time.monotonic()
    sent = asyncio.run(exchange(app, http_scope("/view"), b""))
    assert time.monotonic() - started < 0.35  # well before the thread ends
    assert status_of(sent) == 504
    span = recorder.server_span()
    assert_limit_answer(span, 504, DEADLINE)
    assert recorder.children_of(span) == []  # still running in its thread
    assert finished.wait(5)
    # Its span, ended after the request's, is the request's child all the same.
    (child,) = wait_until(lambda: recorder.children_of(span), "the thread's span", bool)
    assert child.name == "in the thread"
    assert child.end_time is not None and span.end_time is not None
    assert child.end_time > span.end_time
    # The hop counts, with its time until the request left it running.
    assert attributes_of(span)[POOL_CALLS] == 1
    assert 0.05 < float(attributes_of(span)[POOL_RUN]) < 0.3


def test_a_deadline_is_marked_in_wsgi_mode_too(recorder: Recorder) -> None:
    router = traced_app(recorder, one_route(sleeping_view(recorder)), **{TIMEOUT.name: "0.1"})
    WSGITestApp(router).get("/view", status=504)
    span = recorder.server_span()
    assert_limit_answer(span, 504, DEADLINE)
    assert [child.name for child in recorder.children_of(span)] == ["sleeping"]


def test_a_request_answered_in_time_is_not_marked(recorder: Recorder) -> None:
    async def quick(request: Request) -> Response:
        return Response("quick")

    router = traced_app(
        recorder, one_route(quick, max_concurrency=5), **{TIMEOUT.name: "5", MAX_QUEUE.name: "5"}
    )
    sent = asyncio.run(exchange(make_asgi_app(router), http_scope("/view"), b""))
    assert status_of(sent) == 200
    span = recorder.server_span()
    assert LIMIT not in attributes_of(span)
    assert span.status.status_code is StatusCode.UNSET


# -- (b) a 503 for load ----------------------------------------------------------------


def held_views(recorder: Recorder, **options: Any) -> Callable[[Configurator], None]:
    """``/held`` waits 0.3 s under a child span; ``/plain`` sleeps 0.3 s in a thread."""

    async def held(request: Request) -> Response:
        with recorder.tracer.start_as_current_span(f"held {request.params.get('n')}"):
            await asyncio.sleep(0.3)
        return Response("held")

    def plain(request: Request) -> Response:
        with recorder.tracer.start_as_current_span(f"plain {request.params.get('n')}"):
            time.sleep(0.3)
        return Response("plain")

    def setup(config: Configurator) -> None:
        config.add_route("held", "/held")
        config.add_view(held, route_name="held", **options)
        config.add_route("plain", "/plain")
        config.add_view(plain, route_name="plain")

    return setup


def spans_by_n(recorder: Recorder) -> dict[str, ReadableSpan]:
    return {
        str(attributes_of(span)["url.query"]).removeprefix("n="): span
        for span in recorder.server_spans()
    }


def assert_shed_span(recorder: Recorder, span: ReadableSpan, refused: bool = False) -> None:
    """A 503 for load: the view never ran, so the span has no children.

    :param refused: the pool refused the view's work: the exception it
        raised where the view handed it over is the span's one event.
    """
    assert_limit_answer(span, 503, SHED)
    assert recorder.children_of(span) == []
    assert POOL_CALLS not in attributes_of(span)
    if refused:
        (event,) = span.events
        assert event.name == "exception"
        attributes = event.attributes or {}
        assert attributes["exception.type"] == "aiopyramid_ng.exceptions.ExecutorQueueFull"
        assert MAX_QUEUE.name in str(attributes["exception.message"])
    else:
        assert span.events == ()


def test_the_application_bound_gives_a_503_span_that_never_reached_the_router(
    recorder: Recorder,
) -> None:
    router = traced_app(recorder, held_views(recorder), **{MAX_CONCURRENCY.name: "1"})
    app = make_asgi_app(router)
    one, shed = asyncio.run(burst(app, ["/held?n=1", "/held?n=2"]))
    assert status_of(one) == 200
    assert status_of(shed) == 503
    assert header(shed, b"retry-after") == b"1"
    spans = spans_by_n(recorder)
    assert LIMIT not in attributes_of(spans["1"])
    assert [child.name for child in recorder.children_of(spans["1"])] == ["held 1"]
    span = spans["2"]
    assert_shed_span(recorder, span)
    # Refused before routing: named by its method alone, no view called.
    assert span.name == "GET"
    assert "http.route" not in attributes_of(span)
    assert VIEW not in attributes_of(span)


def test_a_view_bound_gives_a_503_span_named_by_its_route(recorder: Recorder) -> None:
    router = traced_app(recorder, held_views(recorder, max_concurrency=1))
    app = make_asgi_app(router)
    one, shed = asyncio.run(burst(app, ["/held?n=1", "/held?n=2"]))
    assert [status_of(one), status_of(shed)] == [200, 503]
    spans = spans_by_n(recorder)
    assert [child.name for child in recorder.children_of(spans["1"])] == ["held 1"]
    span = spans["2"]
    assert_shed_span(recorder, span)
    assert span.name == "GET /held"
    # The gate stands before the view: the view was not called.
    assert VIEW not in attributes_of(span)


def test_a_full_pool_queue_gives_a_503_span_whose_view_never_ran(recorder: Recorder) -> None:
    router = traced_app(
        recorder, held_views(recorder), **{MAX_WORKERS.name: "1", MAX_QUEUE.name: "1"}
    )
    app = make_asgi_app(router)
    results = asyncio.run(burst(app, ["/plain?n=1", "/plain?n=2", "/plain?n=3"]))
    assert [status_of(sent) for sent in results] == [200, 200, 503]
    spans = spans_by_n(recorder)
    for n in ("1", "2"):
        assert [child.name for child in recorder.children_of(spans[n])] == [f"plain {n}"]
        assert attributes_of(spans[n])[POOL_CALLS] == 1
    span = spans["3"]
    assert_shed_span(recorder, span, refused=True)
    assert span.name == "GET /plain"


def test_a_shed_request_is_marked_in_wsgi_mode_too(recorder: Recorder) -> None:
    """Two WSGI server threads, one admitted: the other's span is the 503's."""
    router = traced_app(recorder, held_views(recorder), **{MAX_CONCURRENCY.name: "1"})
    client = WSGITestApp(router)
    statuses: list[int] = []

    def get(n: int) -> None:
        statuses.append(client.get(f"/held?n={n}", status="*").status_int)

    first = threading.Thread(target=get, args=(1,))
    first.start()
    time.sleep(0.1)
    get(2)
    first.join()
    assert statuses == [503, 200]
    assert_shed_span(recorder, spans_by_n(recorder)["2"])


# -- (c) background tasks ----------------------------------------------------------------


def background_views(recorder: Recorder) -> Callable[[Configurator], None]:
    tracer = recorder.tracer

    async def coroutine_task(n: str) -> None:
        await asyncio.sleep(0.001)
        with tracer.start_as_current_span(f"coroutine task {n}"):
            await asyncio.sleep(0.001)

    def plain_task(n: str) -> None:
        with tracer.start_as_current_span(f"plain task {n}"):
            time.sleep(0.001)

    async def view(request: Request) -> Response:
        n = request.params["n"]
        request.add_background_task(coroutine_task, n)
        request.add_background_task(plain_task, n)
        return Response(n)

    return one_route(view)


def assert_tasks_under_their_request(recorder: Recorder, spans: dict[str, ReadableSpan]) -> None:
    for n, span in spans.items():
        children = recorder.children_of(span)
        assert sorted(child.name for child in children) == [
            f"coroutine task {n}",
            f"plain task {n}",
        ]
        assert span.end_time is not None and span.context is not None
        for child in children:
            # Started once the request's span had ended, and in its trace.
            assert child.start_time is not None and child.start_time > span.end_time
            assert child.context is not None
            assert child.context.trace_id == span.context.trace_id


def test_a_background_task_s_span_is_a_child_of_the_ended_request_span(
    recorder: Recorder,
) -> None:
    app = make_asgi_app(traced_app(recorder, background_views(recorder)))

    async def main() -> None:
        sent = await get(app, "/view?n=1")
        assert status_of(sent) == 200
        assert len(recorder.server_spans()) == 1  # ended before the tasks ran
        await app.lifecycle.background.join()

    asyncio.run(main())
    assert_tasks_under_their_request(recorder, spans_by_n(recorder))


def test_a_background_task_s_span_in_wsgi_mode(recorder: Recorder) -> None:
    client = WSGITestApp(traced_app(recorder, background_views(recorder)))
    assert client.get("/view?n=1").text == "1"
    assert_tasks_under_their_request(recorder, spans_by_n(recorder))


# -- (d) all of it at once ------------------------------------------------------------------

KINDS = ("ok", "plain", "slow", "gated", "hold")
REQUESTS = 100


def mixed_views(recorder: Recorder, release: asyncio.Event) -> Callable[[Configurator], None]:
    """One view per kind; each opens a span named and attributed by its request's number."""
    tracer = recorder.tracer

    def opened(what: str, n: str) -> Any:
        return tracer.start_as_current_span(f"{what} {n}", attributes={"n": n})

    async def ok_task(n: str) -> None:
        await asyncio.sleep(random.random() / 500)
        with opened("ok task", n):
            await asyncio.sleep(0)

    def plain_task(n: str) -> None:
        with opened("plain task", n):
            pass

    async def ok(request: Request) -> Response:
        n = request.matchdict["n"]
        with opened("ok", n):
            await asyncio.sleep(random.random() / 500)
        request.add_background_task(ok_task, n)
        return Response(n)

    def plain(request: Request) -> Response:
        n = request.matchdict["n"]
        with opened("plain", n):
            time.sleep(random.random() / 1000)
        request.add_background_task(plain_task, n)
        return Response(n)

    async def slow(request: Request) -> Response:
        n = request.matchdict["n"]
        with opened("slow", n):
            await asyncio.sleep(10)
        return Response(n)  # pragma: no cover - over its deadline

    async def gated(request: Request) -> Response:
        n = request.matchdict["n"]
        with opened("gated", n):
            await release.wait()
        return Response(n)

    async def hold(request: Request) -> Response:
        n = request.matchdict["n"]
        with opened("hold", n):
            await release.wait()
        return Response(n)

    def setup(config: Configurator) -> None:
        for kind, view, options in (
            ("ok", ok, {}),
            ("plain", plain, {}),
            ("slow", slow, {"timeout": 0.2}),
            ("gated", gated, {"max_concurrency": 2}),
            ("hold", hold, {}),
        ):
            config.add_route(kind, f"/{kind}/{{n}}")
            config.add_view(view, route_name=kind, **options)

    return setup


def test_interleaved_admitted_shed_and_timed_out_requests_keep_their_spans_apart(
    recorder: Recorder,
) -> None:
    """100 requests on one loop: 200s with background tasks, 504s, 503s of both gates.

    The holders (``hold``, ``gated``) wait until every request was sent, so
    the application's bound of 20 is reached for sure; the third ``gated``
    request arrives long before that, while two others hold the view's
    bound; the first ``slow`` ones are admitted and time out.
    """

    async def main() -> list[list[Any]]:
        release = asyncio.Event()
        router = traced_app(
            recorder, mixed_views(recorder, release), **{MAX_CONCURRENCY.name: "20"}
        )
        app = make_asgi_app(router)
        check = LeakCheck()
        sending = []
        for n in range(REQUESTS):
            path = f"/{KINDS[n % len(KINDS)]}/{n}"
            sending.append(asyncio.create_task(exchange(app, http_scope(path), b"")))
            await asyncio.sleep(random.random() / 500)
        release.set()
        results = await asyncio.gather(*sending)
        await app.lifecycle.background.join()
        await app.lifecycle.shutdown()
        # The pool is stopped; the one thread left is asyncio's, which stopped it.
        check.assert_clean(asyncio.get_running_loop(), max_new_threads=1)
        return results

    results = asyncio.run(main())
    servers = recorder.server_spans()
    assert len(servers) == REQUESTS
    by_path = {str(attributes_of(span)["url.path"]): span for span in servers}
    assert len(by_path) == REQUESTS
    server_ids = {span.context.span_id: span for span in servers if span.context}
    outcomes: dict[str, int] = {}
    for n, sent in enumerate(results):
        kind = KINDS[n % len(KINDS)]
        span = by_path[f"/{kind}/{n}"]
        attributes = attributes_of(span)
        status = status_of(sent)
        assert attributes["http.response.status_code"] == status
        children = recorder.children_of(span)
        names = sorted(child.name for child in children)
        if status == 503:
            assert_shed_span(recorder, span)
            assert header(sent, b"retry-after") == b"1"
            if span.name == "GET":
                outcome = "application shed"
                assert "http.route" not in attributes
            else:
                outcome = "view shed"
                assert kind == "gated"
                assert span.name == "GET /gated/{n}"
            assert VIEW not in attributes
        elif status == 504:
            outcome = "deadline"
            assert kind == "slow"
            assert_limit_answer(span, 504, DEADLINE)
            assert names == [f"slow {n}"]
        else:
            outcome = "admitted"
            assert status == 200
            assert sent[-1]["body"] == str(n).encode()
            assert LIMIT not in attributes
            assert span.status.status_code is StatusCode.UNSET
            assert span.name == f"GET /{kind}/{{n}}"
            assert str(attributes[VIEW]).endswith(kind)
            tasks = [f"{kind} task {n}"] if kind in ("ok", "plain") else []
            assert names == sorted([f"{kind} {n}", *tasks])
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        for child in children:
            # No attribute of one request on another's span.
            assert attributes_of(child) == {"n": str(n)}
    assert set(outcomes) == {"admitted", "application shed", "view shed", "deadline"}, outcomes
    # Every other span is a child of one of the server spans, in its trace.
    others = [
        span for span in recorder.spans() if span.context and span.context.span_id not in server_ids
    ]
    for span in others:
        assert span.parent is not None and span.context is not None
        parent = server_ids[span.parent.span_id]
        assert parent.context is not None
        assert span.context.trace_id == parent.context.trace_id
    assert len(recorder.spans()) == REQUESTS + len(others)
    assert sum(point.count for point in recorder.durations()) == REQUESTS
    assert LIMIT_KEY == LIMIT  # the span attribute is named as the environ key
