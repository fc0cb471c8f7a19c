"""Traversal over resources whose ``__getitem__`` and root factory may be coroutines.

``config.include('aiopyramid_ng')`` registers :class:`AsyncTraverser` as the
default :term:`traverser` (``config.add_traverser``).  It walks the resource
tree exactly as Pyramid's ``ResourceTreeTraverser`` does (view names,
subpaths, ``@@`` view selectors, virtual roots) and, at each step, waits for
an awaitable ``__getitem__`` result.  So a resource may define::

    class Folder:
        async def __getitem__(self, name):
            row = await db.fetch_child(self.id, name)
            if row is None:
                raise KeyError(name)       # ends traversal: name becomes the view name
            return Folder(row, parent=self, name=name)

A root factory (``config.set_root_factory`` or a route's ``factory=``) may be
``async def`` too.  Pyramid calls it synchronously and keeps the coroutine it
returns as the root; the traverser, called next in the same request
greenlet, awaits it first, and Pyramid then replaces ``request.root`` with
the awaited root.  ``@synchronize``\\ d ``__getitem__`` methods (aiopyramid's
way) work with this traverser and with Pyramid's own.

A traverser registered for a more specific root interface wins over this
one; if it meets an ``async def __getitem__`` or root factory, the request
fails at ``ContextFound`` with an error that names the coroutine function.
An awaitable root provides no interface of the resource it stands for, so
such traversers are never chosen for an ``async def`` root factory.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from pyramid.config import Configurator
from pyramid.events import ContextFound
from pyramid.interfaces import IContextFound, IRequest, ITraverser
from pyramid.registry import Registry
from pyramid.traversal import ResourceTreeTraverser
from zope.interface import implementer

from .coroutines import is_awaitable, resolve
from .exceptions import see
from .orders import ORDERS

__all__ = ["AsyncTraverser", "includeme"]

_FIX = (
    "Traverse from request code, or run the caller with "
    "`await aiopyramid_ng.helpers.spawn_greenlet(func, ...)`."
)

#: Keys of a traversal result that hold resources.
RESOURCE_KEYS = ("context", "root", "virtual_root")


class _Awaiting:
    """Stands for a resource while Pyramid's traverser walks the tree.

    Pyramid reads ``ob.__getitem__`` (``AttributeError`` ends traversal) and
    calls it (``KeyError`` ends traversal).  This object exposes the
    resource's own ``__getitem__``, waits for what it returns, and stands for
    the child in turn, so the traversal rules stay Pyramid's own.
    """

    __slots__ = ("resource",)

    def __init__(self, resource: Any):
        self.resource = resource

    @property
    def __getitem__(self) -> Callable[[str], _Awaiting]:
        getitem = self.resource.__getitem__

        def awaited_getitem(name: str) -> _Awaiting:
            return _Awaiting(resolve(getitem(name), getitem, _FIX))

        return awaited_getitem


@implementer(ITraverser)
class AsyncTraverser:
    """Pyramid's resource tree traversal, waiting for awaitable roots and children.

    :param root: the root resource, or an awaitable that resolves to it (what
        an ``async def`` root factory returns).
    """

    def __init__(self, root: Any):
        self.root = root

    def __call__(self, request: IRequest) -> dict[str, Any]:
        root = self.root
        if not hasattr(root, "__getitem__") and not is_awaitable(root):
            # A root that is no container (Pyramid's DefaultRootFactory, what
            # URL dispatch applications use) ends traversal where it starts:
            # nothing can be awaited, so nothing needs to be wrapped.
            found: dict[str, Any] = ResourceTreeTraverser(root)(request)
            return found
        root = resolve(root, root, _FIX)
        found = ResourceTreeTraverser(_Awaiting(root))(request)
        for key in RESOURCE_KEYS:
            found[key] = found[key].resource
        return found


def _refuse_awaitable_context(event: ContextFound) -> None:
    """Fail a request whose traverser left an unawaited coroutine as the context."""
    context = event.request.context
    if not inspect.isawaitable(context):
        return
    name = getattr(context, "__qualname__", repr(context))
    if inspect.iscoroutine(context):
        context.close()  # never awaited, and this error says why
    raise TypeError(
        f"Traversal left the coroutine of {name}() as the request's context instead of "
        "awaiting it: the traverser that ran cannot wait for `async def __getitem__` or "
        "`async def` root factories. Let aiopyramid_ng.traversal.AsyncTraverser traverse "
        "these resources (it is the default after config.include('aiopyramid_ng'); for a "
        "root interface with its own traverser: config.add_traverser(AsyncTraverser, iface)), "
        "or decorate the method with @aiopyramid_ng.helpers.synchronize. "
        f"{see('traversal-other-traversers')}"
    )


def _other_traversers(registry: Registry) -> list[Any]:
    return [
        registration.factory
        for registration in registry.registeredAdapters()
        if registration.provided is ITraverser and registration.factory is not AsyncTraverser
    ]


def includeme(config: Configurator) -> None:
    """Make :class:`AsyncTraverser` the default traverser and catch unawaited contexts.

    Only another traverser can leave an unawaited coroutine as the context,
    so the ``ContextFound`` check is subscribed only when the committed
    configuration registers one: an application that traverses with
    :class:`AsyncTraverser` alone (or uses URL dispatch only) notifies no
    per-request event on the add-on's account.
    """
    config.add_traverser(AsyncTraverser)
    registry = config.registry

    def check_contexts_if_other_traversers() -> None:
        if _other_traversers(registry):
            registry.registerHandler(_refuse_awaitable_context, (IContextFound,))

    config.action(
        None, check_contexts_if_other_traversers, order=ORDERS["check_unawaited_contexts"]
    )
