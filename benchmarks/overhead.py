"""Per-request overhead of the greenlet path against a direct WSGI call, per view mapper.

Runs in-process with no server: each scenario calls a hello-world Pyramid
application ``--requests`` times, ``--rounds`` times, and reports the median
time per request and its ratio to a direct WSGI call of the same application
without aiopyramid_ng, measured in the same run.

    python benchmarks/overhead.py [--requests 2000] [--rounds 5]

Scenarios:

* ``direct WSGI``: stock Pyramid, ``router(environ, start_response)``.
* ``<mapper> / <view kind> (bridge)``: ``await spawn_greenlet(router, ...)``
  on a running loop, as the ASGI adapter does.
* ``... (WSGI mode)``: the same router called as a plain WSGI app, which runs
  the request on the thread's persistent loop.
* ``... (ASGI adapter)``: the whole ASGI path (``make_asgi_app``: body,
  environ, request greenlet, response messages) called as a server would,
  with ``receive``/``send`` that return at once.

It only reports; ``.ci/run`` prints a short run of it so that a change in
the per-request cost shows up in the CI log.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response
from pyramid.router import Router

from aiopyramid_ng.asgi import make_asgi_app
from aiopyramid_ng.bridge import spawn_greenlet
from aiopyramid_ng.config import (
    CoroutineMapper,
    CoroutineOrExecutorMapper,
    ExecutorMapper,
    GreenletMapper,
)

# A message as this driver builds and reads it: a plain dict.
Message = dict[str, Any]


def hello(request: Request) -> Response:
    return Response("Hello")


async def async_hello(request: Request) -> Response:
    return Response("Hello")


def build(view: Callable[..., Any] | None, mapper: type | None) -> Router:
    with Configurator() as config:
        if mapper is not None:
            config.include("aiopyramid_ng")
        config.add_route("hello", "/")
        config.add_view(view or hello, route_name="hello", **({"mapper": mapper} if mapper else {}))
        return config.make_wsgi_app()


def start_response(
    status: str, headers: list[tuple[str, str]], exc_info: Any = None
) -> Callable[[bytes], None]:
    return lambda data: None


def call(app: Router) -> None:
    body = app(Request.blank("/").environ, start_response)
    for _ in body:
        pass


def time_sync(app: Router, requests: int) -> float:
    started = time.perf_counter()
    for _ in range(requests):
        call(app)
    return (time.perf_counter() - started) / requests


def time_bridge(app: Router, requests: int) -> float:
    async def run() -> float:
        started = time.perf_counter()
        for _ in range(requests):
            await spawn_greenlet(call, app)
        return (time.perf_counter() - started) / requests

    return asyncio.run(run())


SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/",
    "raw_path": b"/",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench"), (b"accept", b"*/*")],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}


def time_asgi(app: Router, requests: int) -> float:
    asgi_app = make_asgi_app(app)

    async def send(message: Message) -> None:
        pass

    async def one() -> None:
        messages = iter([{"type": "http.request", "body": b"", "more_body": False}])

        async def receive() -> Message:
            # Then nothing, as from a client waiting for its response.
            return next(messages, None) or await asyncio.get_running_loop().create_future()

        await asgi_app(dict(SCOPE), receive, send)

    async def run() -> float:
        started = time.perf_counter()
        for _ in range(requests):
            await asyncio.create_task(one())  # a Task per request, as a server runs it
        return (time.perf_counter() - started) / requests

    return asyncio.run(run())


def scenarios() -> Iterable[tuple[str, Router, Callable[[Router, int], float]]]:
    yield "direct WSGI (stock Pyramid)", build(None, None), time_sync
    for mapper, view, kind in [
        (CoroutineOrExecutorMapper, async_hello, "async def"),
        (CoroutineOrExecutorMapper, hello, "plain, adaptive"),
        (CoroutineMapper, async_hello, "async def"),
        (ExecutorMapper, hello, "plain, executor"),
        (GreenletMapper, hello, "plain, greenlet"),
    ]:
        app = build(view, mapper)
        yield f"{mapper.__name__} / {kind} (bridge)", app, time_bridge
        yield f"{mapper.__name__} / {kind} (WSGI mode)", app, time_sync
        if mapper is CoroutineOrExecutorMapper:
            yield f"{mapper.__name__} / {kind} (ASGI adapter)", app, time_asgi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    measured = list(scenarios())
    timings: dict[str, list[float]] = {name: [] for name, _, _ in measured}
    ratios: dict[str, list[float]] = {name: [] for name, _, _ in measured}
    for _ in range(args.rounds):
        # Scenarios interleave within each round so drift affects them alike;
        # each ratio compares with the baseline of its own round.
        this_round = {name: timer(app, args.requests) for name, app, timer in measured}
        baseline = this_round[measured[0][0]]
        for name, seconds in this_round.items():
            timings[name].append(seconds)
            ratios[name].append(seconds / baseline)
    width = max(len(name) for name in timings)
    print(f"{'scenario':<{width}}  {'µs/request':>10}  {'x direct WSGI':>13}")
    for name in timings:
        micros = statistics.median(timings[name]) * 1e6
        print(f"{name:<{width}}  {micros:>10.1f}  {statistics.median(ratios[name]):>13.2f}")


if __name__ == "__main__":
    main()
