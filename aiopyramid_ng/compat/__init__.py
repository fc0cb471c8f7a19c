"""Adaptations of other libraries that assume one request per thread: one module each.

One rule decides whether an adaptation is installed: **the application uses
the library it adapts.**  For a Pyramid add-on that means the application
includes it, seen in the configuration the add-on leaves (its tween in the
tween chain, its utility in the registry); for a plain library, that the
application has imported it by the time it is created.  A library that is
merely installed is never touched.

* :mod:`.transaction`: a transaction per request, when pyramid_tm's tween
  is in the application's tween chain;
* :mod:`.debugtoolbar`: pyramid_debugtoolbar's logging and performance
  panels for interleaved requests, when the application includes the toolbar;
* :mod:`.sqlalchemy`: an error when requests share a SQLAlchemy session, when
  the application has imported SQLAlchemy's ORM by the time it is created.

Each is checked at commit and again when the application is created, so the
order of includes and commits does not matter.  Every adaptation and what it
changes is listed in :data:`ADAPTATIONS`; the setting
``aiopyramid_ng.compat.disable`` turns any of them off.  Nothing outside this
package imports it, and :mod:`aiopyramid_ng.asgi` never does.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from pyramid.config import Configurator
from pyramid.events import ApplicationCreated
from pyramid.exceptions import ConfigurationError
from pyramid.interfaces import ITweens
from pyramid.registry import Registry

from ..exceptions import see
from ..execution import adopt_execution_policy
from ..orders import ORDERS
from ..settings import COMPAT_DISABLE

log = logging.getLogger(__name__)

__all__ = ["ADAPTATIONS", "PYRAMID_TM_TWEEN", "includeme", "tween_names", "uses_pyramid_tm"]

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
    """Include the adaptations of the libraries the application uses, unless disabled."""
    disabled = set(COMPAT_DISABLE.read(config.get_settings()))
    unknown = disabled - set(ADAPTATIONS)
    if unknown:
        raise ConfigurationError(
            f"The setting {COMPAT_DISABLE.name} names {', '.join(sorted(unknown))}, which "
            f"aiopyramid_ng does not adapt; use names from: {', '.join(ADAPTATIONS)}. "
            f"{see('setting-compat-disable')}"
        )
    if "sqlalchemy" not in disabled:
        config.add_subscriber(_check_shared_sessions_if_used, ApplicationCreated)
    if "transaction" not in disabled:
        _adapt_transaction_if_used(config)
    if "debugtoolbar" not in disabled:
        config.action(None, _debugtoolbar_adapter(config.registry))
        config.add_subscriber(_toolbar_check(config.registry), ApplicationCreated)


#: The tween pyramid_tm adds: its presence in the tween chain is what
#: "the application includes pyramid_tm" means.
PYRAMID_TM_TWEEN = "pyramid_tm.tm_tween_factory"


def uses_pyramid_tm(registry: Registry) -> bool:
    """Return True when the application of ``registry`` includes pyramid_tm."""
    return PYRAMID_TM_TWEEN in tween_names(registry)


def _adapt_transaction_if_used(config: Configurator) -> None:
    """Adapt ``transaction`` at commit, and again when the application is created.

    The adaptation is imported only once pyramid_tm's tween is seen in the
    chain (pyramid_tm has imported ``transaction`` by then): an application
    without it does not pay for the package's import, about 0.75 MiB.
    """
    registry = config.registry

    def adapt_if_used() -> None:
        if uses_pyramid_tm(registry):
            from .transaction import adapt

            adapt(registry)

    def adapt_created(event: ApplicationCreated) -> None:
        if uses_pyramid_tm(registry):
            adapt_if_used()
            # The Router was made with the policy read before this adaptation.
            adopt_execution_policy(registry, event.app)

    config.action(None, adapt_if_used, order=ORDERS["wrap_transaction_policy"])
    config.add_subscriber(adapt_created, ApplicationCreated)


def tween_names(registry: Registry) -> set[str]:
    """Return the names of every tween configured for the application of ``registry``."""
    tweens = registry.queryUtility(ITweens)
    if tweens is None:
        return set()
    return {name for name, _ in tweens.explicit} | {name for name, _ in tweens.implicit()}


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


def _toolbar_check(registry: Registry) -> Callable[[ApplicationCreated], None]:
    def warn_if_missed(event: ApplicationCreated) -> None:
        # The toolbar resolves its panels when the Router builds its tweens,
        # just before this event: an adaptation installed now would come too
        # late.  That only happens when an autocommitting Configurator
        # includes the toolbar after aiopyramid_ng (whose check ran first).
        if "pyramid_debugtoolbar" in sys.modules:
            from .debugtoolbar import adapted

            if not adapted(registry):
                log.warning(
                    "pyramid_debugtoolbar was included after aiopyramid_ng by an "
                    "autocommitting Configurator, so its logging and performance panels are "
                    "not adapted to interleaved requests: include pyramid_debugtoolbar first."
                )

    return warn_if_missed
