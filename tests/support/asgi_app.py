"""The application the ASGI tests serve, in-process and under real servers.

Every view records what happened to it on the registry's :class:`Probe`, so
a test (or, under a server in another process, the ``/stats`` view) can
check that ``finally`` blocks and finished callbacks ran exactly once.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPFound
from pyramid.request import Request
from pyramid.response import FileResponse, Response
from pyramid.router import Router
from pyramid.security import Allowed, Denied

from aiopyramid_ng.asgi.disconnect import DisconnectWatch
from aiopyramid_ng.bridge import RequestGreenlet
from aiopyramid_ng.config import GreenletMapper
from aiopyramid_ng.events import ApplicationShutdown, ApplicationStartup
from aiopyramid_ng.helpers import await_, synchronize
from aiopyramid_ng.types import Environ, StartResponse
from tests.support.probe import Probe, probe_of

#: Content of the file ``/file`` serves: several reads of FileWrapper's chunk.
FILE_CONTENT = bytes(range(256)) * 1200
#: The body limit of the application the server tests run.
SERVER_MAX_BODY_SIZE = 64 * 1024


class Teapot(Exception):
    pass


# -- plain responses ----------------------------------------------------------


def sync_view(request: Request) -> Response:
    return Response(f"sync {request.method}")


async def async_view(request: Request) -> Response:
    await asyncio.sleep(0)
    return Response(f"async {request.method}")


@synchronize
async def _doubled(text: str) -> str:
    await asyncio.sleep(0)
    return text * 2


def greenlet_view(request: Request) -> Response:
    return Response(_doubled("greenlet "))


def json_view(request: Request) -> dict[str, Any]:
    return {"params": dict(request.params), "method": request.method}


def environ_view(request: Request) -> dict[str, Any]:
    environ = request.environ
    return {
        "script_name": request.script_name,
        "path_info": request.path_info,
        "query_string": environ["QUERY_STRING"],
        "path_url": request.path_url,
        "x_name": request.headers.get("X-Name", "").encode("latin-1").hex(),
        "x_repeated": request.headers.get("X-Repeated"),
        "cookies": dict(request.cookies),
        "content_type": environ.get("CONTENT_TYPE"),
        "protocol": environ["SERVER_PROTOCOL"],
        "multithread": environ["wsgi.multithread"],
        "multiprocess": environ["wsgi.multiprocess"],
        "run_once": environ["wsgi.run_once"],
    }


def unicode_view(request: Request) -> dict[str, Any]:
    return {"name": request.matchdict["name"], "path_info": request.path_info}


def redirect_view(request: Request) -> Response:
    raise HTTPFound(location=request.route_url("async"))


def cookies_view(request: Request) -> Response:
    response = Response("cookies")
    response.set_cookie("first", "1")
    response.set_cookie("second", "2")
    return response


def teapot_view(request: Request) -> Response:
    raise Teapot()


def teapot_exception_view(exc: Teapot, request: Request) -> Response:
    return Response("short and stout", status=418)


def error_view(request: Request) -> Response:
    raise ValueError("boom")


def notfound_view(request: Request) -> Response:
    return Response(f"missing {request.path_info}", status=404)


def forbidden_view(request: Request) -> Response:
    return Response("forbidden", status=403)


def secret_view(request: Request) -> Response:
    return Response("secret")


class HeaderSecurityPolicy:
    """Permits everything to a request that says ``X-Admin: yes``."""

    def identity(self, request: Request) -> str | None:
        return "admin" if request.headers.get("X-Admin") == "yes" else None

    def authenticated_userid(self, request: Request) -> str | None:
        return self.identity(request)

    def permits(self, request: Request, context: Any, permission: str) -> Allowed | Denied:
        return Allowed("admin") if self.identity(request) else Denied("not admin")


# -- request bodies -----------------------------------------------------------


def _echo(request: Request) -> dict[str, Any]:
    how = request.params.get("how", "body")
    probe_of(request).counts["echo"] += 1
    if how == "post":
        return {"post": dict(request.POST)}
    if how == "json":
        return {"json": request.json_body}
    if how == "file":
        request.make_body_seekable()
        first = request.body_file.read()
        request.body_file.seek(0)
        assert request.body_file.read() == first
        data = first
    else:
        data = request.body
    return {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def echo_sync(request: Request) -> dict[str, Any]:
    return _echo(request)


async def echo_async(request: Request) -> dict[str, Any]:
    await asyncio.sleep(0)
    return _echo(request)


def echo_greenlet(request: Request) -> dict[str, Any]:
    return _echo(request)


# -- streamed responses -------------------------------------------------------


def stream_view(request: Request) -> Response:
    probe = probe_of(request)

    def chunks() -> Iterator[bytes]:
        try:
            for number in range(5):
                yield b"chunk %d\n" % number
        finally:
            probe.counts["stream closed"] += 1

    return Response(app_iter=chunks(), content_type="text/plain")


class AsyncChunks:
    """An async iterator app_iter that counts its ``aclose()`` calls."""

    def __init__(self, probe: Probe, count: int):
        self.probe = probe
        self.remaining = count

    def __aiter__(self) -> AsyncChunks:
        return self

    async def __anext__(self) -> bytes:
        await asyncio.sleep(0)
        if not self.remaining:
            raise StopAsyncIteration
        self.remaining -= 1
        return b"async chunk\n"

    async def aclose(self) -> None:
        self.probe.counts["async stream closed"] += 1


def async_stream_view(request: Request) -> Response:
    return Response(app_iter=AsyncChunks(probe_of(request), 3), content_type="text/plain")


def file_view(request: Request) -> Response:
    return FileResponse(request.registry.settings["asgi_tests.file"], request=request)


def sse_view(request: Request) -> Response:
    """Two events; the second only after ``/release/sse`` was requested."""
    probe = probe_of(request)

    def events() -> Iterator[bytes]:
        # Runs in the request greenlet, so it may wait on the loop.
        try:
            yield b"data: first\n\n"
            await_(probe.event("sse").wait())
            yield b"data: second\n\n"
        finally:
            probe.counts["sse closed"] += 1

    return Response(app_iter=events(), content_type="text/event-stream")


async def _async_events(probe: Probe) -> AsyncIterator[bytes]:
    yield b"data: first\n\n"
    await probe.event("async-sse").wait()
    yield b"data: second\n\n"


def async_sse_view(request: Request) -> Response:
    return Response(app_iter=_async_events(probe_of(request)), content_type="text/event-stream")


# -- waiting, cancellation and stats ----------------------------------------


async def wait_view(request: Request) -> Response:
    probe = probe_of(request)
    probe.counts["waiting"] += 1
    await probe.event("wait").wait()
    return Response("released")


def _count_finished(request: Request) -> None:
    probe_of(request).counts[f"finished {request.matchdict['kind']}"] += 1


@contextmanager
def _hanging(request: Request, kind: str) -> Iterator[Probe]:
    """Count, in the request's probe, entering the block, leaving it and finishing the request."""
    probe = probe_of(request)
    request.add_finished_callback(_count_finished)
    probe.counts[f"entered {kind}"] += 1
    try:
        yield probe
    finally:
        probe.counts[f"finally {kind}"] += 1


