import asyncio

import pytest
import webtest
from pyramid.scripting import prepare
from starter import main
from starter.scripts.initialize_db import initialize

from aiopyramid_ng.asgi import make_asgi_app
from aiopyramid_ng.testing import TestApp
from aiopyramid_ng.execution import thread_loop


@pytest.fixture
def app(tmp_path):
    """The application over a fresh database, created and populated as the script does."""
    settings = {
        "sqlalchemy.url": f"sqlite+aiosqlite:///{tmp_path}/test.sqlite",
        "auth.secret": "seekrit",
        "retry.attempts": "3",
    }
    app = main({}, **settings)
    with prepare(registry=app.registry) as env:
        asyncio.run(initialize(env))
    return app


@pytest.fixture
def testapp(app):
    """WebTest over the plain WSGI application: requests run on this thread's loop."""
    yield webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"})
    thread_loop().run_until_complete(app.registry["dbengine"].dispose())


@pytest.fixture
def asgi_testapp(app):
    """WebTest's API over the ASGI application, as a server runs it (lifespan included)."""
    with TestApp(make_asgi_app(app), extra_environ={"HTTP_HOST": "example.com"}) as client:
        yield client
