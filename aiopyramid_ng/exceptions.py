"""Exceptions raised by aiopyramid_ng."""

from __future__ import annotations

__all__ = ["ScopeError"]


class ScopeError(RuntimeError):
    """Synchronous code asked to wait for a coroutine where nothing can wait for it.

    Waiting on a coroutine from synchronous code is possible only inside a
    request greenlet (or a greenlet started by
    :func:`aiopyramid_ng.helpers.spawn_greenlet`) or in a worker thread that
    serves a request.  The message names what was missing and how to fix it.
    """
