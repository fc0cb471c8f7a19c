"""A clear error for views that start an event loop of their own on the loop thread.

A view that runs in the request greenlet (a ``GreenletMapper`` view, a
coroutine view, or any view with ``aiopyramid_ng.pipeline = greenlet``) runs
on the thread of the event loop serving the request.  A library it calls that
starts its own loop there (``asyncio.run``, ``loop.run_until_complete``,
asgiref's ``async_to_sync``) fails with a ``RuntimeError`` that says nothing
about the fix.  The view deriver below re-raises it with one that does.
"""

from __future__ import annotations

from typing import Any

from pyramid.config import Configurator
from pyramid.interfaces import IRequest
from pyramid.util import object_description

__all__ = ["NESTED_LOOP_MESSAGES", "NestedLoopError", "includeme", "nested_loop_view"]

#: Fragments of the messages asyncio and asgiref raise in that case.
NESTED_LOOP_MESSAGES = (
    "cannot be called from a running event loop",
    "This event loop is already running",
    "You cannot use AsyncToSync in the same thread as an async event loop",
)


class NestedLoopError(RuntimeError):
    """A view tried to run an event loop on the thread of the running one."""


def _is_nested_loop_error(exc: RuntimeError) -> bool:
    text = str(exc)
    return any(fragment in text for fragment in NESTED_LOOP_MESSAGES)


def nested_loop_view(view: Any, info: Any) -> Any:
    """View deriver: explain a nested event loop, naming the view and the fix."""
    name = object_description(info.original_view)

    def loop_checked_view(context: Any, request: IRequest) -> Any:
        try:
            return view(context, request)
        except NestedLoopError:
            raise
        except RuntimeError as exc:
            if not _is_nested_loop_error(exc):
                raise
            raise NestedLoopError(
                f"{name} (or a library it calls) tried to start an event loop ({exc}) on the "
                "thread of the event loop serving the request. Run that blocking code in the "
                "thread pool: decorate the function with aiopyramid_ng.helpers.use_executor "
                "and await it from an async def view, or register the view with "
                "mapper=ExecutorMapper (a plain view), where a loop of its own is allowed. "
                "Better still, await the library's coroutine directly."
            ) from exc

    return loop_checked_view


def includeme(config: Configurator) -> None:
    """Add the :func:`nested_loop_view` deriver."""
    config.add_view_deriver(nested_loop_view)
