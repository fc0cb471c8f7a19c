"""Serving add-on test applications under a real uvicorn, and hammering them with httpx.

Each ``test_compat_*`` module builds a Pyramid application with an add-on,
serves it with :func:`serve` (uvicorn in a thread of the test process, so a
test can look at the application's database afterwards) and hammers it with
:func:`concurrently`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from pyramid.router import Router

from aiopyramid_ng.asgi import make_asgi_app

from .servers import PATIENCE, uvicorn_thread


@contextmanager
def serve(app: Router) -> Iterator[str]:
    """Serve ``app`` through the ASGI adapter with uvicorn in a thread; yield its base URL."""
    # The backlog holds every connection of a burst sent by concurrently().
    with uvicorn_thread(make_asgi_app(app), log_level="warning", backlog=1024) as base:
        yield base


def server_fixture() -> Any:
    """A module-scoped fixture that serves the module's ``app`` fixture with :func:`serve`.

    Assign it to ``server`` in the test module.
    """

    @pytest.fixture(scope="module")
    def server(app: Router) -> Iterator[str]:
        with serve(app) as base:
            yield base

    return server


async def _send_all(base: str, requests: list[tuple[str, str, dict[str, Any]]]) -> list[Any]:
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=PATIENCE, limits=limits) as client:
        return await asyncio.gather(
            *(client.request(method, path, **options) for method, path, options in requests)
        )


def concurrently(base: str, requests: list[tuple[str, str, dict[str, Any]]]) -> list[Any]:
    """Send ``(method, path, options)`` requests all at once; return the httpx responses."""
    return asyncio.run(_send_all(base, requests))
