"""The applications the benchmark servers run, one per server kind.

Every server serves every scenario's route, so one process per
(scenario, server) run is started from the same code:

* ``aiopyramid_ng``: Pyramid with ``config.include("aiopyramid_ng")`` through
  ``config.make_asgi_app()``, on uvicorn; ``aiopyramid_ng frozen GC``: the
  same with ``aiopyramid_ng.gc.freeze_after_startup`` on;
* ``raw ASGI``: a bare ASGI callable (hello world only), on uvicorn;
* ``bare Pyramid``: the Pyramid application without aiopyramid_ng, called
  synchronously from a bare ASGI callable (bodyless requests only), on
  uvicorn: the ceiling of any way to run Pyramid on that server;
* ``Starlette``: the same endpoints written for Starlette, on uvicorn;
* ``waitress``, ``gunicorn``: the same Pyramid application without
  aiopyramid_ng (plain views), on waitress and on gunicorn, each with its
  defaults (waitress: 4 threads; gunicorn: one synchronous worker);
* ``WsgiToAsgi``: that application wrapped in ``asgiref.wsgi.WsgiToAsgi``
  (the Pyramid cookbook's ASGI recipe), on uvicorn;
* ``a2wsgi``: that application wrapped in ``a2wsgi.WSGIMiddleware``, on uvicorn.

Views that wait use ``await asyncio.sleep`` where the server runs coroutines
and ``time.sleep`` where a plain WSGI view has no other way to wait.

uvicorn runs in one of :data:`UVICORN_CONFIGS`: ``standard`` (uvloop and
httptools, what ``uvicorn[standard]`` installs and users deploy) or ``h11``
(the pure-Python parser on the asyncio loop).
"""

from __future__ import annotations

import asyncio
import io
import resource
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

#: uvicorn's event loop and HTTP parser for each configuration.  Named
#: explicitly, so a missing uvloop or httptools fails the run instead of
#: silently measuring the fallback.
UVICORN_CONFIGS = {
    "standard": {"loop": "uvloop", "http": "httptools"},
    "h11": {"loop": "asyncio", "http": "h11"},
}

WAIT = 0.05
HELLO = b"Hello, world!"
#: A JSON document of about 10 KB.
DOCUMENT = {"items": [{"id": i, "name": f"item {i}", "tags": ["a", "b", "c"]} for i in range(200)]}
STREAM_CHUNKS = 16
CHUNK = b"x" * 1024


def _chunks() -> Iterator[bytes]:
    for _ in range(STREAM_CHUNKS):
        yield CHUNK


def pyramid_app(with_aiopyramid_ng: bool, settings: dict[str, str] | None = None) -> Any:
    """The Pyramid application: coroutine views when aiopyramid_ng runs it."""
    from pyramid.config import Configurator
    from pyramid.request import Request
    from pyramid.response import Response

    def hello(request: Request) -> Response:
        return Response(HELLO, content_type="text/plain")

    async def async_hello(request: Request) -> Response:
        return Response(HELLO, content_type="text/plain")

    def blocking(request: Request) -> Response:
        time.sleep(WAIT)
        return Response(HELLO, content_type="text/plain")

    async def sleeping(request: Request) -> Response:
        await asyncio.sleep(WAIT)
        return Response(HELLO, content_type="text/plain")

    def document(request: Request) -> Any:
        return DOCUMENT

    async def async_document(request: Request) -> Any:
        return DOCUMENT

    def form(request: Request) -> Response:
        return Response(f"{len(request.POST)} fields", content_type="text/plain")

    async def async_form(request: Request) -> Response:
        return form(request)

    def stream(request: Request) -> Response:
        return Response(app_iter=_chunks(), content_type="application/octet-stream")

    async def async_stream(request: Request) -> Response:
        return stream(request)

    with Configurator(settings=settings) as config:
        routes = (
            "hello",
            "hello-sync",
            "hello-greenlet",
            "hello-executor",
            "sleep",
            "blocking",
            "json",
            "form",
        )
        for name in (*routes, "stream", "ws"):
            config.add_route(name, f"/{name}")
        if with_aiopyramid_ng:
            from aiopyramid_ng.config import ExecutorMapper, GreenletMapper
            from aiopyramid_ng.websocket import WebSocket, WebsocketMapper

            async def echo(ws: WebSocket) -> None:
                while (message := await ws.recv()) is not None:
                    await ws.send(message)

            config.include("aiopyramid_ng")
            config.add_view(async_hello, route_name="hello")
            # The default mapper: in the pool until it has shown it never waits.
            config.add_view(hello, route_name="hello-sync")
            config.add_view(hello, route_name="hello-greenlet", mapper=GreenletMapper)
            config.add_view(hello, route_name="hello-executor", mapper=ExecutorMapper)
            config.add_view(sleeping, route_name="sleep")
            config.add_view(blocking, route_name="blocking")
            config.add_view(async_document, route_name="json", renderer="json")
            config.add_view(async_form, route_name="form")
            config.add_view(async_stream, route_name="stream")
            config.add_view(echo, route_name="ws", mapper=WebsocketMapper)
            return config.make_asgi_app()
        for name in ("hello", "hello-sync", "hello-greenlet", "hello-executor"):
            config.add_view(hello, route_name=name)
        config.add_view(blocking, route_name="sleep")
        config.add_view(blocking, route_name="blocking")
        config.add_view(document, route_name="json", renderer="json")
        config.add_view(form, route_name="form")
        config.add_view(stream, route_name="stream")
        return config.make_wsgi_app()


