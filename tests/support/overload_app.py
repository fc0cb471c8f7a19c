"""The application the overload test serves with uvicorn in a subprocess.

It admits ``BOUND`` requests at once, with a deadline of ``DEADLINE``
seconds; each admitted request waits ``WORK`` seconds on the loop.
"""

from __future__ import annotations

import asyncio

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response

from aiopyramid_ng.asgi import make_asgi_app
from aiopyramid_ng.settings import MAX_CONCURRENCY, RETRY_AFTER, TIMEOUT
from tests.support.apps import make_app

BOUND = 10
DEADLINE = 2.0
WORK = 0.1


async def work(request: Request) -> Response:
    await asyncio.sleep(WORK)
    return Response("done")


def setup(config: Configurator) -> None:
    config.add_route("work", "/")
    config.add_view(work, route_name="work")


app = make_asgi_app(
    make_app(
        setup,
        **{MAX_CONCURRENCY.name: str(BOUND), TIMEOUT.name: str(DEADLINE), RETRY_AFTER.name: "1"},
    )
)
