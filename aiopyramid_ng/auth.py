"""Legacy (Pyramid 1.x style) authentication policies with a coroutine callback.

Pyramid 2 deprecates authentication and authorization policies in favour of
security policies (see :mod:`aiopyramid_ng.security`); applications that
still use them can keep aiopyramid's factory::

    async def get_principals(userid, request):
        user = await users.load(userid)
        return user.groups if user else None

    config.set_authorization_policy(ACLAuthorizationPolicy())
    config.set_authentication_policy(
        authn_policy_factory(AuthTktAuthenticationPolicy, get_principals, "secret")
    )

The policy's methods are then plain calls wherever Pyramid or the
application calls them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from pyramid.interfaces import IRequest

from .coroutines import resolve

__all__ = ["authn_policy_factory"]

PolicyT = TypeVar("PolicyT")

_FIX = (
    "Authenticate from request code (a view, tween or subscriber), or run the caller with "
    "`await aiopyramid_ng.helpers.spawn_greenlet(func, ...)`."
)


def _bridged_callback(callback: Callable[[Any, IRequest], Any]) -> Callable[[Any, IRequest], Any]:
    @functools.wraps(callback)
    def principals_of(userid: Any, request: IRequest) -> Any:
        return resolve(callback(userid, request), callback, _FIX)

    return principals_of


def authn_policy_factory(
    policy_class: Callable[..., PolicyT],
    callback: Callable[[Any, IRequest], Any] | None = None,
    *args: Any,
    **kwargs: Any,
) -> PolicyT:
    """Build ``policy_class(*args, callback=..., **kwargs)`` around a coroutine ``callback``.

    ``callback(userid, request)`` may be an ``async def`` function (or return
    any awaitable); the policy receives a plain callable that waits for it,
    so ``authenticated_userid`` and ``effective_principals`` return values,
    never coroutines, from coroutine views, executor views and hooks alike.
    A plain ``callback`` is passed on as is; with none, the policy is built
    without one.
    """
    if callback is not None:
        kwargs["callback"] = _bridged_callback(callback)
    return policy_class(*args, **kwargs)
