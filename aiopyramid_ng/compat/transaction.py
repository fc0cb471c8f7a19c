"""One transaction per request for the ``transaction`` package (pyramid_tm, zope.sqlalchemy).

``transaction.manager`` is a ``ThreadTransactionManager``: a
``threading.local`` holding one ``TransactionManager`` per thread.  Requests
interleaved on the event loop thread would share it: a second request's
``begin()`` aborts the first one's transaction, and the first one's
``commit()`` then commits the second one's work.

:func:`install` makes that very object (``zope.sqlalchemy`` and pyramid_tm's
``request.tm`` import it by name, so it cannot be replaced) context-local:
while a request runs, it delegates to a ``TransactionManager`` of the
request's own, held in a :class:`~contextvars.ContextVar`; outside any request
(scripts, tests, start-up code) it delegates to the thread's, as before.

:class:`RequestTransactionPolicy` wraps the application's execution policy
to give each request its fresh manager.  Everything of that request sees the
same manager object: the request greenlet shares the request Task's context,
and a worker thread running an executor view (or the whole pipeline, with
``aiopyramid_ng.pipeline = executor``) runs with a copy of that context,
which refers to the same manager.  A manager set in start-up code is never
inherited by the requests, whatever context the server creates their Tasks
from.

Applications that configure ``tm.manager_hook = pyramid_tm.explicit_manager``
(as the cookiecutter does) already get a manager per request from pyramid_tm;
both ways work.  Either way, the transaction of a request that is cancelled
(its client disconnected) is aborted before the request ends.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar
from typing import Any

import transaction
from pyramid.interfaces import IExecutionPolicy
from pyramid.registry import Registry
from pyramid.router import Router, default_execution_policy
from transaction import ThreadTransactionManager, TransactionManager
from zope.interface import implementer

from ..bridge import direct_call
from ..execution import GreenletExecutionPolicy
from ..types import Environ
from . import uses_pyramid_tm

__all__ = [
    "ContextTransactionManager",
    "RequestTransactionPolicy",
    "adapt",
    "install",
]


class _RequestManager:
    """A request's transaction manager, made on first use.

    Most requests of most applications never touch ``transaction.manager``;
    a ``TransactionManager`` (with its weak-reference containers) for each of
    them would be a measurable share of a request's cost.
    """

    __slots__ = ("explicit", "manager")

    def __init__(self, explicit: bool):
        self.explicit = explicit
        self.manager: TransactionManager | None = None

    def get(self) -> TransactionManager:
        manager = self.manager
        if manager is None:
            # A request's executor thread and its greenlet may ask at once.
            with _making:
                manager = self.manager
                if manager is None:
                    manager = self.manager = TransactionManager(explicit=self.explicit)
        return manager


_making = threading.Lock()
_request_manager: ContextVar[_RequestManager] = ContextVar("aiopyramid_ng.transaction")


class ContextTransactionManager(ThreadTransactionManager):  # type: ignore[misc]
    """A ``ThreadTransactionManager`` whose ``manager`` is the current request's."""

    @property
    def manager(self) -> TransactionManager:
        """The current request's manager, or this thread's outside requests."""
        current = _request_manager.get(None)
        if current is not None:
            return current.get()
        # threading.local's __dict__ is the calling thread's own.
        thread_manager: TransactionManager = self.__dict__["manager"]
        return thread_manager

    @manager.setter
    def manager(self, value: TransactionManager) -> None:
        # threading.local re-runs ThreadTransactionManager.__init__ in every
        # new thread, which assigns a fresh manager here: the thread's own,
        # used outside requests (where the stock class keeps it too, so
        # threads that used the manager before install() keep theirs).
        self.__dict__["manager"] = value


def install() -> None:
    """Make ``transaction.manager`` context-local.  Idempotent.

    Every thread keeps the manager (and any transaction) it had.
    """
    manager = transaction.manager
    if not isinstance(manager, ContextTransactionManager):
        manager.__class__ = ContextTransactionManager


@implementer(IExecutionPolicy)
class RequestTransactionPolicy:
    """Run ``policy`` (an execution policy) with a transaction manager of its own.

    The new manager is explicit when the one it replaces is (an application
    may set ``transaction.manager.explicit = True`` at start-up).
    """

    def __init__(self, policy: Any = default_execution_policy):
        self.policy = policy
        self._call_policy = direct_call(policy)

    def __call__(self, environ: Environ, router: Router) -> Any:
        # A manager handed in with the request (the cookiecutter's test
        # harness passes its own doomed transaction through WebTest's
        # extra_environ, with tm.active) belongs to the caller: pyramid_tm
        # neither begins nor ends it, and neither may this policy.
        given = environ.get("tm.manager")
        token = _request_manager.set(_RequestManager(transaction.manager.explicit))
        try:
            return self._call_policy(environ, router)
        finally:
            try:
                _abort_unfinished(environ, given)
            finally:
                _request_manager.reset(token)

    def __repr__(self) -> str:
        return f"<RequestTransactionPolicy around {self.policy!r}>"


def _abort_unfinished(environ: Environ, given: object) -> None:
    """Abort the transaction pyramid_tm began but could not finish.

    pyramid_tm commits or aborts on every outcome an ``Exception`` covers,
    and then removes ``tm.manager`` from the environ.  A request cancelled
    (its client disconnected) or closed unwinds with a ``BaseException``
    instead, which pyramid_tm lets through: its transaction, and the
    database connection its sessions hold, would stay open until garbage
    collection.  ``given``, the manager the environ arrived with, is the
    caller's and is left alone.
    """
    manager = environ.get("tm.manager")
    if manager is not None and manager is not given:
        del environ["tm.manager"]
        environ.pop("tm.active", None)
        manager.abort()


def _wrap(policy: Any) -> Any:
    if isinstance(policy, RequestTransactionPolicy):
        return policy
    return RequestTransactionPolicy(policy)


def adapt(registry: Registry) -> None:
    """Install the adaptation for the application of ``registry`` if it uses pyramid_tm.

    Idempotent and independent of the order things were configured in: the
    request's own manager is set inside the request greenlet (or the worker
    thread), whether :class:`~aiopyramid_ng.execution.GreenletExecutionPolicy`
    is installed yet or not.
    """
    if not uses_pyramid_tm(registry):
        return
    install()
    policy = registry.queryUtility(IExecutionPolicy, default=default_execution_policy)
    if isinstance(policy, GreenletExecutionPolicy):
        policy.wrap_inner(_wrap)
    else:
        registry.registerUtility(_wrap(policy), IExecutionPolicy)
