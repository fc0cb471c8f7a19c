"""aiopyramid's own behaviour checks, with ``async def`` where it used ``@asyncio.coroutine``.

Each test states the aiopyramid behaviour it keeps: authentication
principals read from greenlet and coroutine code, tweens whose values pass
through sync pass-through tweens, and traversal depth, root and view name
with synchronized ``__getitem__``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from pyramid.authentication import CallbackAuthenticationPolicy
from pyramid.config import Configurator
from pyramid.config.tweens import Tweens
from pyramid.registry import Registry
from pyramid.request import Request
from pyramid.response import Response
from pyramid.testing import DummyRequest
from pyramid.traversal import traverse
from webtest import TestApp as WSGITestApp

from aiopyramid_ng.auth import authn_policy_factory
from aiopyramid_ng.helpers import spawn_greenlet, synchronize
from aiopyramid_ng.tweens import BridgedTweens
from tests.support.apps import make_app, tick

T = TypeVar("T")

PRINCIPALS = ["system.Everyone", "system.Authenticated", "theone", "test_user"]


def run(func: Callable[..., T], *args: Any) -> T:
    """Run sync ``func`` in a request greenlet on a fresh loop."""
    return asyncio.run(spawn_greenlet(func, *args))


# -- authentication ---------------------------------------------------------------------


async def principals_callback(userid: str, request: Any) -> list[str]:
    await tick()
    return ["test_user"]


class TheOnePolicy(CallbackAuthenticationPolicy):  # type: ignore[misc]
    def __init__(self, callback: Any):
        self.callback = callback
        self.debug = False

    def unauthenticated_userid(self, request: Any) -> str:
        return "theone"


@pytest.fixture
def policy() -> TheOnePolicy:
    return authn_policy_factory(TheOnePolicy, principals_callback)


def read_policy(policy: TheOnePolicy, request: Any) -> list[Any]:
    return [
        policy.unauthenticated_userid(request),
        policy.authenticated_userid(request),
        policy.effective_principals(request),
    ]


async def read_policy_in_coroutine(policy: TheOnePolicy, request: Any) -> list[Any]:
    # aiopyramid needed `yield from` on each call here; no await is needed now.
    await tick()
    return read_policy(policy, request)


def test_auth_principals_from_greenlet_code(policy: TheOnePolicy) -> None:
    assert run(read_policy, policy, DummyRequest()) == ["theone", "theone", PRINCIPALS]


def test_auth_principals_from_coroutine_code(policy: TheOnePolicy) -> None:
    read = synchronize(read_policy_in_coroutine)
    assert run(read, policy, DummyRequest()) == ["theone", "theone", PRINCIPALS]


def test_auth_principals_from_coroutine_view(policy: TheOnePolicy) -> None:
    async def principals_view(request: Request) -> Any:
        return await read_policy_in_coroutine(policy, request)

    def setup(config: Configurator) -> None:
        config.add_view(principals_view, renderer="json")

    assert WSGITestApp(make_app(setup)).get("/").json == ["theone", "theone", PRINCIPALS]


# -- tweens ---------------------------------------------------------------------------


def async_tween_factory(handler: Any, registry: Registry) -> Any:
    async def async_tween(request: Any) -> int:
        await tick()
        return 12

    return async_tween


def pass_through_factory(handler: Any, registry: Registry) -> Any:
    return handler


def wrapping_factory(handler: Any, registry: Registry) -> Any:
    def sync_tween(request: Any) -> Any:
        return handler(request)

    return sync_tween


@pytest.mark.parametrize(
    "chain",
    [
        [async_tween_factory],
        [async_tween_factory, pass_through_factory],
        [pass_through_factory, async_tween_factory],
        [pass_through_factory, async_tween_factory, pass_through_factory],
        [wrapping_factory, async_tween_factory, wrapping_factory],
    ],
    ids=["alone", "sync_below", "sync_above", "sync_both", "wrapping_both"],
)
def test_tween_value_through_sync_tweens(chain: list[Callable[..., Any]]) -> None:
    tweens = BridgedTweens(Tweens())
    for n, factory in enumerate(chain):
        # Each one below the previous: the first listed is outermost.
        tweens.add_implicit(f"t{n}", factory, under=f"t{n - 1}" if n else None)
    handler = tweens(lambda request: 0, Registry())
    assert run(handler, None) == 12


# -- traversal --------------------------------------------------------------------------


class SynchronizedResource:
    """aiopyramid's test resource: a synchronized coroutine ``__getitem__``."""

    def __init__(self, name: str, parent: Any):
        self.__name__ = name
        self.__parent__ = parent
        self.children: dict[str, Any] = {}

    @synchronize
    async def __getitem__(self, key: str) -> Any:
        await tick()
        return self.children[key]

    def add_child(self, name: str) -> Any:
        child = type(self)(name, self)
        self.children[name] = child
        return child


class AsyncResource(SynchronizedResource):
    """The same with a plain ``async def __getitem__``."""

    async def __getitem__(self, key: str) -> Any:
        await tick()
        return self.children[key]


def traverse_with_app_registry(resource: Any, path: list[str]) -> dict[str, Any]:
    config = Configurator()
    config.include("aiopyramid_ng")
    config.commit()
    config.begin()
    try:
        found: dict[str, Any] = traverse(resource, path)
        return found
    finally:
        config.end()


RESOURCES = pytest.mark.parametrize("kind", [SynchronizedResource, AsyncResource])


@RESOURCES
def test_traversed_length(kind: type[SynchronizedResource]) -> None:
    root = kind("root", None)
    root.add_child("cat")
    found = run(traverse_with_app_registry, root, ["cat"])
    assert len(found["traversed"]) == 1


@RESOURCES
def test_root_is_context_for_empty_path(kind: type[SynchronizedResource]) -> None:
    root = kind("root", None)
    root.add_child("cat")
    found = run(traverse_with_app_registry, root, [""])
    assert found["root"] is found["context"] is root


@RESOURCES
def test_depth(kind: type[SynchronizedResource]) -> None:
    root = kind("root", None)
    root.add_child("cat").add_child("dog")
    found = run(traverse_with_app_registry, root, ["cat", "dog"])
    assert list(found["traversed"]) == ["cat", "dog"]
    assert found["context"].__name__ == "dog"


@RESOURCES
def test_view_name(kind: type[SynchronizedResource]) -> None:
    root = kind("root", None)
    root.add_child("cat")
    found = run(traverse_with_app_registry, root, ["cat", "mouse"])
    assert list(found["traversed"]) == ["cat"]
    assert found["view_name"] == "mouse"


def test_view_name_through_an_application() -> None:
    root = AsyncResource("", None)
    root.add_child("cat")

    async def named(context: Any, request: Request) -> Response:
        return Response(f"{context.__name__}/{request.view_name}")

    def setup(config: Configurator) -> None:
        config.set_root_factory(lambda request: root)
        config.add_view(named, name="mouse")

    assert WSGITestApp(make_app(setup)).get("/cat/mouse").text == "cat/mouse"
