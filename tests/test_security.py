"""Pyramid 2 security policies with coroutine methods, and the legacy factory."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from pyramid.authentication import AuthTktAuthenticationPolicy
from pyramid.authorization import ACLAuthorizationPolicy, Allow, Authenticated, Deny, Everyone
from pyramid.authorization import ACLHelper as PyramidACLHelper
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError
from pyramid.httpexceptions import HTTPForbidden
from pyramid.interfaces import ISecurityPolicy
from pyramid.request import Request
from pyramid.response import Response
from pyramid.security import forget, remember
from pyramid.testing import DummyRequest
from webtest import TestApp

from aiopyramid_ng.auth import authn_policy_factory
from aiopyramid_ng.exceptions import ScopeError
from aiopyramid_ng.helpers import spawn_greenlet, synchronize
from aiopyramid_ng.security import ACLHelper, BridgedSecurityPolicy
from tests.support.apps import get_response, make_app, tick
from tests.support.leaks import LeakCheck

GROUPS = {"ann": ["group:editors"], "bob": []}


def loads(request: Request) -> int:
    count: int = request.environ.setdefault("test.identity_loads", 0)
    return count


class AsyncPolicy:
    """Every method a coroutine function; identity does (simulated) I/O."""

    async def identity(self, request: Request) -> dict[str, Any] | None:
        await tick()
        request.environ["test.identity_loads"] = loads(request) + 1
        userid = request.headers.get("X-User")
        if userid not in GROUPS:
            return None
        return {"userid": userid, "groups": GROUPS[userid]}

    async def authenticated_userid(self, request: Request) -> str | None:
        await tick()
        identity = request.identity
        return None if identity is None else str(identity["userid"])

    async def permits(self, request: Request, context: Any, permission: str) -> Any:
        await tick()
        principals = [Everyone]
        identity = request.identity
        if identity is not None:
            principals += [Authenticated, identity["userid"], *identity["groups"]]
        return ACLHelper().permits(context, principals, permission)

    async def remember(self, request: Request, userid: str, **kw: Any) -> Sequence[tuple[str, str]]:
        await tick()
        return [("X-Remember", userid)]

    async def forget(self, request: Request, **kw: Any) -> Sequence[tuple[str, str]]:
        await tick()
        return [("X-Forget", "yes")]


class Root:
    def __init__(self, request: Request):
        self.request = request

    async def __acl__(self) -> list[Any]:
        await tick()
        return [(Allow, "group:editors", "edit"), (Allow, Authenticated, "view")]


async def whoami(request: Request) -> dict[str, Any]:
    before = request.authenticated_userid
    await tick()
    return {
        "userid": before,
        "again": request.authenticated_userid,
        "identity": request.identity,
        "authenticated": request.is_authenticated,
        "can_edit": bool(request.has_permission("edit")),
        "loads": loads(request),
    }


def blocking_whoami(request: Request) -> dict[str, Any]:
    # Runs in the thread pool: the policy's coroutines run on the request's loop.
    return {"userid": request.authenticated_userid, "loads": loads(request)}


async def edit(request: Request) -> Response:
    return Response(f"edited by {request.authenticated_userid}")


async def login(request: Request) -> Response:
    response = Response("in")
    response.headerlist.extend(remember(request, request.params["who"]))
    return response


def logout(request: Request) -> Response:
    response = Response("out")
    response.headerlist.extend(forget(request))
    return response


def setup(config: Configurator) -> None:
    # Views first: the policy still reaches their permission checks.
    config.add_view(whoami, name="whoami", renderer="json")
    config.add_view(blocking_whoami, name="blocking", renderer="json")
    config.add_view(edit, name="edit", permission="edit")
    config.add_view(login, name="login")
    config.add_view(logout, name="logout")
    config.set_root_factory(Root)
    config.set_security_policy(AsyncPolicy())


@pytest.fixture(scope="module")
def app() -> TestApp:
    return TestApp(make_app(setup))


def test_policy_is_wrapped_before_views_are_built() -> None:
    with Configurator() as config:
        config.include("aiopyramid_ng")
        setup(config)
        config.commit()
        policy = config.registry.getUtility(ISecurityPolicy)
    assert isinstance(policy, BridgedSecurityPolicy)
    assert isinstance(policy.policy, AsyncPolicy)
    assert repr(policy).startswith("<BridgedSecurityPolicy around")


def test_coroutine_view_reads_identity_without_await(app: TestApp) -> None:
    body = app.get("/whoami", headers={"X-User": "ann"}).json
    assert body == {
        "userid": "ann",
        "again": "ann",
        "identity": {"userid": "ann", "groups": ["group:editors"]},
        "authenticated": True,
        "can_edit": True,
        "loads": 1,  # identity did its I/O once for the whole request
    }
    anonymous = app.get("/whoami").json
    assert anonymous["userid"] is None
    assert anonymous["authenticated"] is False
    assert anonymous["can_edit"] is False


def test_executor_view_reads_identity_from_its_thread(app: TestApp) -> None:
    assert app.get("/blocking", headers={"X-User": "bob"}).json == {"userid": "bob", "loads": 1}


def test_view_permission_checks(app: TestApp) -> None:
    assert app.get("/edit", headers={"X-User": "ann"}).text == "edited by ann"
    app.get("/edit", headers={"X-User": "bob"}, status=403)
    app.get("/edit", status=403)


def test_remember_and_forget(app: TestApp) -> None:
    assert app.get("/login", params={"who": "ann"}).headers["X-Remember"] == "ann"
    assert app.get("/logout").headers["X-Forget"] == "yes"


def test_identity_cached_across_greenlet_and_thread() -> None:
    def setup_tween(config: Configurator) -> None:
        setup(config)
        config.add_tween("tests.test_security.identity_tween_factory")

    response = TestApp(make_app(setup_tween)).get("/blocking", headers={"X-User": "ann"})
    # The tween read it in the greenlet, the view again in a worker thread.
    assert response.json == {"userid": "ann", "loads": 1}
    assert response.headers["X-Tween-User"] == "ann"


def identity_tween_factory(handler: Any, registry: Any) -> Any:
    def identity_tween(request: Request) -> Response:
        userid = request.identity["userid"]
        response: Response = handler(request)
        response.headers["X-Tween-User"] = userid
        return response

    return identity_tween


def test_200_concurrent_users_see_only_their_own_identity(leak_check: LeakCheck) -> None:
    app = make_app(setup)
    users = [("ann", True), ("bob", False), ("eve", False)]

    async def main() -> None:
        calls = []
        for n in range(200):
            userid, _ = users[n % 3]
            path = "/edit" if n % 2 else "/whoami"
            calls.append(get_response(app, path, headers={"X-User": userid}))
        for n, response in enumerate(await asyncio.gather(*calls)):
            userid, editor = users[n % 3]
            if n % 2:
                assert response.status_code == (200 if editor else 403)
                if editor:
                    assert response.text == f"edited by {userid}"
            else:
                body = response.json
                assert body["loads"] == 1
                if userid == "eve":
                    assert body["userid"] is None
                else:
                    assert body["userid"] == userid
                    assert body["identity"]["userid"] == userid
                    assert body["can_edit"] is editor
        leak_check.assert_clean(asyncio.get_running_loop())

    asyncio.run(main())


def test_policy_with_synchronized_helpers() -> None:
    @synchronize
    async def load_user(request: Request) -> str | None:
        await tick()
        user: str | None = request.headers.get("X-User")
        return user

    class SyncPolicy:
        def identity(self, request: Request) -> str | None:
            return load_user(request)

        def authenticated_userid(self, request: Request) -> str | None:
            return load_user(request)

        def permits(self, request: Request, context: Any, permission: str) -> bool:
            return load_user(request) == "ann"

    def setup_sync(config: Configurator) -> None:
        config.set_security_policy(SyncPolicy())
        config.add_view(edit, name="edit", permission="edit")

    app = TestApp(make_app(setup_sync))
    assert app.get("/edit", headers={"X-User": "ann"}).text == "edited by ann"
    app.get("/edit", headers={"X-User": "bob"}, status=403)


def test_async_policy_set_in_a_later_commit_is_refused() -> None:
    config = Configurator()
    config.include("aiopyramid_ng")
    config.commit()
    config.set_security_policy(AsyncPolicy())
    with pytest.raises(ConfigurationError, match=r"coroutine methods \(identity, auth"):
        config.make_wsgi_app()


def test_policy_read_outside_any_request_names_the_method() -> None:
    policy = BridgedSecurityPolicy(AsyncPolicy())

    async def main() -> None:
        policy.identity(DummyRequest())

    with pytest.raises(ScopeError, match=r"AsyncPolicy.identity returned an awaitable"):
        asyncio.run(main())


def test_pyramid_acl_helper_with_async_acl_gets_a_clear_error() -> None:
    class PlainHelperPolicy(AsyncPolicy):
        async def permits(self, request: Request, context: Any, permission: str) -> Any:
            return PyramidACLHelper().permits(context, [Everyone], permission)

    def setup_plain(config: Configurator) -> None:
        config.set_root_factory(Root)
        config.set_security_policy(PlainHelperPolicy())
        config.add_view(edit, name="edit", permission="edit")

    app = TestApp(make_app(setup_plain))
    with pytest.raises(
        TypeError, match=r"Root.__acl__ is a coroutine function.*security.ACLHelper"
    ):
        app.get("/edit")


class Node:
    def __init__(self, parent: Any, acl: Any):
        self.__parent__ = parent
        self.__name__ = "node"
        if acl is not None:
            self.__acl__ = acl


class AsyncACL:
    def __init__(self, parent: Any = None):
        self.__parent__ = parent

    async def __acl__(self) -> list[Any]:
        await tick()
        return [(Allow, "async", "read"), (Deny, Everyone, "write")]


class SynchronizedACL:
    __parent__ = None

    @synchronize
    async def __acl__(self) -> list[Any]:
        await tick()
        return [(Allow, "synchronized", "read")]


def test_acl_helper_every_acl_shape() -> None:
    def check() -> None:
        helper = ACLHelper()
        root = AsyncACL()
        listed = Node(root, [(Allow, "listed", "read")])
        called = Node(listed, lambda: [(Allow, "called", "read")])
        bare = Node(called, None)
        for principal in ("async", "listed", "called"):
            result = helper.permits(bare, [principal], "read")
            assert result, principal
            assert result.context is bare
        denied = helper.permits(bare, ["async"], "write")
        assert not denied
        assert denied.context is bare
        assert not helper.permits(bare, ["stranger"], "read")
        assert helper.permits(SynchronizedACL(), ["synchronized"], "read")
        assert helper.principals_allowed_by_permission(bare, "read") == {
            "async",
            "listed",
            "called",
        }
        assert PyramidACLHelper().permits(SynchronizedACL(), ["synchronized"], "read")

    asyncio.run(spawn_greenlet(check))


def test_forbidden_result_names_the_real_context(app: TestApp) -> None:
    caught: list[Any] = []

    def setup_forbidden(config: Configurator) -> None:
        setup(config)

        def forbidden(exc: HTTPForbidden, request: Request) -> Response:
            caught.append(exc.result.context)
            return Response("no", status=403)

        config.add_forbidden_view(forbidden)

    TestApp(make_app(setup_forbidden)).get("/edit", headers={"X-User": "bob"}, status=403)
    assert isinstance(caught[0], Root)


# -- legacy authentication policies ---------------------------------------------------


async def get_principals(userid: str, request: Request) -> list[str] | None:
    await tick()
    return GROUPS.get(userid)


async def legacy_login(request: Request) -> Response:
    response = Response("in")
    response.headerlist.extend(remember(request, request.params["who"]))
    return response


async def legacy_whoami(request: Request) -> dict[str, Any]:
    await tick()
    return {
        "userid": request.authenticated_userid,
        "principals": request.effective_principals,
        "can_edit": bool(request.has_permission("edit")),
    }


def legacy_setup(config: Configurator) -> None:
    config.set_root_factory(lambda request: Node(None, [(Allow, "group:editors", "edit")]))
    config.set_authorization_policy(ACLAuthorizationPolicy())
    config.set_authentication_policy(
        authn_policy_factory(
            AuthTktAuthenticationPolicy, get_principals, "s3cret", hashalg="sha512"
        )
    )
    config.add_view(legacy_login, name="login")
    config.add_view(logout, name="logout")
    config.add_view(legacy_whoami, name="whoami", renderer="json")
    config.add_view(blocking_whoami, name="blocking", renderer="json")
    config.add_view(edit, name="edit", permission="edit")


@pytest.mark.filterwarnings("ignore:Authentication and authorization policies:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:The new security policy:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:.*effective_principals.*:DeprecationWarning")
def test_legacy_policy_with_async_callback_round_trips_cookies() -> None:
    app = TestApp(make_app(legacy_setup))
    app.get("/edit", status=403)
    assert app.get("/whoami").json == {
        "userid": None,
        "principals": ["system.Everyone"],
        "can_edit": False,
    }
    app.get("/login", params={"who": "ann"})
    assert "auth_tkt" in app.cookies
    assert app.get("/whoami").json == {
        "userid": "ann",
        "principals": ["system.Everyone", "system.Authenticated", "ann", "group:editors"],
        "can_edit": True,
    }
    assert app.get("/blocking").json["userid"] == "ann"
    assert app.get("/edit").text == "edited by ann"
    app.get("/logout")
    assert not app.cookies.get("auth_tkt")
    app.get("/edit", status=403)
    # A cookie naming an unknown user: the callback returns None, so no user.
    app.get("/login", params={"who": "mallory"})
    assert app.get("/whoami").json["userid"] is None


def test_legacy_factory_passes_plain_arguments() -> None:
    policy = authn_policy_factory(AuthTktAuthenticationPolicy, None, "s3cret", hashalg="sha512")
    assert policy.callback is None


def test_type_error_unrelated_to_acls_propagates_unchanged() -> None:
    class BrokenPolicy(AsyncPolicy):
        async def permits(self, request: Request, context: Any, permission: str) -> Any:
            raise TypeError("broken policy")

    def setup_broken(config: Configurator) -> None:
        config.set_security_policy(BrokenPolicy())
        config.add_view(edit, name="edit", permission="edit")

    with pytest.raises(TypeError, match=r"^broken policy$"):
        TestApp(make_app(setup_broken)).get("/edit")


def test_sync_policy_set_in_a_later_commit_is_accepted() -> None:
    class SyncPolicy:
        def identity(self, request: Request) -> str:
            return "someone"

    config = Configurator()
    config.include("aiopyramid_ng")
    config.commit()
    config.set_security_policy(SyncPolicy())
    config.add_view(lambda request: {"identity": request.identity}, renderer="json")
    assert TestApp(config.make_wsgi_app()).get("/").json == {"identity": "someone"}
