"""Which request the calling code serves, wherever it runs."""

from __future__ import annotations

from pyramid.interfaces import IRequest
from pyramid.threadlocal import manager

__all__ = ["outermost_request"]


def outermost_request() -> IRequest | None:
    """Return the outermost request of the calling context, or None outside requests.

    Pyramid's request stack is context-local under aiopyramid_ng, so this is
    the same request in its request greenlet, in a worker thread serving it
    and in a task it started; a subrequest counts as its parent.
    """
    for info in manager.stack:
        request: IRequest | None = info.get("request")
        if request is not None:
            return request
    return None
