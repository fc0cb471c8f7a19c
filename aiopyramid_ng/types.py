"""The ASGI and WSGI vocabulary shared by every module of aiopyramid_ng.

ASGI scopes and messages are the standard's own, from :mod:`asgiref.typing`:
a scope is narrowed to :class:`HTTPScope`, :class:`WebSocketScope` or
:class:`LifespanScope` by its ``type`` where the application dispatches it,
and each message the add-on builds is checked against its event type.

Servers and clients disagree on how they type their side: uvicorn and
hypercorn use TypedDicts like asgiref's, Starlette and httpx plain mappings.
The application's entry point accepts either (:data:`AnyScope`,
:data:`AnyReceive`, :data:`AnySend`), so it type-checks wherever it is
passed, and reads what it gets as asgiref's types from there on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeAlias

from asgiref.typing import ASGI3Application as ASGIApp
from asgiref.typing import ASGIReceiveCallable as Receive
from asgiref.typing import ASGIReceiveEvent as ReceiveEvent
from asgiref.typing import ASGISendCallable as Send
from asgiref.typing import ASGISendEvent as SendEvent
from asgiref.typing import (
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    HTTPScope,
    LifespanScope,
    Scope,
    WebSocketScope,
)

__all__ = [
    "ASGIApp",
    "AnyReceive",
    "AnyScope",
    "AnySend",
    "Environ",
    "ExcInfo",
    "HTTPScope",
    "LifespanScope",
    "Receive",
    "ReceiveEvent",
    "ResponseEvent",
    "ResponseSend",
    "Scope",
    "Send",
    "SendEvent",
    "StartResponse",
    "WSGIApp",
    "WebSocketScope",
]

#: A scope as any server or client types it:
#: asgiref's, hypercorn's and uvicorn's TypedDicts, or Starlette's and
#: httpx's mutable mappings, are all accepted where these are.
AnyScope: TypeAlias = Mapping[str, Any]
#: ``receive`` as any server or client types it.
AnyReceive: TypeAlias = Callable[[], Awaitable[Mapping[str, Any]]]
#: ``send`` as any server or client types it.
AnySend: TypeAlias = Callable[[Any], Awaitable[None]]

#: The messages of an HTTP response, and what sends them: the server's
#: ``send`` for an ``http`` scope, or a WebSocket connection's ``respond``,
#: which turns them into a refused handshake's ``websocket.http.response.*``.
ResponseEvent: TypeAlias = HTTPResponseStartEvent | HTTPResponseBodyEvent
ResponseSend: TypeAlias = Callable[[ResponseEvent], Awaitable[None]]

Environ: TypeAlias = dict[str, Any]
ExcInfo: TypeAlias = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse: TypeAlias = Callable[..., Callable[[bytes], object]]
WSGIApp: TypeAlias = Callable[[Environ, StartResponse], Iterable[bytes]]