async def hang_async(request: Request) -> Response:
    with _hanging(request, "async") as probe:
        await probe.event("never").wait()
    return Response("unreachable")


def hang_executor(request: Request) -> Response:
    with _hanging(request, "executor") as probe:
        probe.thread_gate("executor").wait()
    return Response("thread done")


def hang_stream(request: Request) -> Response:
    probe = probe_of(request)
    request.add_finished_callback(_count_finished)

    def chunks() -> Iterator[bytes]:
        try:
            yield b"first\n"
            probe.counts["entered stream"] += 1
            await_(probe.event("never").wait())
            yield b"unreachable\n"
        finally:
            probe.counts["finally stream"] += 1

    return Response(app_iter=chunks())


def release_view(request: Request) -> Response:
    name = request.matchdict["name"]
    probe = probe_of(request)
    probe.event(name).set()
    if name in probe.thread_gates:
        probe.thread_gates[name].set()
    return Response("released")


def stats_view(request: Request) -> dict[str, Any]:
    gc.collect()
    return {
        "counts": dict(probe_of(request).counts),
        "greenlets": sum(1 for obj in gc.get_objects() if isinstance(obj, RequestGreenlet) and obj),
        # Disconnect watches still waiting: each belongs to a running request.
        "watchers": sum(
            1 for obj in gc.get_objects() if isinstance(obj, DisconnectWatch) and obj.waiting
        ),
        "threads": threading.active_count(),
    }


