"""Where an application's spans and measurements go: the tracer and the duration histogram.

By default the globally configured providers
(``opentelemetry.trace.set_tracer_provider``,
``opentelemetry.metrics.set_meter_provider``) are used, looked up when the
application is configured: set them up before ``config.include``, or the
API's proxies forward to them once they are set.  The directive
``config.set_otel_providers(tracer_provider=..., meter_provider=...)``
gives an application providers of its own instead (a test's in-memory
exporter, say).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from opentelemetry import metrics, trace
from opentelemetry.metrics import Histogram, MeterProvider
from opentelemetry.trace import Tracer, TracerProvider
from pyramid.config import Configurator
from pyramid.registry import Registry
from zope.interface import Interface

__all__ = ["DURATION_BOUNDARIES", "Telemetry", "set_otel_providers", "telemetry_of"]

#: The instrumentation scope of every span and instrument.
SCOPE = "aiopyramid_ng"

#: The bucket boundaries (seconds) the HTTP semantic conventions advise.
DURATION_BOUNDARIES = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0
)  # fmt: skip


try:
    _VERSION: str | None = version(SCOPE)
except PackageNotFoundError:  # pragma: no cover - imported from an uninstalled source tree
    _VERSION = None


class ITelemetry(Interface):  # type: ignore[misc]
    """The registry utility holding the application's :class:`Telemetry`."""


class Telemetry:
    """The tracer server spans are made with and the request duration histogram."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ):
        self.tracer: Tracer = trace.get_tracer(SCOPE, _VERSION, tracer_provider)
        meter = metrics.get_meter(SCOPE, _VERSION or "", meter_provider)
        #: ``http.server.request.duration``, in seconds, per the HTTP semantic conventions.
        self.duration: Histogram = meter.create_histogram(
            "http.server.request.duration",
            unit="s",
            description="Duration of HTTP server requests.",
            explicit_bucket_boundaries_advisory=DURATION_BOUNDARIES,
        )


def telemetry_of(registry: Registry) -> Telemetry:
    """Return the application's :class:`Telemetry`, made from the global providers if unset."""
    telemetry: Telemetry | None = registry.queryUtility(ITelemetry)
    if telemetry is None:
        telemetry = Telemetry()
        registry.registerUtility(telemetry, ITelemetry)
    return telemetry


def set_otel_providers(
    config: Configurator,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> None:
    """Config directive: make this application's spans and measurements with these providers.

    Either left out is the globally configured one.  Conflicts with another
    call in the same commit, as any directive setting one thing does.
    """

    def register() -> None:
        config.registry.registerUtility(Telemetry(tracer_provider, meter_provider), ITelemetry)

    config.action(ITelemetry, register)
