"""The tween recording the exceptions raised below it on the request's span.

It sits right above Pyramid's router and below the exception view tween,
so it sees an exception that routing, traversal, the security policy or
the view raised before an exception view turns it into a response.
"""

from __future__ import annotations

from collections.abc import Callable

from pyramid.httpexceptions import HTTPException
from pyramid.registry import Registry
from pyramid.request import Request
from pyramid.response import Response

from ..threadlocal import outermost_request
from .span import current_server_span

__all__ = ["exception_tween_factory"]

Handler = Callable[[Request], Response]


def exception_tween_factory(handler: Handler, registry: Registry) -> Handler:
    """Return the tween recording exceptions; an HTTP exception below 500 is a response."""

    def exception_tween(request: Request) -> Response:
        try:
            return handler(request)
        except Exception as exc:
            if not (isinstance(exc, HTTPException) and exc.code < 500):
                span = current_server_span()
                if span is not None and request is outermost_request():
                    span.failed(exc)
            raise

    return exception_tween
