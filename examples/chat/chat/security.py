"""Who is chatting: a name remembered in a signed cookie."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pyramid.authentication import AuthTktCookieHelper
from pyramid.request import Request
from pyramid.security import Allowed, Denied


class ChatSecurityPolicy:
    """Anyone who logged in with a name may ``chat``."""

    def __init__(self, secret: str):
        self.cookie = AuthTktCookieHelper(secret, hashalg="sha512", samesite="Lax")

    def identity(self, request: Request) -> str | None:
        ticket = self.cookie.identify(request)
        return ticket["userid"] if ticket else None

    def authenticated_userid(self, request: Request) -> str | None:
        return self.identity(request)

    def permits(self, request: Request, context: Any, permission: str) -> Allowed | Denied:
        if permission == "chat" and self.identity(request):
            return Allowed("logged in")
        return Denied("log in to chat")

    def remember(self, request: Request, userid: str, **kw: Any) -> Sequence[tuple[str, str]]:
        headers: Sequence[tuple[str, str]] = self.cookie.remember(request, userid, **kw)
        return headers

    def forget(self, request: Request, **kw: Any) -> Sequence[tuple[str, str]]:
        headers: Sequence[tuple[str, str]] = self.cookie.forget(request)
        return headers
