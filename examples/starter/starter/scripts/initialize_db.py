import argparse
import asyncio
import sys

from pyramid.paster import bootstrap, setup_logging
from sqlalchemy.exc import OperationalError

from aiopyramid_ng.helpers import spawn_greenlet

from .. import models
from ..models.meta import Base


def setup_models(dbsession):
    """
    Add or update models / fixtures in the database.

    """
    model = models.mymodel.MyModel(name="one", value=1)
    dbsession.add(model)
    admin = models.User(name="admin", role="admin")
    admin.set_password("admin")
    dbsession.add(admin)


def populate(request):
    """Create the tables, then add the fixtures in a transaction.

    Runs in a request greenlet: the session's queries wait on the event loop.
    (The cookiecutter creates the tables with alembic; this starter keeps
    to ``create_all`` to stay small.)
    """
    Base.metadata.create_all(request.registry["dbengine"].sync_engine)
    with request.tm:
        setup_models(request.dbsession)


async def initialize(env):
    """Populate the database of the application ``env`` was bootstrapped for."""
    try:
        await spawn_greenlet(populate, env["request"])
    finally:
        await env["registry"]["dbengine"].dispose()


def parse_args(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "config_uri",
        help="Configuration file, e.g., development.ini",
    )
    return parser.parse_args(argv[1:])


def main(argv=sys.argv):
    args = parse_args(argv)
    setup_logging(args.config_uri)
    with bootstrap(args.config_uri) as env:
        try:
            asyncio.run(initialize(env))
        except OperationalError:
            print(
                """
Pyramid is having a problem using your SQL database.  The problem
might be caused by one of the following things:

1.  You may need to initialize your database tables with `alembic`.
    Check your README.txt for description and try to run it.

2.  Your database server may not be running.  Check that the
    database server referred to by the "sqlalchemy.url" setting in
    your "development.ini" file is running.
            """
            )
