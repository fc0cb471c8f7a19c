"""Request methods bound through a weak reference to their request.

Pyramid binds every ``add_request_method`` callable to each new request and
stores the bound method in the request's ``__dict__``: a reference cycle that
only the cyclic garbage collector can free.  Under load those cycles made the
collector run about five times as often as it does without them, so the
add-on's request methods (``add_response_callback``,
``add_finished_callback``, ``broadcast``) are bound through a weak reference
to the request instead::

    config.add_request_method(WeakRequestMethod(broadcast, see("websocket-groups")), "broadcast")
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from types import MethodType
from typing import Any

from pyramid.interfaces import IRequest

__all__ = ["WeakRequestMethod"]


class WeakRequestMethod:
    """What Pyramid binds per request: a method bound to a weak reference to the request.

    :param function: called as ``function(request, *args, **kwargs)``.
    :param docs: the sentence that ends the error of a method kept past its
        request (``exceptions.see(label)``).

    Pyramid binds every request method to each new request, so binding is
    on every request's path: it costs one Python call here, the rest (the
    weak reference, the bound method) is built in C.
    """

    def __init__(self, function: Callable[..., Any], docs: str):
        self.function = function
        self.docs = docs
        name = function.__name__

        def call_weakly(request_ref: weakref.ref[Any], /, *args: Any, **kwargs: Any) -> Any:
            request = request_ref()
            if request is None:
                raise ReferenceError(
                    f"{name}() was kept past the end of its request; call request.{name}() on "
                    f"the request that is running, not on one kept from an earlier request. "
                    f"{docs}"
                )
            return function(request, *args, **kwargs)

        self._call_weakly = call_weakly

    def __repr__(self) -> str:
        # What Pyramid's introspection shows for the request method.
        return f"<WeakRequestMethod {self.function.__module__}.{self.function.__qualname__}>"

    def __get__(self, request: IRequest, cls: type | None = None) -> Callable[..., Any]:
        return MethodType(self._call_weakly, weakref.ref(request))
