"""Run Pyramid 2 applications asynchronously on asyncio.

``config.include('aiopyramid_ng')`` makes an application serve coroutine
views, run plain views in a thread pool, and let synchronous framework code
wait on coroutines, under an ASGI server or a plain WSGI one.
"""

from __future__ import annotations

from pyramid.config import Configurator
from pyramid.events import ApplicationCreated

from . import threadlocal
from .asgi import make_asgi_app_directive
from .execution import adopt_execution_policy, wrap_execution_policy
from .executor import register_executor, set_executor
from .mappers import (
    CoroutineOrExecutorMapper,
    awaited_view,
    refuse_views_derived_before,
    views_derived_so_far,
)
from .orders import ORDERS
from .settings import check_settings

__all__ = ["includeme"]


def includeme(config: Configurator) -> None:
    """Set up aiopyramid_ng for the application being configured.

    * makes Pyramid's thread-local request/registry stack context-local
      (process-wide, idempotent);
    * checks every ``aiopyramid_ng.*`` setting at commit
      (:mod:`aiopyramid_ng.settings`);
    * sets :class:`~aiopyramid_ng.mappers.CoroutineOrExecutorMapper` as the
      default view mapper;
    * adds the ``awaited_view`` view deriver, which awaits a coroutine that
      any other mapper returns;
    * registers the application's thread pool (setting
      ``aiopyramid_ng.executor.max_workers``) and the ``set_executor``
      directive;
    * adds the ``make_asgi_app`` directive (see :mod:`aiopyramid_ng.asgi`);
    * wraps the execution policy so the Router runs in request greenlets
      (setting ``aiopyramid_ng.pipeline``);
    * adds ``request.add_background_task`` (see :mod:`aiopyramid_ng.background`);
    * sets up the adaptations of :mod:`aiopyramid_ng.compat` (a transaction
      per request for pyramid_tm, ...);
    * adds the view options ``timeout`` and ``max_concurrency`` (see
      :mod:`aiopyramid_ng.limits`).

    Every ordered action it registers is listed in :mod:`aiopyramid_ng.orders`.
    """
    threadlocal.install()
    config.add_directive("set_executor", set_executor)
    config.add_directive("make_asgi_app", make_asgi_app_directive)
    config.set_view_mapper(CoroutineOrExecutorMapper)
    config.add_view_deriver(awaited_view, under="rendered_view", over="mapped_view")

    registry = config.registry
    # Views already built when the add-on is first included in this registry
    # (by an earlier commit, or by an autocommitting Configurator) were built
    # without its mapper and deriver; a later include (another Configurator
    # over the same registry) changes nothing for them.
    built_before: set[int] = registry.__dict__.setdefault(
        "aiopyramid_ng_views_built_before", views_derived_so_far(registry)
    )

    def check_and_register_executor() -> None:
        check_settings(registry.settings)
        register_executor(registry)

    config.action(None, check_and_register_executor, order=ORDERS["register_executor"])
    config.action(
        None, lambda: wrap_execution_policy(registry), order=ORDERS["wrap_execution_policy"]
    )

    def adopt_final_policy(event: ApplicationCreated) -> None:
        # However the application was assembled (an autocommitting
        # Configurator, testing.setUp(), a policy set by a later commit), the
        # Router it made runs the final policy, wrapped.
        adopt_execution_policy(registry, event.app)
        refuse_views_derived_before(registry, built_before)

    config.add_subscriber(adopt_final_policy, ApplicationCreated)
    config.include(".debug")
    config.include(".subscribers")
    config.include(".security")
    config.include(".traversal")
    config.include(".tweens")
    config.include(".callbacks")
    config.include(".background")
    config.include(".renderers")
    config.include(".sessions")
    config.include(".websocket")
    config.include(".broadcast")
    config.include(".compat")
    config.include(".badrequests")
    config.include(".limits")
