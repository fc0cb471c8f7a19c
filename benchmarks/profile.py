"""Where the per-request time goes: an in-process driver for profilers, no network.

``run.py`` measures servers under load; this calls the ASGI applications of
``apps.py`` directly, on one event loop (uvloop when installed), the way
uvicorn's HTTP protocol does (a Task per request, ``receive`` waiting on an
``asyncio.Event`` once the body is read, ``send`` completing at once), so
that the cost of each request can be profiled and taken apart:

    python benchmarks/profile.py                              # every scenario, µs/request
    python benchmarks/profile.py --scenario async -n 20000 --profile cprofile
    python benchmarks/profile.py --scenario plain --profile pyinstrument
    python benchmarks/profile.py --scenario async --without listeners,threadlocal
    python benchmarks/profile.py --scenario concurrent --concurrency 1000 --tracemalloc
    python benchmarks/profile.py --components                 # pieces of the path, timed alone

Scenarios: ``async`` (``async def`` hello), ``plain`` (``def`` hello under
the default mapper, which runs it inline once its first runs in the pool
showed it never waits), ``executor`` (``def`` hello with ``ExecutorMapper``:
the thread pool on every request), ``greenlet`` (``def`` hello with
``GreenletMapper``), ``wsgi`` (stock Pyramid called as WSGI, no server),
``starlette`` and ``raw`` (baselines), and ``concurrent`` /
``starlette-concurrent``: ``--concurrency`` requests at once, each awaiting
``asyncio.sleep(0.05)``, reporting wall time, CPU time, cyclic GC runs and
time (``gc.callbacks``) and the objects each suspended request keeps alive.

``--without`` takes features of aiopyramid_ng out *in this process only*
(monkeypatching; the package is unchanged), so the difference in µs/request
is what the feature costs an application that does not use it.  See
``FEATURES``.  Compare numbers of one run: they depend on the machine and on
whatever else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import io
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apps import HELLO, pyramid_app, raw_app, starlette_app

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
Message = dict[str, Any]

HERE = Path(__file__).resolve().parent

SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.4"},
    "http_version": "1.1",
    "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 50000),
    "scheme": "http",
    "method": "GET",
    "root_path": "",
    "query_string": b"",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")],
    "state": {},
}


# --- the server side of one request ----------------------------------------------------------


class Cycle:
    """The ``receive``/``send`` pair of one GET, shaped like uvicorn's RequestResponseCycle."""

    __slots__ = ("body_sent", "event", "request_sent", "response_complete", "status")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.event.set()  # the request (no body) is complete when the app starts
        self.request_sent = False
        self.response_complete = False
        self.status = 0
        self.body_sent = 0

    async def receive(self) -> Message:
        if not self.response_complete:
            await self.event.wait()
            self.event.clear()
        if self.response_complete or self.request_sent:
            return {"type": "http.disconnect"}
        self.request_sent = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        else:
            self.body_sent += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.response_complete = True
                self.event.set()


def scope_for(path: str) -> dict[str, Any]:
    scope = dict(SCOPE)
    scope["path"] = path
    scope["raw_path"] = path.encode()
    scope["headers"] = list(SCOPE["headers"])
    return scope


async def one_request(app: App, path: str) -> Cycle:
    cycle = Cycle()
    await app(scope_for(path), cycle.receive, cycle.send)
    return cycle


async def request_in_task(app: App, path: str) -> Cycle:
    """One request in a Task of its own, as a server runs it."""
    return await asyncio.get_running_loop().create_task(one_request(app, path))


async def check(app: App, path: str) -> None:
    cycle = await request_in_task(app, path)
    if cycle.status != 200 or cycle.body_sent != len(HELLO):
        raise RuntimeError(f"GET {path}: status {cycle.status}, {cycle.body_sent} bytes")


async def lifespan(app: App, phase: str) -> asyncio.Task[None] | None:
    """Run the lifespan ``startup``; return the Task to hand ``shutdown`` to later."""
    queue: asyncio.Queue[Message] = asyncio.Queue()
    answers: asyncio.Queue[Message] = asyncio.Queue()

    async def send(message: Message) -> None:
        await answers.put(message)

    task = asyncio.get_running_loop().create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, queue.get, send)
    )
    await queue.put({"type": f"lifespan.{phase}"})
    answer = await answers.get()
    if not answer["type"].endswith(".complete"):
        raise RuntimeError(f"lifespan {phase}: {answer}")
    return task


# --- features taken out for a measurement ----------------------------------------------------


def _pyramid_router(app: Any) -> Any:
    return app.wsgi_app


