"""Context-local replacement for Pyramid's thread-local request/registry stack.

Pyramid keeps the current request and registry on one ``threading.local``
(``pyramid.threadlocal.manager``).  Every greenlet of a thread shares it, so
two requests interleaved on the event loop would read and pop each other's
entries.  :func:`install` turns that very object (it is imported by name all
over Pyramid, so it cannot be replaced) into a :class:`ContextLocalManager`
that keeps the stack in a :class:`~contextvars.ContextVar`.

The stack is an immutable tuple: a copied context (a new Task, a worker
thread started with ``contextvars.copy_context()``) starts from the same
entries but never shares later pushes and pops with its origin.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import pyramid.threadlocal
from pyramid.interfaces import IRequest
from pyramid.threadlocal import ThreadLocalManager

__all__ = ["ContextLocalManager", "install", "outermost_request"]

Info = dict[str, Any]

_stack: ContextVar[tuple[Info, ...]] = ContextVar("aiopyramid_ng.threadlocal", default=())


class ContextLocalManager(ThreadLocalManager):  # type: ignore[misc]
    """A :class:`pyramid.threadlocal.ThreadLocalManager` whose stack is context-local."""

    default: Callable[[], Info]

    def __init__(self, default: Callable[[], Info] | None = None) -> None:
        # threading.local re-runs __init__ the first time each new thread
        # touches the object.  Pyramid's version would reset the stack there;
        # this one must not, or a worker thread running with a copy of a
        # request's context would lose that request.
        self.default = default  # type: ignore[assignment]

    @property
    def stack(self) -> list[Info]:
        """A copy of the current context's stack (oldest entry first)."""
        return list(_stack.get())

    @stack.setter
    def stack(self, value: list[Info]) -> None:
        _stack.set(tuple(value))

    def push(self, info: Info) -> None:
        _stack.set((*_stack.get(), info))

    set = push

    def pop(self) -> Info | None:
        stack = _stack.get()
        if not stack:
            return None
        _stack.set(stack[:-1])
        return stack[-1]

    def get(self) -> Info:
        stack = _stack.get()
        return stack[-1] if stack else self.default()

    def clear(self) -> None:
        _stack.set(())


def install() -> None:
    """Make ``pyramid.threadlocal.manager`` context-local.  Idempotent.

    Entries already pushed in the calling thread (by ``Configurator.begin``
    or ``pyramid.testing.setUp``) move to the calling context, so the matching
    ``end``/``tearDown`` still pops them.
    """
    manager = pyramid.threadlocal.manager
    if isinstance(manager, ContextLocalManager):
        return
    pushed = list(manager.stack)
    manager.stack.clear()
    manager.__class__ = ContextLocalManager
    manager.stack = pushed


def outermost_request() -> IRequest | None:
    """Return the outermost request of the calling context, or None outside requests.

    The request stack being context-local, this is the same request in its
    request greenlet, in a worker thread serving it and in a task it
    started; a subrequest counts as its parent.
    """
    for info in pyramid.threadlocal.manager.stack:
        request: IRequest | None = info.get("request")
        if request is not None:
            return request
    return None
