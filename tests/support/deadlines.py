"""What the deadline tests share: a slow ACL and its policy, test views, timing helpers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pyramid.authorization import Allow, Everyone
from pyramid.request import Request
from pyramid.response import Response

from aiopyramid_ng.helpers import synchronize
from aiopyramid_ng.security import ACLHelper
from aiopyramid_ng.testing import TestApp


class Guarded:
    """A context whose ACL is loaded "from storage": ``s`` seconds (default 5)."""

    def __init__(self, request: Request):
        self.request = request

    @property
    @synchronize
    async def __acl__(self) -> list[tuple[str, str, str]]:
        await asyncio.sleep(float(self.request.params.get("s", "5")))
        return [(Allow, Everyone, "view")]


class ACLPolicy:
    """A security policy that permits by the context's ACL, for everyone."""

    def identity(self, request: Request) -> None:
        return None

    def authenticated_userid(self, request: Request) -> None:
        return None

    def permits(self, request: Request, context: Any, permission: str) -> Any:
        return ACLHelper().permits(context, [Everyone], permission)


def timed_get(client: TestApp, url: str) -> tuple[Any, float]:
    """GET ``url`` whatever its status; the response and the seconds it took."""
    started = time.monotonic()
    response = client.get(url, status="*")
    return response, time.monotonic() - started


def deadline_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The messages the deadlines logged."""
    return [r.getMessage() for r in caplog.records if r.name == "aiopyramid_ng.deadlines"]


def lingering(unwound: list[str], unwinding: float) -> Callable[[Request], Awaitable[Response]]:
    """A view that waits, and is still unwinding (``unwinding`` seconds) when cancelled."""

    async def view(request: Request) -> Response:
        try:
            await asyncio.sleep(5)
        finally:
            unwound.append("finally")
            await asyncio.sleep(unwinding)  # still unwinding when the server cancels
        return Response("never")

    return view


async def stubborn(request: Request) -> Response:
    """A view that swallows its cancellation and answers anyway."""
    try:
        await asyncio.sleep(5)
    except asyncio.CancelledError:
        return Response("answered anyway")
    return Response("slept")