def _without_listeners(app: Any) -> None:
    # The add-on's ApplicationCreated/ContextFound subscribers set
    # has_listeners: the Router then notifies four events per request.
    _pyramid_router(app).registry.has_listeners = False


def _without_notify(app: Any) -> None:
    registry = _pyramid_router(app).registry
    registry.__dict__.pop("notify", None)  # Registry.notify, Pyramid's own


def _without_traverser(app: Any) -> None:
    from pyramid.interfaces import ITraverser
    from zope.interface import Interface

    from aiopyramid_ng.traversal import AsyncTraverser

    registry = _pyramid_router(app).registry
    registry.unregisterAdapter(AsyncTraverser, (Interface,), ITraverser)


def _without_callbacks(app: Any) -> None:
    # The two request methods are the only request extensions of the app.
    _pyramid_router(app).request_extensions = None


def _without_policy(app: Any) -> None:
    from pyramid.router import default_execution_policy

    _pyramid_router(app).execution_policy = default_execution_policy


def _without_threadlocal(app: Any) -> None:
    import pyramid.threadlocal
    from pyramid.threadlocal import ThreadLocalManager

    manager = pyramid.threadlocal.manager
    manager.__class__ = ThreadLocalManager
    manager.stack = []


def _without_watch(app: Any) -> None:
    import aiopyramid_ng.asgi.http as http

    class NoWatch:
        def __init__(self, receive: Any, on_disconnect: Any) -> None:
            pass

        def stop(self) -> None:
            pass

    http.DisconnectWatch = NoWatch  # type: ignore[misc,assignment]


def _before_build_without_derivers() -> None:
    import aiopyramid_ng.debug as debug

    def nested_loop_view(view: Any, info: Any) -> Any:
        return view

    debug.nested_loop_view = nested_loop_view


@dataclass
class Feature:
    description: str
    #: Applied to the built ASGI application.
    after: Callable[[Any], None] | None = None
    #: Applied before the application is built.
    before: Callable[[], None] | None = None


FEATURES: dict[str, Feature] = {
    "listeners": Feature(
        "registry.has_listeners = False: no NewRequest/BeforeTraversal/ContextFound/"
        "NewResponse notifications (the app subscribes to none of them)",
        _without_listeners,
    ),
    "notify": Feature("Pyramid's Registry.notify instead of AwaitingNotify", _without_notify),
    "traverser": Feature(
        "Pyramid's ResourceTreeTraverser instead of AsyncTraverser", _without_traverser
    ),
    "callbacks": Feature(
        "no request extensions (the add_response/finished_callback request methods)",
        _without_callbacks,
    ),
    "policy": Feature(
        "Pyramid's default execution policy instead of GreenletExecutionPolicy (pass-through)",
        _without_policy,
    ),
    "threadlocal": Feature(
        "Pyramid's thread-local request stack instead of the context-local one "
        "(correct only for one request at a time)",
        _without_threadlocal,
    ),
    "watch": Feature("no disconnect watcher once the request waits", _without_watch),
    "derivers": Feature("no nested_loop_view view deriver", before=_before_build_without_derivers),
}


# --- the applications --------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    description: str
    path: str
    build: Callable[[], Any]
    concurrent: bool = False
    #: A plain WSGI application, called directly (no event loop in the request).
    wsgi: bool = False


_built: dict[str, Any] = {}


def _cached(key: str, make: Callable[[], Any]) -> Callable[[], Any]:
    def get() -> Any:
        if key not in _built:
            _built[key] = make()
        return _built[key]

    return get


pyramid_ng = _cached("aiopyramid_ng", lambda: pyramid_app(True))
starlette = _cached("starlette", starlette_app)
stock_pyramid = _cached("pyramid", lambda: pyramid_app(False))

SCENARIOS = {
    s.name: s
    for s in [
        Scenario("async", "aiopyramid_ng, async def hello", "/hello", pyramid_ng),
        Scenario(
            "plain",
            "aiopyramid_ng, def hello (default mapper: inline once promoted)",
            "/hello-sync",
            pyramid_ng,
        ),
        Scenario(
            "executor",
            "aiopyramid_ng, def hello (ExecutorMapper: thread pool)",
            "/hello-executor",
            pyramid_ng,
        ),
        Scenario(
            "greenlet", "aiopyramid_ng, def hello (GreenletMapper)", "/hello-greenlet", pyramid_ng
        ),
        Scenario(
            "wsgi", "stock Pyramid, def hello, direct WSGI call", "/hello", stock_pyramid, wsgi=True
        ),
        Scenario("starlette", "Starlette hello", "/hello", starlette),
        Scenario("raw", "raw ASGI hello", "/hello", lambda: raw_app),
        Scenario(
            "concurrent",
            "aiopyramid_ng, await asyncio.sleep(0.05), concurrent",
            "/sleep",
            pyramid_ng,
            concurrent=True,
        ),
        Scenario(
            "starlette-concurrent",
            "Starlette, await asyncio.sleep(0.05), concurrent",
            "/sleep",
            starlette,
            concurrent=True,
        ),
    ]
}


