"""The view deriver that awaits coroutine results other view mappers return."""

from __future__ import annotations

import inspect
from typing import Any

from pyramid.interfaces import IRequest, IViewMapperFactory

from .config import BridgeMapper
from .waiting import await_

__all__ = ["awaited_view"]


def _mapper_of(view: Any, info: Any) -> Any:
    # The order in which Pyramid's own mapped_view deriver picks a mapper.
    return (
        info.options.get("mapper")
        or getattr(view, "__view_mapper__", None)
        or info.registry.queryUtility(IViewMapperFactory)
    )


def awaited_view(view: Any, info: Any) -> Any:
    """Await the result of a view whose mapper returned an awaitable.

    Sits between ``mapped_view`` and ``rendered_view``, so it sees the raw
    result of any mapper (another add-on's, a class view's, a
    ``functools.partial`` of an ``async def``) before the renderer does.
    Views mapped by aiopyramid_ng's own mappers are left unwrapped.
    """
    mapper = _mapper_of(info.original_view, info)
    if isinstance(mapper, type) and issubclass(mapper, BridgeMapper):
        return view

    def awaiting_view(context: Any, request: IRequest) -> Any:
        result = view(context, request)
        if inspect.isawaitable(result):
            result = await_(result)
        return result

    return awaiting_view
