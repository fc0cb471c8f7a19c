"""Telling coroutine callables, and waiting for what a user's hook returns.

:func:`is_coroutine_callable` decides, from the original callable, whether a
view, tween, renderer, callback or ``__acl__`` is ``async def``.

Pyramid calls its hooks (security policies, traversal, tweens, subscribers,
callbacks) synchronously.  When a hook is a coroutine function, calling it
yields an awaitable that :func:`resolve` waits for wherever the call
happened: in a request greenlet (only that request waits), or in a worker
thread serving a request (the request's loop runs the awaitable).
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Awaitable
from typing import Any, TypeVar, cast

from pyramid.util import object_description

from .exceptions import ScopeError, see
from .helpers import synchronize

__all__ = ["describe", "is_awaitable", "is_coroutine_callable", "resolve"]

T = TypeVar("T")


def _is_coroutine_function(target: object) -> bool:
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.iscoroutinefunction(target):
        return True
    if callable(target) and not inspect.isroutine(target) and not inspect.isclass(target):
        # A callable instance: look at its class's __call__.
        return inspect.iscoroutinefunction(type(target).__call__)
    return False


def is_coroutine_callable(target: Any, attr: str | None = None) -> bool:
    """Tell whether calling ``target`` (or, for a class, its ``attr``) produces a coroutine.

    Looks through ``functools.partial`` and at a callable instance's
    ``__call__``; for a class, at the method a view mapper would call.
    """
    if inspect.isclass(target):
        return _is_coroutine_function(getattr(target, attr or "__call__", None))
    if attr is not None:
        return _is_coroutine_function(getattr(target, attr, None))
    return _is_coroutine_function(target)


def is_awaitable(value: object) -> bool:
    """:func:`inspect.isawaitable`, without its ABC ``isinstance`` for what is not awaitable.

    Called on what every hook returns, on every request: the ABC check
    costs more than the rest of the hook's wrapper.  A value is awaitable
    when it has ``__await__`` (coroutines, futures, tasks) or it is a
    generator-based coroutine (``types.coroutine``).
    """
    # Asked of the instance, not its class: a miss on a class raises (and
    # formats) an AttributeError inside getattr(), a miss on an instance does not.
    if hasattr(value, "__await__"):
        return True
    return type(value) is types.GeneratorType and bool(
        value.gi_code.co_flags & inspect.CO_ITERABLE_COROUTINE
    )


def describe(hook: object) -> str:
    """Name ``hook`` for an error message: its module and qualified name."""
    target = getattr(hook, "__wrapped__", hook)
    qualname = getattr(target, "__qualname__", None)
    module = getattr(target, "__module__", None)
    if qualname and module:
        return f"{module}.{qualname}"
    description: str = object_description(hook)
    return description


@synchronize
async def _wait(awaitable: Awaitable[T]) -> T:
    return await awaitable


def resolve(result: T | Awaitable[T], hook: object, fix: str) -> T:
    """Return ``result``, or what it resolves to when it is awaitable.

    :param hook: the callable that returned ``result``, named in errors.
    :param fix: how to make the call possible, appended to the error.
    :raises ScopeError: when the awaitable cannot be waited for here (the
        caller runs on the event loop outside any request greenlet, or in a
        thread that serves no request).
    """
    if result is None or not is_awaitable(result):
        return cast(T, result)  # the common case first: most hooks return None
    try:
        resolved: T = _wait(cast(Awaitable[T], result))
    except ScopeError as exc:
        if isinstance(result, types.CoroutineType):
            if inspect.getcoroutinestate(result) != inspect.CORO_CREATED:
                raise  # raised by the hook's own code, not by the waiting
            result.close()
        raise ScopeError(
            f"{describe(hook)} returned an awaitable, but it was called outside any request "
            "(on the event loop outside a request greenlet, or in a thread that serves no "
            f"request), where nothing can wait for it. {fix} {see('synchronize-errors')}"
        ) from exc
    return resolved
