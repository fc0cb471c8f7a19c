"""Serving add-on test applications under a real uvicorn, and hammering them with httpx.

:func:`serve` runs uvicorn in a thread of the test process (so a test can
look at the application's database afterwards) on 127.0.0.1 and a free port.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

from aiopyramid_ng.types import ASGIApp

HOST = "127.0.0.1"
#: Upper bound for waiting on the server; hit only if something hangs.
PATIENCE = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def serve(app: ASGIApp) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread; yield its base URL."""
    config = uvicorn.Config(
        app,
        host=HOST,
        port=free_port(),
        lifespan="on",
        log_config=None,
        log_level="warning",
        backlog=1024,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn")
    thread.start()
    try:
        deadline = time.monotonic() + PATIENCE
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        yield f"http://{HOST}:{config.port}"
    finally:
        server.should_exit = True
        thread.join(PATIENCE)


async def _send_all(base: str, requests: list[tuple[str, str, dict[str, Any]]]) -> list[Any]:
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=PATIENCE, limits=limits) as client:
        return await asyncio.gather(
            *(client.request(method, path, **options) for method, path, options in requests)
        )


def concurrently(base: str, requests: list[tuple[str, str, dict[str, Any]]]) -> list[Any]:
    """Send ``(method, path, options)`` requests all at once; return the httpx responses."""
    return asyncio.run(_send_all(base, requests))
