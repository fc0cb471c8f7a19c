"""Adaptations of other libraries that assume one request per thread: one module each.

Included by ``config.include('aiopyramid_ng')``:

* :mod:`.sqlalchemy`: an error when requests share a SQLAlchemy session
  (when the application has imported SQLAlchemy's ORM by the time it is
  created);
* :mod:`.debugtoolbar`: pyramid_debugtoolbar's logging and performance
  panels for interleaved requests (when the application includes it);
* :mod:`.transaction`: a transaction per request (when the ``transaction``
  package is installed).

Nothing outside this package imports it, and :mod:`aiopyramid_ng.asgi`
never does.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib.util import find_spec

from pyramid.config import Configurator
from pyramid.events import ApplicationCreated
from pyramid.exceptions import ConfigurationError
from pyramid.registry import Registry

from ..settings import COMPAT_DISABLE

__all__ = ["ADAPTATIONS", "includeme"]

#: The adaptations by name (the names ``aiopyramid_ng.compat.disable`` takes),
#: each with every object of another library it changes.
ADAPTATIONS: dict[str, str] = {
    "transaction": "transaction.manager: its class becomes ContextTransactionManager; the "
    "application's execution policy is wrapped in RequestTransactionPolicy",
    "sqlalchemy": "sqlalchemy.orm.Session: process-wide listeners for after_begin, "
    "do_orm_execute and before_flush",
    "debugtoolbar": "pyramid_debugtoolbar's logging and performance panels, replaced by "
    "add_debugtoolbar_panel; its logging handler moved off the root logger",
}


def includeme(config: Configurator) -> None:
    """Include the adaptations for the libraries that are installed, unless disabled."""
    disabled = set(COMPAT_DISABLE.read(config.get_settings()))
    unknown = disabled - set(ADAPTATIONS)
    if unknown:
        raise ConfigurationError(
            f"The setting {COMPAT_DISABLE.name} names {', '.join(sorted(unknown))}, which "
            f"aiopyramid_ng does not adapt; use names from: {', '.join(ADAPTATIONS)}."
        )
    if "sqlalchemy" not in disabled:
        config.add_subscriber(_check_shared_sessions_if_used, ApplicationCreated)
    if "transaction" not in disabled and find_spec("transaction") is not None:
        config.include(".transaction")
    if "debugtoolbar" not in disabled:
        config.action(None, _debugtoolbar_adapter(config.registry))


def _check_shared_sessions_if_used(event: ApplicationCreated) -> None:
    # Not imported for an application that does not use it: SQLAlchemy is
    # large (its import adds about 30,000 objects, which every full garbage
    # collection walks, and 17 MiB of peak memory).  An application that uses it has
    # imported its ORM by the time the application is created.
    if "sqlalchemy.orm" in sys.modules:
        from .sqlalchemy import install

        install()


def _debugtoolbar_adapter(registry: Registry) -> Callable[[], None]:
    def adapt_if_included() -> None:
        # An application that includes the toolbar has imported it by now;
        # importing it otherwise would add its logging panel's handler to the
        # root logger and silence Python's last-resort stderr output.
        if "pyramid_debugtoolbar" in sys.modules:
            from .debugtoolbar import install

            install(registry)

    return adapt_if_included