async def raw_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Hello world as a bare ASGI callable: the ceiling of uvicorn on this machine."""
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
        }
    )
    await send({"type": "http.response.body", "body": HELLO})


def bare_pyramid_app() -> Any:
    """The Pyramid application called synchronously from a bare ASGI callable.

    The ceiling of any ASGI server for Pyramid: uvicorn's cost plus stock
    Pyramid's own pipeline, and nothing else.  Not a way to serve an
    application: it ignores request bodies and disconnects, blocks the loop
    for as long as a view runs, and sends the body in one message.
    """
    router = pyramid_app(False)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        host, port = scope["server"]
        environ = {
            "REQUEST_METHOD": scope["method"],
            "SCRIPT_NAME": "",
            "PATH_INFO": scope["path"],
            "QUERY_STRING": scope["query_string"].decode("latin-1"),
            "SERVER_NAME": host,
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": "http",
            "wsgi.version": (1, 0),
            "wsgi.input": io.BytesIO(),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in scope["headers"]:
            environ["HTTP_" + name.decode("latin-1").upper().replace("-", "_")] = value.decode(
                "latin-1"
            )
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> None:
            started[:] = [int(status[:3]), [(k.encode(), v.encode()) for k, v in headers]]

        body = b"".join(router(environ, start_response))
        status, headers = started
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse(HELLO)

    def blocking(request: Request) -> PlainTextResponse:  # Starlette runs it in its thread pool
        time.sleep(WAIT)
        return PlainTextResponse(HELLO)

    async def sleeping(request: Request) -> PlainTextResponse:
        await asyncio.sleep(WAIT)
        return PlainTextResponse(HELLO)

    async def document(request: Request) -> JSONResponse:
        return JSONResponse(DOCUMENT)

    async def form(request: Request) -> PlainTextResponse:
        async with request.form() as fields:
            return PlainTextResponse(f"{len(fields)} fields")

    async def chunks() -> AsyncIterator[bytes]:
        for chunk in _chunks():
            yield chunk

    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(chunks(), media_type="application/octet-stream")

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text(await websocket.receive_text())
        except WebSocketDisconnect:
            pass

    return Starlette(
        routes=[
            Route("/hello", hello),
            Route("/hello-sync", hello),
            Route("/hello-greenlet", hello),
            Route("/hello-executor", hello),
            Route("/sleep", sleeping),
            Route("/blocking", blocking),
            Route("/json", document),
            Route("/form", form, methods=["POST"]),
            Route("/stream", stream),
            WebSocketRoute("/ws", echo),
        ]
    )


def raise_fd_limit() -> None:
    """Allow as many open files as the hard limit does (10,000 WebSocket connections)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _gunicorn(app: Any, port: int) -> None:
    from gunicorn.app.base import BaseApplication

    class Gunicorn(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            # gunicorn's defaults (one synchronous worker), on this port.
            self.cfg.set("bind", f"127.0.0.1:{port}")
            self.cfg.set("loglevel", "warning")

        def load(self) -> Any:
            return app

    Gunicorn().run()


def serve(server: str, port: int, uvicorn_config: str = "standard") -> None:
    """Run ``server`` on 127.0.0.1:``port`` until terminated."""
    raise_fd_limit()
    if server == "waitress":
        import waitress

        # waitress's defaults (4 threads), as pserve runs it.
        waitress.serve(pyramid_app(False), host="127.0.0.1", port=port, _quiet=True)
        return
    if server == "gunicorn":
        _gunicorn(pyramid_app(False), port)
        return
    import uvicorn

    if server == "aiopyramid_ng":
        app = pyramid_app(True)
    elif server == "aiopyramid_ng frozen GC":
        app = pyramid_app(True, {"aiopyramid_ng.gc.freeze_after_startup": "true"})
    elif server == "raw ASGI":
        app = raw_app
    elif server == "bare Pyramid":
        app = bare_pyramid_app()
    elif server == "Starlette":
        app = starlette_app()
    elif server == "WsgiToAsgi":
        from asgiref.wsgi import WsgiToAsgi

        app = WsgiToAsgi(pyramid_app(False))  # type: ignore[no-untyped-call]
    elif server == "a2wsgi":
        from a2wsgi import WSGIMiddleware

        app = WSGIMiddleware(pyramid_app(False))
    else:
        raise ValueError(f"unknown server {server!r}")
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        # WsgiToAsgi rejects lifespan scopes; the others do not need them.
        lifespan="on" if server.startswith("aiopyramid_ng") else "off",
        # Each request in a fresh context: asyncio can leak one request's
        # context variables into the next task on a kept-alive connection
        # (python/cpython#140947), which breaks asgiref's thread handling.
        reset_contextvars=True,
        backlog=4096,
        **UVICORN_CONFIGS[uvicorn_config],
    )