# --- profilers ---------------------------------------------------------------------------------


def _stdlib_cprofile() -> Any:
    """Import cProfile: it imports ``profile``, which this very file shadows on ``sys.path``."""
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    shadow = sys.modules.pop("profile", None)
    try:
        return importlib.import_module("cProfile")
    finally:
        sys.path[:] = saved
        if shadow is not None and "profile" not in sys.modules:
            sys.modules["profile"] = shadow


@contextmanager
def profiled(kind: str, top: int, title: str) -> Iterator[None]:
    if kind == "none":
        yield
        return
    if kind == "cprofile":
        import pstats

        profiler = _stdlib_cprofile().Profile()
        profiler.enable()
        try:
            yield
        finally:
            profiler.disable()
        for sort in ("tottime", "cumulative"):
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats(sort).print_stats(top)
            print(f"\n== cProfile of {title}, top {top} by {sort}")
            print(_trim_pstats(out.getvalue()))
        return
    from pyinstrument import Profiler

    sampler = Profiler(interval=0.0002, async_mode="disabled")
    sampler.start()
    try:
        yield
    finally:
        sampler.stop()
    print(f"\n== pyinstrument of {title}")
    print(sampler.output_text(unicode=True, color=False, show_all=False))


def _trim_pstats(text: str) -> str:
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    prefix = str(Path(sys.prefix).resolve()) + "/lib/"
    return "\n".join(line.replace(prefix, "") for line in lines[max(start - 2, 0) :])


# --- measuring ---------------------------------------------------------------------------------


@dataclass
class GCStats:
    collections: list[int] = field(default_factory=lambda: [0, 0, 0])
    seconds: float = 0.0
    _started: float = 0.0

    def callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections[info["generation"]] += 1


@contextmanager
def gc_watched() -> Iterator[GCStats]:
    stats = GCStats()
    gc.callbacks.append(stats.callback)
    try:
        yield stats
    finally:
        gc.callbacks.remove(stats.callback)


def run_wsgi(app: Any, path: str, requests: int) -> float:
    from pyramid.request import Request

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        return None

    started = time.perf_counter()
    for _ in range(requests):
        environ = Request.blank(path).environ
        body = app(environ, start_response)
        for _chunk in body:
            pass
        getattr(body, "close", lambda: None)()
    return time.perf_counter() - started


async def run_sequential(app: App, path: str, requests: int) -> float:
    started = time.perf_counter()
    for _ in range(requests):
        await request_in_task(app, path)
    return time.perf_counter() - started


async def run_concurrent(
    app: App, path: str, concurrency: int, batches: int, trace: bool
) -> dict[str, Any]:
    """``batches`` rounds of ``concurrency`` requests started together."""
    loop = asyncio.get_running_loop()
    wall = cpu = 0.0
    with gc_watched() as stats:
        for _ in range(batches):
            started, cpu_started = time.perf_counter(), time.process_time()
            await asyncio.gather(
                *(loop.create_task(one_request(app, path)) for _ in range(concurrency))
            )
            wall += time.perf_counter() - started
            cpu += time.process_time() - cpu_started
    result: dict[str, Any] = {
        "wall_s_per_batch": wall / batches,
        "cpu_us_per_request": cpu / batches / concurrency * 1e6,
        "gc_collections_per_1000": [c * 1000 / (batches * concurrency) for c in stats.collections],
        "gc_share_of_cpu": stats.seconds / cpu if cpu else 0.0,
        "gc_ms_per_batch": stats.seconds / batches * 1000,
    }
    result.update(await suspended_footprint(app, path, concurrency, trace))
    return result


