"""Run Pyramid 2 applications asynchronously on asyncio.

``config.include('aiopyramid_ng')`` makes an application serve coroutine
views, run plain views in a thread pool, and let synchronous framework code
wait on coroutines, under an ASGI server or a plain WSGI one.
"""

from __future__ import annotations

from concurrent.futures import Executor

from pyramid.config import Configurator
from pyramid.events import ApplicationCreated
from pyramid.exceptions import ConfigurationError
from pyramid.interfaces import PHASE0_CONFIG, IExecutionPolicy
from pyramid.router import default_execution_policy

from . import threadlocal
from .asgi import make_asgi_app_directive
from .config import CoroutineOrExecutorMapper
from .debug import blocking_ms_from_settings
from .derivers import awaited_view
from .executor import AppExecutor, max_workers_from_settings
from .interfaces import IAppExecutor
from .wsgi import GreenletExecutionPolicy, pipeline_from_settings

__all__ = ["includeme"]

#: Runs after every ordinary configuration action, so the execution policy it
#: wraps is the final one whichever add-on (pyramid_retry, ...) set it.
WRAP_POLICY_ORDER = 10_000


def set_executor(config: Configurator, executor: Executor) -> None:
    """Config directive: run the application's blocking work in ``executor``.

    The application does not own an executor given this way: shutting the
    application down leaves it running.
    """

    def register() -> None:
        config.registry.registerUtility(AppExecutor(executor=executor), IAppExecutor)

    config.action(IAppExecutor, register)


def includeme(config: Configurator) -> None:
    """Set up aiopyramid_ng for the application being configured.

    * makes Pyramid's thread-local request/registry stack context-local
      (process-wide, idempotent);
    * sets :class:`~aiopyramid_ng.config.CoroutineOrExecutorMapper` as the
      default view mapper;
    * adds the ``awaited_view`` view deriver, which awaits a coroutine that
      any other mapper returns;
    * registers the application's thread pool (setting
      ``aiopyramid_ng.executor.max_workers``) and the ``set_executor``
      directive;
    * adds the ``make_asgi_app`` directive (see :mod:`aiopyramid_ng.asgi`);
    * wraps the execution policy so the Router runs in request greenlets
      (setting ``aiopyramid_ng.pipeline``);
    * sets up the integrations of :mod:`aiopyramid_ng.addons` (a transaction
      per request for pyramid_tm, ...).
    """
    threadlocal.install()
    config.add_directive("set_executor", set_executor)
    config.add_directive("make_asgi_app", make_asgi_app_directive)
    config.set_view_mapper(CoroutineOrExecutorMapper)
    config.add_view_deriver(awaited_view, under="rendered_view", over="mapped_view")

    registry = config.registry

    def register_executor() -> None:
        # Runs early, so the setting is checked at commit and set_executor()
        # (ordinary order) replaces the default pool.
        max_workers = max_workers_from_settings(registry.settings)
        registry.registerUtility(AppExecutor(max_workers), IAppExecutor)

    def wrap_execution_policy() -> None:
        settings = registry.settings
        pipeline = pipeline_from_settings(settings)
        blocking_ms = blocking_ms_from_settings(settings)
        policy = registry.queryUtility(IExecutionPolicy, default=default_execution_policy)
        if not isinstance(policy, GreenletExecutionPolicy):
            wrapped = GreenletExecutionPolicy(policy, pipeline, blocking_ms)
            registry.registerUtility(wrapped, IExecutionPolicy)

    config.action(None, register_executor, order=PHASE0_CONFIG)
    config.action(None, wrap_execution_policy, order=WRAP_POLICY_ORDER)

    def check_execution_policy(event: ApplicationCreated) -> None:
        policy = registry.queryUtility(IExecutionPolicy)
        if not isinstance(policy, GreenletExecutionPolicy):
            raise ConfigurationError(
                f"The execution policy {policy!r} replaced the one aiopyramid_ng installs, so "
                "requests would not run in request greenlets: it was set after a "
                "config.commit() that followed config.include('aiopyramid_ng'). Call "
                "set_execution_policy() (or include the add-on that sets it) before that commit."
            )

    config.add_subscriber(check_execution_policy, ApplicationCreated)
    config.include(".debug")
    config.include(".subscribers")
    config.include(".security")
    config.include(".traversal")
    config.include(".tweens")
    config.include(".callbacks")
    config.include(".renderers")
    config.include(".websocket")
    config.include(".addons")
