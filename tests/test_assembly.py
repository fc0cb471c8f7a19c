"""Including the add-on works however the application is assembled.

Autocommitting Configurators, ``pyramid.testing.setUp()``, includes in either
order, includes and policies after a commit, several Configurators over one
registry, ``config.with_package``: each way ends with one
:class:`~aiopyramid_ng.execution.GreenletExecutionPolicy` at the outside of
the execution policy chain, at most one transaction layer inside it, and a
Router that runs that chain.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import transaction
from pyramid import testing
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError
from pyramid.interfaces import IExecutionPolicy
from pyramid.registry import Registry
from pyramid.request import Request
from pyramid.router import Router
from webtest import TestApp

from aiopyramid_ng.asgi import make_asgi_app
from aiopyramid_ng.bridge import in_bridge
from aiopyramid_ng.compat.transaction import ContextTransactionManager, RequestTransactionPolicy
from aiopyramid_ng.execution import GreenletExecutionPolicy
from aiopyramid_ng.helpers import synchronize
from aiopyramid_ng.testing import TestApp as ASGITestApp


@synchronize
async def _doubled(text: str) -> str:
    await asyncio.sleep(0)
    return text * 2


async def coroutine_view(request: Request) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"said": _doubled("a"), "bridged": in_bridge()}


def greenlet_probe(request: Request) -> dict[str, Any]:
    # A plain view runs in the thread pool; what it reports is the policy chain's effect.
    return {"manager": type(transaction.manager).__name__}


def add_views(config: Configurator) -> None:
    config.add_route("coro", "/coro")
    config.add_view(coroutine_view, route_name="coro", renderer="json")
    config.add_route("probe", "/probe")
    config.add_view(greenlet_probe, route_name="probe", renderer="json")


def recording_policy(calls: list[str]) -> Callable[[dict[str, Any], Router], Any]:
    def policy(environ: dict[str, Any], router: Router) -> Any:
        calls.append(environ["PATH_INFO"])
        with router.request_context(environ) as request:
            return router.invoke_request(request)

    return policy


def chain_of(policy: Any) -> list[Any]:
    chain = [policy]
    while hasattr(chain[-1], "policy"):
        chain.append(chain[-1].policy)
    return chain


def assert_served(app: Router) -> list[Any]:
    """Assert ``app`` serves a coroutine view in a request greenlet, both ways."""
    registered = app.registry.getUtility(IExecutionPolicy)
    assert app.execution_policy is registered
    chain = chain_of(registered)
    assert isinstance(chain[0], GreenletExecutionPolicy)
    assert sum(isinstance(layer, GreenletExecutionPolicy) for layer in chain) == 1
    assert sum(isinstance(layer, RequestTransactionPolicy) for layer in chain) <= 1
    expected = {"said": "aa", "bridged": True}
    assert TestApp(app).get("/coro").json == expected
    with ASGITestApp(make_asgi_app(app)) as client:
        assert client.get("/coro").json == expected
    return chain


@pytest.fixture
def setup_teardown() -> Iterator[None]:
    yield
    testing.tearDown()


def test_an_autocommitting_configurator_includes_the_add_on_first() -> None:
    calls: list[str] = []
    config = Configurator(autocommit=True)
    config.include("aiopyramid_ng")
    config.set_execution_policy(recording_policy(calls))
    add_views(config)
    chain = assert_served(config.make_wsgi_app())
    assert calls == ["/coro", "/coro"]
    assert len(chain) == 2


def test_testing_setup_then_the_include(setup_teardown: None) -> None:
    config = testing.setUp()
    config.include("aiopyramid_ng")
    add_views(config)
    assert_served(config.make_wsgi_app())


def test_a_policy_set_after_the_commit_is_wrapped_when_the_app_is_made() -> None:
    calls: list[str] = []
    config = Configurator()
    config.include("aiopyramid_ng")
    add_views(config)
    config.commit()
    config.set_execution_policy(recording_policy(calls))
    assert_served(config.make_wsgi_app())
    assert calls == ["/coro", "/coro"]


def test_the_include_after_a_commit() -> None:
    config = Configurator()
    config.add_route("probe", "/probe")
    config.add_view(greenlet_probe, route_name="probe", renderer="json")
    config.commit()
    config.include("aiopyramid_ng")
    config.commit()
    config.add_route("coro", "/coro")
    config.add_view(coroutine_view, route_name="coro", renderer="json")
    app = config.make_wsgi_app()
    assert_served(app)
    # A plain view built before the include still answers, from the pool or not.
    assert "manager" in TestApp(app).get("/probe").json


@pytest.mark.parametrize("autocommit", [False, True], ids=["commit", "autocommit"])
def test_a_coroutine_view_built_before_the_include_is_refused_at_start_up(
    autocommit: bool,
) -> None:
    config = Configurator(autocommit=autocommit)
    add_views(config)
    config.commit()
    config.include("aiopyramid_ng")
    with pytest.raises(ConfigurationError, match=r"coroutine_view.*before the commit"):
        config.make_wsgi_app()


def test_several_configurators_over_one_registry_include_it_each() -> None:
    registry = Registry("shared")
    first = Configurator(registry=registry)
    first.setup_registry()
    first.include("aiopyramid_ng")
    add_views(first)
    first.commit()
    second = Configurator(registry=registry)
    second.include("aiopyramid_ng")
    second.include("pyramid_tm")
    second.commit()
    app = second.make_wsgi_app()
    chain = assert_served(app)
    assert any(isinstance(layer, RequestTransactionPolicy) for layer in chain)
    # And a second Router over the same registry runs the same chain.
    again = first.make_wsgi_app()
    assert again.execution_policy is app.execution_policy


def test_with_package_and_make_wsgi_app_twice() -> None:
    config = Configurator().with_package("tests")
    config.include("aiopyramid_ng")
    add_views(config)
    app = config.make_wsgi_app()
    assert_served(app)
    assert config.make_wsgi_app().execution_policy is app.execution_policy


TM_ORDERS = [("aiopyramid_ng", "pyramid_tm"), ("pyramid_tm", "aiopyramid_ng")]


@pytest.mark.parametrize("order", TM_ORDERS)
@pytest.mark.parametrize("autocommit", [False, True], ids=["commit", "autocommit"])
def test_pyramid_tm_in_either_order_gets_one_transaction_layer_inside(
    order: tuple[str, str], autocommit: bool
) -> None:
    config = Configurator(autocommit=autocommit, settings={"tm.manager_hook": None})
    for name in order:
        config.include(name)
    add_views(config)
    chain = assert_served(config.make_wsgi_app())
    assert isinstance(chain[1], RequestTransactionPolicy)
    assert isinstance(transaction.manager, ContextTransactionManager)


def test_pyramid_retry_set_after_the_include_in_autocommit_is_wrapped() -> None:
    config = Configurator(autocommit=True, settings={"retry.attempts": "2"})
    config.include("aiopyramid_ng")
    config.include("pyramid_tm")
    config.include("pyramid_retry")
    add_views(config)
    chain = assert_served(config.make_wsgi_app())
    assert [type(layer).__name__ for layer in chain[:2]] == [
        "GreenletExecutionPolicy",
        "RequestTransactionPolicy",
    ]
    assert chain[-1].__module__ == "pyramid_retry"


def test_without_pyramid_tm_no_transaction_layer_is_installed() -> None:
    config = Configurator()
    config.include("aiopyramid_ng")
    add_views(config)
    chain = assert_served(config.make_wsgi_app())
    assert not any(isinstance(layer, RequestTransactionPolicy) for layer in chain)


@pytest.mark.parametrize(
    ("order", "adapted"),
    [
        (("pyramid_debugtoolbar", "aiopyramid_ng"), True),
        (("aiopyramid_ng", "pyramid_debugtoolbar"), False),
    ],
)
def test_the_toolbar_in_an_autocommitting_configurator(
    order: tuple[str, str], adapted: bool, caplog: pytest.LogCaptureFixture
) -> None:
    from aiopyramid_ng.compat import debugtoolbar

    config = Configurator(autocommit=True, settings={"debugtoolbar.hosts": "127.0.0.1"})
    for name in order:
        config.include(name)
    add_views(config)
    with caplog.at_level(logging.WARNING, logger="aiopyramid_ng.compat"):
        app = config.make_wsgi_app()
    assert debugtoolbar.adapted(app.registry) is adapted
    warned = [r for r in caplog.records if "include pyramid_debugtoolbar first" in r.getMessage()]
    assert len(warned) == (0 if adapted else 1)