async def suspended_footprint(app: App, path: str, concurrency: int, trace: bool) -> dict[str, Any]:
    """What ``concurrency`` requests suspended in their view keep alive, per request."""
    loop = asyncio.get_running_loop()
    gc.collect()
    if trace:
        tracemalloc.start(1)
    before_objects = len(gc.get_objects())
    before_blocks = sys.getallocatedblocks()
    before_snapshot = tracemalloc.take_snapshot() if trace else None
    tasks = [loop.create_task(one_request(app, path)) for _ in range(concurrency)]
    await asyncio.sleep(0.02)  # every request is now inside asyncio.sleep(0.05)
    objects = len(gc.get_objects()) - before_objects
    blocks = sys.getallocatedblocks() - before_blocks
    found: dict[str, Any] = {
        "gc_objects_per_suspended_request": objects / concurrency,
        "blocks_per_suspended_request": blocks / concurrency,
    }
    if before_snapshot is not None:
        snapshot = tracemalloc.take_snapshot()
        stats = snapshot.compare_to(before_snapshot, "lineno")
        found["tracemalloc_kib_per_request"] = sum(s.size_diff for s in stats) / 1024 / concurrency
        found["tracemalloc_top"] = [
            f"{s.size_diff / concurrency:8.0f} B/request {s.count_diff / concurrency:6.2f} "
            f"blocks/request  {_short(str(s.traceback[0]))}"
            for s in stats[:10]
        ]
        tracemalloc.stop()
    await asyncio.gather(*tasks)
    return found


def _short(where: str) -> str:
    for prefix in (str(Path(sys.prefix).resolve()) + "/lib/", str(HERE.parent) + "/"):
        where = where.replace(prefix, "")
    return where


# --- components, timed alone -------------------------------------------------------------------


async def components(requests: int) -> dict[str, float]:
    """µs per call of pieces of the request path, each on its own."""
    from concurrent.futures import ThreadPoolExecutor
    from io import BytesIO

    from aiopyramid_ng.asgi.disconnect import DisconnectWatch
    from aiopyramid_ng.asgi.environ import build_environ
    from aiopyramid_ng.asgi.responder import Responder
    from aiopyramid_ng.bridge import spawn_greenlet, spawn_greenlet_watched
    from aiopyramid_ng.threads import run_in_thread

    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(1)
    scope = scope_for("/hello")
    headers = [("Content-Type", "text/plain; charset=UTF-8"), ("Content-Length", "13")]
    results: dict[str, float] = {}

    def noop(*args: Any) -> None:
        return None

    def timed_sync(name: str, func: Callable[[], object]) -> None:
        started = time.perf_counter()
        for _ in range(requests):
            func()
        results[name] = (time.perf_counter() - started) / requests * 1e6

    async def timed(name: str, func: Callable[[], Awaitable[object]]) -> None:
        started = time.perf_counter()
        for _ in range(requests):
            await func()
        results[name] = (time.perf_counter() - started) / requests * 1e6

    async def nothing() -> None:
        return None

    def responder_translation() -> None:
        Responder(noop, False, noop).start_response("200 OK", headers)  # type: ignore[arg-type]

    def watch_start_stop() -> None:
        cycle = Cycle()
        cycle.request_sent = True
        cycle.event.clear()
        DisconnectWatch(cycle.receive, noop).stop()  # type: ignore[arg-type]

    timed_sync("build_environ", lambda: build_environ(scope, BytesIO(b""), 0))
    timed_sync("Responder + start_response translation", responder_translation)
    timed_sync("DisconnectWatch start + stop (uvicorn-like receive)", watch_start_stop)
    timed_sync("contextvars.copy_context()", __import__("contextvars").copy_context)
    await timed("Task creation + await (empty coroutine)", lambda: loop.create_task(nothing()))
    await timed("spawn_greenlet(noop)", lambda: spawn_greenlet(noop))
    await timed("spawn_greenlet_watched(noop)", lambda: spawn_greenlet_watched(noop, noop))
    await timed("loop.run_in_executor(pool, noop)", lambda: loop.run_in_executor(pool, noop))
    await timed("run_in_thread(pool, noop)", lambda: run_in_thread(pool, noop))

    async def threadsafe_roundtrip() -> None:
        future = loop.create_future()
        pool.submit(loop.call_soon_threadsafe, future.set_result, None)
        await future

    await timed("submit + call_soon_threadsafe round trip", threadsafe_roundtrip)
    await timed(
        "run_in_thread(pool, noop) in a request greenlet",
        lambda: spawn_greenlet(_await_in_greenlet, run_in_thread, pool, noop),
    )
    pool.shutdown()
    return results


