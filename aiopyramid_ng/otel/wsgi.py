"""The server span of a request from a plain WSGI server (WebTest, waitress, gunicorn sync).

Installed with :meth:`~aiopyramid_ng.execution.GreenletExecutionPolicy.wrap_outer`,
it runs in the server's thread around the whole request: from the Router's
call of the execution policy until the policy returned the response (or
raised).  The server iterates the response body after that, outside it.
Under an ASGI server it never runs: the ASGI layer
(:mod:`aiopyramid_ng.otel.asgi`) has the request's span.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry import propagate
from pyramid.router import Router

from ..types import Environ
from .attributes import EnvironGetter, environ_attributes
from .providers import Telemetry
from .span import ServerSpan

__all__ = ["WSGITracing"]

ExecutionPolicy = Callable[[Environ, Router], Any]

_ENVIRON = EnvironGetter()


class WSGITracing:
    """An outer execution policy layer: each call is one server span."""

    def __init__(self, telemetry: Telemetry, enter: ExecutionPolicy):
        self.telemetry = telemetry
        self.enter = enter

    def __call__(self, environ: Environ, router: Router) -> Any:
        name, attributes = environ_attributes(environ)
        parent = propagate.extract(environ, getter=_ENVIRON)
        span = ServerSpan(self.telemetry, name, attributes, parent)
        span.serving(environ)
        # Current in the server thread's context: the loop's Task that runs
        # the request greenlet starts from a copy of it.
        with span.activated():
            try:
                response = self.enter(environ, router)
            except BaseException as exc:
                span.failed(exc)
                raise
            else:
                span.responded(response.status_code)
            finally:
                span.end()
        return response
