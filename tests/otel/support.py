"""Per-test OpenTelemetry providers with in-memory exporters, and apps traced with them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Tracer
from pyramid.config import Configurator
from pyramid.router import Router

from aiopyramid_ng.asgi import ASGIApplication
from aiopyramid_ng.testing import http


class Recorder:
    """A tracer and meter provider of one test, and what they recorded."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        #: What views make their child spans with.
        self.tracer: Tracer = self.tracer_provider.get_tracer("tests")

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def server_spans(self) -> list[ReadableSpan]:
        return [span for span in self.spans() if span.kind is SpanKind.SERVER]

    def server_span(self) -> ReadableSpan:
        (span,) = self.server_spans()
        return span

    def children_of(self, parent: ReadableSpan) -> list[ReadableSpan]:
        assert parent.context is not None
        return [
            span
            for span in self.spans()
            if span.parent is not None and span.parent.span_id == parent.context.span_id
        ]

    def durations(self) -> list[HistogramDataPoint]:
        data = self.reader.get_metrics_data()
        if data is None:
            return []
        points: list[HistogramDataPoint] = []
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == "http.server.request.duration":
                        assert metric.unit == "s"
                        points.extend(metric.data.data_points)  # type: ignore[arg-type]
        return points

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def traced_app(
    recorder: Recorder, setup: Callable[[Configurator], None], **settings: Any
) -> Router:
    """An application including aiopyramid_ng and its otel package, traced into ``recorder``."""
    with Configurator(settings=settings) as config:
        config.include("aiopyramid_ng")
        config.include("aiopyramid_ng.otel")
        config.set_otel_providers(
            tracer_provider=recorder.tracer_provider, meter_provider=recorder.meter_provider
        )
        setup(config)
        return config.make_wsgi_app()


def http_scope(
    path: str,
    method: str = "GET",
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> Any:
    """An ASGI http scope as uvicorn builds one."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"testserver:8080"), *(headers or [])],
        "client": ("10.0.0.7", 50000),
        "server": ("127.0.0.1", 8080),
        "extensions": {},
    }


async def exchange(app: ASGIApplication, scope: Any, body: bytes) -> list[Any]:
    """The messages ``app`` sent for one exchange, as plain mappings to read in a test."""
    return list(await http.exchange(app, scope, body))


def routes(**views: Callable[..., Any]) -> Callable[[Configurator], None]:
    """A setup adding each view on a route of its name, at ``/<name>``."""

    def setup(config: Configurator) -> None:
        for name, view in views.items():
            config.add_route(name, f"/{name}")
            config.add_view(view, route_name=name)

    return setup
