"""The traced application the OpenTelemetry server test serves with uvicorn in a subprocess.

uvicorn makes it with the factory :func:`create_app` (``--factory``).  Its
spans go, through the SDK's batching processor, to a file of JSON lines
(one span a line) named by the environment variable :data:`SPANS_FILE`.
The provider is shut down, which exports what the batch still holds, at
:class:`~aiopyramid_ng.events.ApplicationShutdown`: the lifespan shutdown
of a server told to stop (SIGTERM).

* ``GET /items/{id}``: a coroutine view with a child span ``load item``;
* ``GET /broken``: a view raising, answered 500;
* ``/ws/echo``: a WebSocket view echoing each text message until ``bye``.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response

from aiopyramid_ng.asgi import ASGIApplication, make_asgi_app
from aiopyramid_ng.events import ApplicationShutdown
from aiopyramid_ng.websocket import WebSocket, WebsocketMapper

#: The environment variable naming the file the spans are written to.
SPANS_FILE = "AIOPYRAMID_NG_TEST_SPANS"


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """What the test reads of a span: ids as hex, as in a ``traceparent``."""
    context = span.context
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "parent_remote": span.parent.is_remote if span.parent else None,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "events": [event.name for event in span.events],
    }


class JSONLinesExporter(SpanExporter):
    """Appends each span exported to a file, as one line of JSON."""

    def __init__(self, path: str):
        self.path = path
        self.lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_record(span)) + "\n" for span in spans)
        with self.lock, open(self.path, "a", encoding="utf-8") as output:
            output.write(lines)
        return SpanExportResult.SUCCESS


def broken(request: Request) -> Response:
    raise ValueError("broken on purpose")


async def echo(ws: WebSocket) -> None:
    while isinstance(message := await ws.recv(), str) and message != "bye":
        await ws.send(message)
    await ws.close()


def create_app() -> ASGIApplication:
    """The application, exporting to the file the environment names."""
    # Not at exit: only the shutdown subscriber exports what the batch holds.
    provider = TracerProvider(shutdown_on_exit=False)
    # Nothing exported on the batch's schedule within a test's life either.
    exporter = JSONLinesExporter(os.environ[SPANS_FILE])
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=600_000))
    tracer = provider.get_tracer("tests.support.otel_app")

    async def item(request: Request) -> Response:
        with tracer.start_as_current_span("load item"):
            await asyncio.sleep(0.01)
        return Response(json={"id": request.matchdict["id"]})

    def flush(event: ApplicationShutdown) -> None:
        provider.shutdown()

    with Configurator() as config:
        config.include("aiopyramid_ng")
        config.include("aiopyramid_ng.otel")
        config.set_otel_providers(tracer_provider=provider)
        config.add_subscriber(flush, ApplicationShutdown)
        config.add_route("item", "/items/{id}")
        config.add_view(item, route_name="item")
        config.add_route("broken", "/broken")
        config.add_view(broken, route_name="broken")
        config.add_route("echo", "/ws/echo")
        config.add_view(echo, route_name="echo", mapper=WebsocketMapper)
        return make_asgi_app(config.make_wsgi_app())