# -- lifespan -----------------------------------------------------------------


def on_startup(event: ApplicationStartup) -> None:
    event.registry.probe.counts["startup"] += 1


async def on_startup_async(event: ApplicationStartup) -> None:
    await asyncio.sleep(0)
    event.registry.probe.counts["async startup"] += 1


def on_shutdown(event: ApplicationShutdown) -> None:
    event.registry.probe.counts["shutdown"] += 1
    marker = event.registry.settings.get("asgi_tests.shutdown_file")
    if marker:
        Path(marker).write_text("shutdown")


# -- assembly -----------------------------------------------------------------

ROUTES: list[tuple[str, str, Any, dict[str, Any]]] = [
    ("sync", "/sync", sync_view, {}),
    ("async", "/async", async_view, {}),
    ("greenlet", "/greenlet", greenlet_view, {"mapper": GreenletMapper}),
    ("json", "/json", json_view, {"renderer": "json"}),
    ("environ", "/environ/*rest", environ_view, {"renderer": "json"}),
    ("unicode", "/caf\u00e9/{name}", unicode_view, {"renderer": "json"}),
    ("redirect", "/redirect", redirect_view, {}),
    ("cookies", "/cookies", cookies_view, {}),
    ("teapot", "/teapot", teapot_view, {}),
    ("error", "/error", error_view, {}),
    ("secret", "/secret", secret_view, {"permission": "admin"}),
    ("echo_sync", "/echo/sync", echo_sync, {"renderer": "json"}),
    ("echo_async", "/echo/async", echo_async, {"renderer": "json"}),
    (
        "echo_greenlet",
        "/echo/greenlet",
        echo_greenlet,
        {"renderer": "json", "mapper": GreenletMapper},
    ),
    ("stream", "/stream", stream_view, {}),
    ("async_stream", "/async-stream", async_stream_view, {}),
    ("file", "/file", file_view, {}),
    ("sse", "/sse", sse_view, {"mapper": GreenletMapper}),
    ("async_sse", "/async-sse", async_sse_view, {"mapper": GreenletMapper}),
    ("wait", "/wait", wait_view, {}),
    ("hang_async", "/hang/{kind:async}", hang_async, {}),
    ("hang_executor", "/hang/{kind:executor}", hang_executor, {}),
    ("hang_stream", "/hang/{kind:stream}", hang_stream, {"mapper": GreenletMapper}),
    ("release", "/release/{name}", release_view, {"mapper": GreenletMapper}),
    ("stats", "/stats", stats_view, {"renderer": "json", "mapper": GreenletMapper}),
]


def make_router(file_dir: Path, **settings: Any) -> Router:
    """Build the application; ``file_dir`` receives the file ``/file`` serves."""
    path = file_dir / "served.bin"
    path.write_bytes(FILE_CONTENT)
    settings.setdefault("asgi_tests.file", str(path))
    with Configurator(settings=settings) as config:
        config.include("aiopyramid_ng")
        config.registry.probe = Probe()
        config.set_security_policy(HeaderSecurityPolicy())
        for name, pattern, view, options in ROUTES:
            config.add_route(name, pattern)
            config.add_view(view, route_name=name, **options)
        config.add_exception_view(teapot_exception_view, Teapot)
        config.add_notfound_view(notfound_view)
        config.add_forbidden_view(forbidden_view)
        config.add_subscriber(on_startup, ApplicationStartup)
        config.add_subscriber(on_startup_async, ApplicationStartup)
        config.add_subscriber(on_shutdown, ApplicationShutdown)
        return config.make_wsgi_app()


class Middleware:
    """A WSGI middleware around the Router, as a PasteDeploy pipeline has.

    Adds a header to every response, and fails on two paths of its own:
    ``/raw-error`` before any response, ``/raw-late-error`` mid-body.
    """

    def __init__(self, app: Router):
        self.app = app

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        if path == "/raw-error":
            raise RuntimeError("raw failure")
        if path == "/raw-late-error":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return self._late_failure()

        def tagging_start_response(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            return start_response(status, [*headers, ("X-Middleware", "yes")], *exc)

        body: Iterable[bytes] = self.app(environ, tagging_start_response)
        return body

    @staticmethod
    def _late_failure() -> Iterator[bytes]:
        yield b"partial"
        raise RuntimeError("late failure")
