"""Integration with Pyramid add-ons and libraries that assume one request per thread.

Included by ``config.include('aiopyramid_ng')``:

* :mod:`~aiopyramid_ng.dbsessions`: an error when requests share a
  SQLAlchemy session (when the application has imported SQLAlchemy's ORM
  by the time it is created);
* :mod:`~aiopyramid_ng.nestedloops`: a clear error for a view that starts an
  event loop of its own on the loop thread;
* :mod:`~aiopyramid_ng.sessions`: ``async def`` session factories;
* :mod:`~aiopyramid_ng.toolbar`: pyramid_debugtoolbar's logging and
  performance panels for interleaved requests (when the application
  includes it);
* :mod:`~aiopyramid_ng.transaction`: a transaction per request (when the
  ``transaction`` package is installed).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib.util import find_spec

from pyramid.config import Configurator
from pyramid.events import ApplicationCreated
from pyramid.registry import Registry

__all__ = ["includeme"]


def includeme(config: Configurator) -> None:
    """Include the integrations for the add-ons that are installed."""
    config.include(".nestedloops")
    config.include(".sessions")
    config.add_subscriber(_check_shared_sessions_if_used, ApplicationCreated)
    if find_spec("transaction") is not None:
        config.include(".transaction")
    if find_spec("pyramid_debugtoolbar") is not None:
        config.action(None, _debugtoolbar_adapter(config.registry))


def _check_shared_sessions_if_used(event: ApplicationCreated) -> None:
    # Not imported for an application that does not use it: SQLAlchemy is
    # large (its import adds about 30,000 objects, which every full garbage
    # collection walks, and 17 MiB of peak memory).  An application that uses it has
    # imported its ORM by the time the application is created.
    if "sqlalchemy.orm" in sys.modules:
        from .dbsessions import install

        install()


def _debugtoolbar_adapter(registry: Registry) -> Callable[[], None]:
    def adapt_if_included() -> None:
        # Imported only for applications that include the toolbar: importing
        # its logging panel adds a handler to the root logger, which would
        # silence Python's last-resort stderr output everywhere else.
        from pyramid_debugtoolbar.toolbar import IToolbarWSGIApp

        if registry.queryUtility(IToolbarWSGIApp) is not None:
            from .toolbar import install

            install()

    return adapt_if_included
