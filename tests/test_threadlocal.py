"""Pyramid's threadlocals become context-local: interleaved requests never mix."""

from __future__ import annotations

import asyncio
import contextvars
import random
import threading
from typing import Any

import pyramid.threadlocal
from pyramid import testing
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response
from pyramid.scripting import prepare
from pyramid.threadlocal import get_current_registry, get_current_request, manager

from aiopyramid_ng.threadlocal import ContextLocalManager, install
from tests.support.apps import get_response, make_app
from tests.support.leaks import LeakCheck


def test_install_is_idempotent_and_keeps_the_same_object() -> None:
    before = pyramid.threadlocal.manager
    install()
    install()
    assert pyramid.threadlocal.manager is before
    assert isinstance(before, ContextLocalManager)


def test_configurator_begin_and_end() -> None:
    config = Configurator()
    config.begin()
    try:
        assert get_current_registry() is config.registry
    finally:
        config.end()
    assert get_current_registry() is not config.registry
    assert manager.stack == []


def test_pyramid_testing_setup_and_teardown() -> None:
    request = testing.DummyRequest()
    config = testing.setUp(request=request)
    try:
        assert get_current_request() is request
        assert get_current_registry() is config.registry
    finally:
        testing.tearDown()
    assert get_current_request() is None
    assert manager.stack == []


def test_new_threads_start_empty_and_copied_contexts_carry_the_request() -> None:
    request = testing.DummyRequest()
    testing.setUp(request=request)
    seen: dict[str, Any] = {}

    def plain_thread() -> None:
        seen["plain"] = get_current_request()
        manager.push({"request": "thread's own", "registry": None})
        seen["pushed"] = get_current_request()

    def copied_thread() -> None:
        seen["copied"] = get_current_request()

    try:
        thread = threading.Thread(target=plain_thread)
        thread.start()
        thread.join()
        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(copied_thread,))
        thread.start()
        thread.join()
        assert get_current_request() is request
    finally:
        testing.tearDown()
    assert seen == {"plain": None, "pushed": "thread's own", "copied": request}


def test_scripting_prepare() -> None:
    app = make_app(lambda config: None)
    env = prepare(registry=app.registry)
    try:
        assert get_current_request() is env["request"]
        assert get_current_registry() is app.registry
    finally:
        env["closer"]()
    assert manager.stack == []


def _interleaving_app() -> Any:
    async def whoami(request: Request) -> Response:
        tag = request.params["tag"]
        for _ in range(4):
            assert get_current_request() is request
            assert get_current_registry() is request.registry
            await asyncio.sleep(random.random() / 200)
            assert get_current_request() is request
        if tag.endswith("sub"):
            return Response(tag)
        sub = request.invoke_subrequest(Request.blank("/", POST={"tag": f"{tag}-sub"}))
        assert get_current_request() is request
        if int(tag) % 3 == 0:
            raise LookupError(tag)
        return Response(f"{tag}:{sub.text}")

    async def failed(exc: LookupError, request: Request) -> Response:
        await asyncio.sleep(random.random() / 200)
        assert get_current_request() is request
        assert request.exception is exc
        return Response(f"failed {exc.args[0]}", status=409)

    def setup(config: Configurator) -> None:
        config.add_route("whoami", "/")
        config.add_view(whoami, route_name="whoami")
        config.add_exception_view(failed, context=LookupError)

    return make_app(setup)


def test_100_interleaved_requests_each_see_themselves() -> None:
    app = _interleaving_app()

    async def main() -> None:
        check = LeakCheck()
        responses = await asyncio.gather(*(get_response(app, f"/?tag={i}") for i in range(100)))
        for i, response in enumerate(responses):
            if i % 3 == 0:
                assert (response.status_code, response.text) == (409, f"failed {i}")
            else:
                assert (response.status_code, response.text) == (200, f"{i}:{i}-sub")
        check.assert_clean(asyncio.get_running_loop())

    asyncio.run(main())
    assert manager.stack == []