def _await_in_greenlet(make: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    from aiopyramid_ng.bridge import await_in_greenlet

    return await_in_greenlet(make(*args))


# --- main --------------------------------------------------------------------------------------


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            print("uvloop is not installed: using asyncio's loop", file=sys.stderr)
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenario",
        default="async,plain,executor,greenlet,wsgi,starlette,raw,concurrent,starlette-concurrent",
        help=f"comma-separated, from: {', '.join(SCENARIOS)}",
    )
    parser.add_argument("-n", "--requests", type=int, default=5000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5, help="the median round is reported")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--profile", choices=("none", "cprofile", "pyinstrument"), default="none")
    parser.add_argument("--top", type=int, default=30, help="functions listed by the profiler")
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=5, help="concurrent batches per round")
    parser.add_argument(
        "--without",
        default="",
        help=f"comma-separated features to take out: {', '.join(FEATURES)}",
    )
    parser.add_argument("--tracemalloc", action="store_true", help="top 10 lines (concurrent)")
    parser.add_argument("--components", action="store_true", help="time pieces of the path")
    parser.add_argument("--no-gc", action="store_true", help="gc.disable() while measuring")
    parser.add_argument(
        "--gc-freeze", action="store_true", help="gc.freeze() once the application started"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    names = [n for n in args.scenario.split(",") if n]
    unknown = [n for n in names if n not in SCENARIOS]
    features = [f for f in args.without.split(",") if f]
    unknown += [f for f in features if f not in FEATURES]
    if unknown:
        raise SystemExit(f"unknown scenario or feature: {', '.join(unknown)}")
    for name in features:
        before = FEATURES[name].before
        if before is not None:
            before()
    loop = new_loop(args.loop)
    asyncio.set_event_loop(loop)
    print(f"loop: {type(loop).__module__}.{type(loop).__name__}; python {sys.version.split()[0]}")
    if features:
        for name in features:
            print(f"without {name}: {FEATURES[name].description}")
    if args.components:
        for what, us in loop.run_until_complete(components(args.requests)).items():
            print(f"  {us:8.2f} µs  {what}")
    try:
        for name in names:
            loop.run_until_complete(run_scenario(SCENARIOS[name], args, features))
    finally:
        pending = asyncio.all_tasks(loop)  # the lifespan Tasks, waiting for a shutdown
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()


async def run_scenario(scenario: Scenario, args: argparse.Namespace, features: list[str]) -> None:
    app = scenario.build()
    if scenario.wsgi:
        run_wsgi(app, scenario.path, 100)
        timings = [run_wsgi(app, scenario.path, args.requests) for _ in range(args.rounds)]
        with profiled(args.profile, args.top, scenario.name):
            run_wsgi(app, scenario.path, args.requests)
        _report(scenario, timings, args.requests)
        return
    if scenario.name not in {"raw", "wsgi"} and not hasattr(app, "_lifespan_started"):
        if hasattr(app, "wsgi_app"):
            for name in features:
                after = FEATURES[name].after
                if after is not None:
                    after(app)
        app._lifespan_started = await lifespan(app, "startup")
        if args.gc_freeze:
            gc.collect()
            gc.freeze()
    if scenario.concurrent:
        await run_concurrent(app, scenario.path, min(args.concurrency, 50), 1, False)
        for round_ in range(args.rounds):
            with profiled(args.profile if round_ == 0 else "none", args.top, scenario.name):
                found = await run_concurrent(
                    app, scenario.path, args.concurrency, args.batches, args.tracemalloc
                )
            top = found.pop("tracemalloc_top", None)
            print(
                f"{scenario.name:22} c={args.concurrency} round {round_ + 1}: "
                + ", ".join(f"{k}={_fmt(v)}" for k, v in found.items())
            )
            if top and round_ == 0:
                print("  tracemalloc, top 10 lines by size kept per suspended request:")
                for line in top:
                    print("   ", line)
        return
    await check(app, scenario.path)
    await run_sequential(app, scenario.path, min(args.requests, 500))
    if args.no_gc:
        gc.disable()
    try:
        timings = [
            await run_sequential(app, scenario.path, args.requests) for _ in range(args.rounds)
        ]
        with profiled(args.profile, args.top, scenario.name):
            await run_sequential(app, scenario.path, args.requests)
    finally:
        gc.enable()
    _report(scenario, timings, args.requests)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "/".join(f"{v:.3g}" for v in value)
    return str(value)


def _report(scenario: Scenario, timings: list[float], requests: int) -> None:
    per = sorted(t / requests * 1e6 for t in timings)
    print(
        f"{scenario.name:22} {statistics.median(per):8.2f} µs/request "
        f"(min {per[0]:.2f}, max {per[-1]:.2f}; {len(per)} rounds of {requests})  "
        f"{scenario.description}"
    )


if __name__ == "__main__":
    main()
