"""Pyramid 2 security policies whose methods may be coroutine functions.

A policy registered with ``config.set_security_policy`` may implement any of
``identity``, ``authenticated_userid``, ``permits``, ``remember`` and
``forget`` as ``async def`` (or call ``@synchronize``\\ d helpers).
``config.include('aiopyramid_ng')`` registers a :class:`BridgedSecurityPolicy`
around it, so ``request.identity``, ``request.authenticated_userid``,
``request.is_authenticated``, ``request.has_permission()``, view
``permission=`` checks, ``remember()`` and ``forget()`` stay plain attributes
and calls everywhere: in coroutine views, executor views, tweens and
subscribers.

``__acl__`` may be a list, a callable, an ``async def`` method or a
``@synchronize``\\ d one.  Pyramid's own
:class:`pyramid.authorization.ACLHelper` calls a callable ``__acl__`` but
cannot wait for a coroutine: use :class:`ACLHelper` from this module in the
policy instead (same API).
"""

from __future__ import annotations

import inspect
import traceback
import types
from collections.abc import Iterator, Sequence
from typing import Any

from pyramid.authorization import ACLHelper as PyramidACLHelper
from pyramid.config import Configurator
from pyramid.events import ApplicationCreated
from pyramid.exceptions import ConfigurationError
from pyramid.interfaces import IRequest, ISecurityPolicy
from pyramid.location import lineage
from pyramid.request import RequestLocalCache
from pyramid.security import LegacySecurityPolicy
from zope.interface import implementer

from .coroutines import describe, is_awaitable, is_coroutine_callable, resolve
from .exceptions import see
from .orders import ORDERS

__all__ = ["ACLHelper", "BridgedSecurityPolicy", "includeme"]


POLICY_METHODS = ("identity", "authenticated_userid", "permits", "remember", "forget")

_POLICY_FIX = (
    "Read it from request code (a view, tween or subscriber), or run the caller with "
    "`await aiopyramid_ng.helpers.spawn_greenlet(func, ...)`."
)
_ACL_FIX = "Read ACLs from request code, or with `await spawn_greenlet(func, ...)`."


@implementer(ISecurityPolicy)
class BridgedSecurityPolicy:
    """The registered :class:`~pyramid.interfaces.ISecurityPolicy` around the application's own.

    Each method calls the same method of ``policy`` and, when it returns an
    awaitable, waits for it (see :func:`aiopyramid_ng.coroutines.resolve`).  An
    awaited ``identity`` or ``authenticated_userid`` is cached for the rest of
    the request, whether it is read next from the request greenlet or from an
    executor thread, so I/O behind it runs once per request.  Results of
    plain methods are not cached here: a synchronous policy keeps whatever
    caching it does itself (``RequestLocalCache``).  Other attributes are
    read from ``policy``.
    """

    def __init__(self, policy: Any):
        self.policy = policy
        self._identities = RequestLocalCache()
        self._userids = RequestLocalCache()

    def _cached(self, cache: RequestLocalCache, request: IRequest, method: Any) -> Any:
        value = cache.get(request)
        if value is not cache.NO_VALUE:
            return value
        result = method(request)
        if is_awaitable(result):
            value = resolve(result, method, _POLICY_FIX)
            cache.set(request, value)
            return value
        return result

    def identity(self, request: IRequest) -> Any:
        return self._cached(self._identities, request, self.policy.identity)

    def authenticated_userid(self, request: IRequest) -> Any:
        return self._cached(self._userids, request, self.policy.authenticated_userid)

    def permits(self, request: IRequest, context: Any, permission: str) -> Any:
        try:
            return resolve(
                self.policy.permits(request, context, permission),
                self.policy.permits,
                _POLICY_FIX,
            )
        except TypeError as exc:
            _explain_unawaited_acl(exc, context)
            raise

    def remember(self, request: IRequest, userid: Any, **kw: Any) -> Sequence[tuple[str, str]]:
        headers: Sequence[tuple[str, str]] = resolve(
            self.policy.remember(request, userid, **kw), self.policy.remember, _POLICY_FIX
        )
        return headers

    def forget(self, request: IRequest, **kw: Any) -> Sequence[tuple[str, str]]:
        headers: Sequence[tuple[str, str]] = resolve(
            self.policy.forget(request, **kw), self.policy.forget, _POLICY_FIX
        )
        return headers

    def __getattr__(self, name: str) -> Any:
        return getattr(self.policy, name)

    def __repr__(self) -> str:
        return f"<BridgedSecurityPolicy around {self.policy!r}>"


def _async_acl_in(context: Any) -> Any:
    for location in lineage(context):
        acl = getattr(location, "__acl__", None)
        if acl is not None and is_coroutine_callable(acl):
            return acl
    return None


