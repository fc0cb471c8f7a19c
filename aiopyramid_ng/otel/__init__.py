"""OpenTelemetry for aiopyramid_ng: a server span per request and connection, and its duration.

::

    pip install aiopyramid_ng[otel]

    config.include("aiopyramid_ng")
    config.include("aiopyramid_ng.otel")

Nothing of OpenTelemetry is imported unless this package is.

==============  ==============================================================
``providers``   the tracer and histogram; ``config.set_otel_providers``
``attributes``  the attributes' names, and their values from a scope/environ
``span``        one request's ``ServerSpan``, current in its context
``asgi``        the span of an ASGI scope (the ``IScopeLayer``)
``wsgi``        the span of a plain WSGI server's call
``naming``      the route and view names, known only after routing
``tween``       exceptions raised under Pyramid's exception view tween
==============  ==============================================================
"""

from __future__ import annotations

from pyramid.config import Configurator
from pyramid.events import ApplicationCreated, BeforeTraversal
from pyramid.exceptions import ConfigurationError
from pyramid.registry import Registry
from pyramid.tweens import EXCVIEW, INGRESS, MAIN

from ..debug import BlockingReport, observe_blocking
from ..exceptions import see
from ..execution import ExecutionPolicy, wrap_execution_policy
from ..interfaces import IAppExecutor, IScopeLayer
from ..orders import ORDERS
from .asgi import ScopeTracing
from .naming import name_by_route, traced_view
from .providers import Telemetry, set_otel_providers, telemetry_of
from .span import ServerSpan, current_server_span
from .wsgi import WSGITracing

__all__ = [
    "ServerSpan",
    "Telemetry",
    "current_server_span",
    "includeme",
    "set_otel_providers",
]

#: The name of the scope layer (IScopeLayer utility) and of the view deriver.
NAME = "aiopyramid_ng.otel"


def _blocked(report: BlockingReport, seconds: float) -> None:
    # Called by the detector in the request's context, so its span is current.
    span = current_server_span()
    if span is not None:
        span.blocked(report.view or "before the view", seconds)


def _trace_wsgi_calls(registry: Registry) -> None:
    """Put the span layer around a plain WSGI server's call.  Idempotent."""

    def wrap(enter: ExecutionPolicy) -> ExecutionPolicy:
        if isinstance(enter, WSGITracing):
            return enter
        return WSGITracing(telemetry_of(registry), enter)

    wrap_execution_policy(registry).wrap_outer(wrap)


def includeme(config: Configurator) -> None:
    """Trace every request and WebSocket connection of the application.

    * a SERVER span per ASGI ``http`` and ``websocket`` scope, and per call
      from a plain WSGI server;
    * named by the route after routing, with the view's name;
    * exceptions recorded; runs the blocking detector logs become span events;
    * the ``set_otel_providers`` directive.

    Needs ``config.include('aiopyramid_ng')`` as well, in either order.
    """
    registry = config.registry
    config.add_directive("set_otel_providers", set_otel_providers)
    config.add_subscriber(name_by_route, BeforeTraversal)
    config.add_view_deriver(traced_view, name=NAME)
    config.add_tween(
        "aiopyramid_ng.otel.tween.exception_tween_factory", over=MAIN, under=(EXCVIEW, INGRESS)
    )
    observe_blocking(_blocked)

    def install() -> None:
        if registry.queryUtility(IAppExecutor) is None:
            raise ConfigurationError(
                "config.include('aiopyramid_ng.otel') traces what aiopyramid_ng serves: add "
                "config.include('aiopyramid_ng') to the application as well. "
                f"{see('otel-setup')}"
            )
        registry.registerUtility(ScopeTracing(registry), IScopeLayer, name=NAME)
        _trace_wsgi_calls(registry)

    config.action(None, install, order=ORDERS["trace_requests"])
    # The policy wrapped at commit is replaced when another add-on sets one
    # after the commit: wrap the final one too.
    config.add_subscriber(lambda _event: _trace_wsgi_calls(registry), ApplicationCreated)
