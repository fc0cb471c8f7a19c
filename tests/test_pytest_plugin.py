"""The pytest plugin: ``--aiopyramid-ng=include|asgi`` runs a suite unchanged with the add-on.

Each test runs pytest in a subprocess on a small suite written as any
Pyramid project writes its own (stock ``webtest.TestApp``,
``pyramid.testing.setUp``), so nothing of this process leaks into it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

# A project's own suite: it knows nothing of aiopyramid_ng.
SUITE = """
import asyncio
import webtest
from pyramid import testing
from pyramid.config import Configurator
from pyramid.response import Response


async def hello(request):
    await asyncio.sleep(0)
    return Response("hello " + ("asgi" if "asgi.scope" in request.environ else "wsgi"))


def plain(request):
    if request.params.get("fail"):
        raise LookupError("from the view")
    return Response(type(request.environ.get("tm.manager")).__name__)


def make_app(**settings):
    config = Configurator(settings=settings)
    config.add_route("hello", "/hello")
    config.add_view(hello, route_name="hello")
    config.add_route("plain", "/plain")
    config.add_view(plain, route_name="plain")
    return config.make_wsgi_app()


def get_hello(app):
    try:
        return app.get("/hello").text
    except ValueError:  # stock Pyramid: a coroutine is not a response
        return "not awaited"


def test_coroutine_view():
    print("RESULT", get_hello(webtest.TestApp(make_app())))


def test_testing_setup():
    config = testing.setUp()
    try:
        config.add_route("hello", "/hello")
        config.add_view(hello, route_name="hello")
        print("SETUP", get_hello(webtest.TestApp(config.make_wsgi_app())))
    finally:
        testing.tearDown()


def test_environ_and_exceptions():
    class Manager:
        pass

    app = webtest.TestApp(make_app(), extra_environ={"tm.manager": Manager()})
    assert app.get("/plain").text == "Manager"
    try:
        app.get("/plain", params={"fail": "1"})
    except LookupError as exc:
        print("RAISED", exc)


def test_never_closed():
    # Like most suites, this one never closes its TestApp.
    app = webtest.TestApp(make_app())
    app.get("/plain")
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_project=SUITE)
    return pytester.runpytest_subprocess("-s", "-p", "no:randomly", "-p", "no:cacheprovider", *args)


def test_without_the_option_nothing_changes(pytester: pytest.Pytester) -> None:
    result = run(pytester)
    result.assert_outcomes(passed=4)
    result.stdout.no_fnmatch_line("aiopyramid_ng:*")
    result.stdout.fnmatch_lines(["*RESULT not awaited*", "*SETUP not awaited*"])


def test_include_runs_coroutine_views(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--aiopyramid-ng=include")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            "aiopyramid_ng: --aiopyramid-ng=include (every Configurator includes aiopyramid_ng)",
            "*RESULT hello wsgi*",
            "*SETUP hello wsgi*",
            "*RAISED from the view*",
        ]
    )


def test_asgi_serves_every_test_app_through_asgi(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--aiopyramid-ng=asgi")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            "aiopyramid_ng: --aiopyramid-ng=asgi*",
            "*RESULT hello asgi*",
            "*SETUP hello asgi*",
            "*RAISED from the view*",
        ]
    )
    # The TestApp the suite never closed was closed at the end, quietly.
    assert "Task was destroyed" not in result.stderr.str()
    assert "Event loop is closed" not in result.stderr.str()


# A suite whose function-scoped fixture returns a TestApp and never closes it.
FIXTURE_SUITE = """
import pytest
import webtest
from pyramid.config import Configurator
from pyramid.response import Response

from aiopyramid_ng.events import ApplicationShutdown


def make_app(name):
    config = Configurator()
    config.add_route("plain", "/plain")
    config.add_view(lambda request: Response("plain"), route_name="plain")
    config.add_subscriber(lambda event: print("SHUTDOWN", name), ApplicationShutdown)
    return config.make_wsgi_app()


@pytest.fixture
def testapp(request):
    return webtest.TestApp(make_app(request.node.name))


def test_first(testapp):
    assert testapp.get("/plain").text == "plain"


def test_second():
    print("SECOND")
"""


def test_asgi_closes_a_test_app_its_test_dropped_after_that_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_fixture=FIXTURE_SUITE)
    result = pytester.runpytest_subprocess(
        "-s", "-p", "no:randomly", "-p", "no:cacheprovider", "--aiopyramid-ng=asgi"
    )
    result.assert_outcomes(passed=2)
    # Its lifespan shutdown ran once the test's fixtures were torn down, not
    # when the collector (or the session's end) came to it.
    result.stdout.fnmatch_lines(["*SHUTDOWN test_first*", "*SECOND*"])
    assert "Task was destroyed" not in result.stderr.str()


def test_an_unknown_mode_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--aiopyramid-ng=fast")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*invalid choice: 'fast' (choose from*include*asgi*"])


def test_the_plugin_is_registered_by_the_distribution() -> None:
    from importlib.metadata import entry_points

    (entry,) = entry_points(group="pytest11", name="aiopyramid_ng")
    assert entry.value == "pytest_aiopyramid_ng"
    assert Path(entry.load().__file__).name == "pytest_aiopyramid_ng.py"