def _explain_unawaited_acl(exc: TypeError, context: Any) -> None:
    """Turn the TypeError Pyramid's ACLHelper raises on an async ``__acl__`` into a clear one."""
    acl = _async_acl_in(context)
    if acl is None:
        return
    # The coroutine Pyramid's ACLHelper made and tried to iterate: close it so
    # it does not also warn that it was never awaited.
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        for value in frame.f_locals.values():
            if (
                isinstance(value, types.CoroutineType)
                and inspect.getcoroutinestate(value) == inspect.CORO_CREATED
            ):
                value.close()
    raise TypeError(
        f"{describe(acl)} is a coroutine function, and the security policy's ACL check "
        "iterated the coroutine it returned instead of awaiting it (pyramid.authorization."
        "ACLHelper does so). Use aiopyramid_ng.security.ACLHelper in the policy, or "
        f"decorate __acl__ with @aiopyramid_ng.helpers.synchronize. {see('security-acls')}"
    ) from exc


class _AwaitedLocation:
    """Stands for a resource while :class:`ACLHelper` walks its lineage.

    Pyramid's helper reads only ``__acl__`` and ``__parent__``; this object
    resolves the resource's ``__acl__`` when it is read, so ancestors whose
    ACL is never reached are never awaited.  A missing attribute raises
    ``AttributeError``, as on the resource.
    """

    __slots__ = ("resource",)

    def __init__(self, resource: Any):
        self.resource = resource

    @property
    def __parent__(self) -> _AwaitedLocation | None:
        parent = self.resource.__parent__
        return None if parent is None else _AwaitedLocation(parent)

    @property
    def __acl__(self) -> Any:
        acl = self.resource.__acl__
        if acl and callable(acl):
            return resolve(acl(), acl, _ACL_FIX)
        return acl


class ACLHelper(PyramidACLHelper):  # type: ignore[misc]
    """:class:`pyramid.authorization.ACLHelper` that waits for ``async def __acl__`` methods.

    Use it in a security policy exactly like Pyramid's::

        from aiopyramid_ng.security import ACLHelper

        def permits(self, request, context, permission):
            principals = ...
            return ACLHelper().permits(context, principals, permission)

    The results (``ACLAllowed``/``ACLDenied``) name the real context.
    """

    def permits(self, context: Any, principals: Sequence[str], permission: str) -> Any:
        """Return ``ACLAllowed`` or ``ACLDenied`` as Pyramid's helper does, for ``context``."""
        result = super().permits(_AwaitedLocation(context), principals, permission)
        result.context = context
        return result

    def principals_allowed_by_permission(self, context: Any, permission: str) -> set[str]:
        """Return the principals granted ``permission`` on ``context``, as Pyramid's helper does."""
        allowed: set[str] = super().principals_allowed_by_permission(
            _AwaitedLocation(context), permission
        )
        return allowed


def _async_methods(policy: Any) -> Iterator[str]:
    for name in POLICY_METHODS:
        method = getattr(policy, name, None)
        if method is not None and is_coroutine_callable(method):
            yield name


def includeme(config: Configurator) -> None:
    """Register :class:`BridgedSecurityPolicy` around the application's security policy."""
    registry = config.registry

    def wrap_policy() -> None:
        policy = registry.queryUtility(ISecurityPolicy)
        # Pyramid looks for LegacySecurityPolicy by type (effective_principals);
        # its authentication policy bridges its own callback (auth.py).
        if policy is not None and not isinstance(
            policy, BridgedSecurityPolicy | LegacySecurityPolicy
        ):
            registry.registerUtility(BridgedSecurityPolicy(policy), ISecurityPolicy)

    def check_policy(event: ApplicationCreated) -> None:
        # A policy set in a later commit than the include was never wrapped,
        # and views built since hold it: an async permits() would return a
        # coroutine, which is true, and grant every permission.
        policy = registry.queryUtility(ISecurityPolicy)
        if policy is None or isinstance(policy, BridgedSecurityPolicy | LegacySecurityPolicy):
            return
        methods = ", ".join(_async_methods(policy))
        if methods:
            raise ConfigurationError(
                f"The security policy {policy!r} has coroutine methods ({methods}) but was "
                "registered after the commit that included aiopyramid_ng, so it was not "
                "wrapped. Call config.set_security_policy() in the same commit as "
                "config.include('aiopyramid_ng') (before make_wsgi_app(), with no "
                f"config.commit() between them). {see('security-policy-commit')}"
            )

    config.action(None, wrap_policy, order=ORDERS["wrap_security_policy"])
    config.add_subscriber(check_policy, ApplicationCreated)
