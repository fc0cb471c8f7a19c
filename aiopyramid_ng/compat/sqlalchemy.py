"""Catch a SQLAlchemy ``Session`` shared by requests that run interleaved.

On a threaded server, ``scoped_session(factory)`` gives each thread, hence
each request, a session of its own.  On the event loop every request runs in
the same thread: a thread-scoped ``scoped_session`` (or a module-level
``Session``) is one session for all of them, so their queries, flushes,
commits and rollbacks mix.  Scope sessions to the request instead
(``config.add_request_method(..., 'dbsession', reify=True)``).

Once included, every ``Session`` records the request that began its
transaction; when another request, still running, uses it before that
request has finished, :class:`~aiopyramid_ng.exceptions.SharedSessionError`
is raised there and then, before the statement or flush runs.  A request is
identified by the outermost request of the calling context, so subrequests,
executor threads and tasks started by a request count as that request; code
outside any request is not checked.
"""

from __future__ import annotations

import weakref
from typing import Any

from pyramid.config import Configurator
from pyramid.interfaces import IRequest
from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session

from ..exceptions import SharedSessionError, see
from ..threadlocal import outermost_request

__all__ = ["includeme", "install"]

_OWNER = "aiopyramid_ng.request"


def _describe(request: IRequest) -> str:
    return f"{request.method} {request.path_qs}"


def _claim(session: Session, transaction: Any, connection: Any) -> None:
    request = outermost_request()
    if request is None:
        return
    claim = weakref.ref(request)
    session.info[_OWNER] = claim

    def release(request: IRequest) -> None:
        if session.info.get(_OWNER) is claim:
            del session.info[_OWNER]

    request.add_finished_callback(release)


def _check(session: Session) -> None:
    claim = session.info.get(_OWNER)
    owner = claim() if claim is not None else None
    if owner is None:
        return
    current = outermost_request()
    if current is None or current is owner:
        return
    raise SharedSessionError(
        f"The SQLAlchemy session {session!r} began its transaction in request "
        f"{_describe(owner)}, which is still running, and is now used by request "
        f"{_describe(current)}. Requests served on the event loop run interleaved in one "
        "thread, so a module-level Session or a scoped_session scoped to the thread (the "
        "default) is shared by all of them and mixes their transactions. Create a session "
        "per request instead: config.add_request_method(lambda request: factory(), "
        "'dbsession', reify=True), and close it in a finished callback. "
        f"{see('sqlalchemy-session-per-request')}"
    )


def _check_execute(state: ORMExecuteState) -> None:
    _check(state.session)


def _check_flush(session: Session, flush_context: Any, instances: Any) -> None:
    _check(session)


_LISTENERS = (
    ("after_begin", _claim),
    ("do_orm_execute", _check_execute),
    ("before_flush", _check_flush),
)


def install() -> None:
    """Listen to every ``Session``'s events, process-wide.  Idempotent."""
    for name, listener in _LISTENERS:
        if not event.contains(Session, name, listener):
            event.listen(Session, name, listener)


def includeme(config: Configurator) -> None:
    """Install the check."""
    install()
