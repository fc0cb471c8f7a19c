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
from typing import Any

from pyramid.interfaces import IRequest

__all__ = ["WeakRequestMethod", "WeaklyBound"]


class WeaklyBound:
    """``function`` called with a request it holds only weakly."""

    __slots__ = ("_docs", "_function", "_request")

    def __init__(self, function: Callable[..., Any], request: IRequest, docs: str):
        self._function = function
        self._request = weakref.ref(request)
        self._docs = docs

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self._request()
        if request is None:
            name = self._function.__name__
            raise ReferenceError(
                f"{name}() was kept past the end of its request; call request.{name}() on "
                f"the request that is running, not on one kept from an earlier request. "
                f"{self._docs}"
            )
        return self._function(request, *args, **kwargs)


class WeakRequestMethod:
    """What Pyramid binds per request: a :class:`WeaklyBound` instead of a bound method.

    :param function: called as ``function(request, *args, **kwargs)``.
    :param docs: the sentence that ends the error of a method kept past its
        request (``exceptions.see(label)``).
    """

    def __init__(self, function: Callable[..., Any], docs: str):
        self.function = function
        self.docs = docs

    def __repr__(self) -> str:
        # What Pyramid's introspection shows for the request method.
        return f"<WeakRequestMethod {self.function.__module__}.{self.function.__qualname__}>"

    def __get__(self, request: IRequest, cls: type | None = None) -> WeaklyBound:
        return WeaklyBound(self.function, request, self.docs)
