"""Naming the server span after routing: the route pattern, and the view called.

Only the outermost request of a context names its span: a subrequest runs
in the same context and would otherwise rename it.
"""

from __future__ import annotations

from typing import Any

from pyramid.events import BeforeTraversal
from pyramid.interfaces import IRequest
from pyramid.util import object_description

from ..threadlocal import outermost_request
from .span import current_server_span

__all__ = ["name_by_route", "traced_view"]


def name_by_route(event: BeforeTraversal) -> None:
    """Subscriber: right after routing, name the span ``"{method} {route}"``."""
    span = current_server_span()
    if span is not None and event.request is outermost_request():
        span.routed(event.request)


def traced_view(view: Any, info: Any) -> Any:
    """View deriver: record the view's name on the request's span when it is called."""
    name = object_description(info.original_view)

    def named_view(context: Any, request: IRequest) -> Any:
        span = current_server_span()
        if span is not None and request is outermost_request():
            span.called_view(name)
        return view(context, request)

    return named_view
