"""The views: coroutine views, a blocking view, a stream, a JSON API, a form, a WebSocket."""

from __future__ import annotations

import asyncio
import html
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from pyramid.httpexceptions import HTTPBadRequest
from pyramid.request import Request
from pyramid.response import Response
from pyramid.view import notfound_view_config, view_config

from aiopyramid_ng.helpers import synchronize
from aiopyramid_ng.websocket import WebSocket, WebsocketMapper

log = logging.getLogger(__name__)

#: Upper bounds for the query parameters of /events, so one client cannot
#: hold a connection open forever.
MAX_EVENTS = 20
MAX_INTERVAL = 60.0


@view_config(route_name="home", renderer="json")
async def home(request: Request) -> dict[str, Any]:
    """A coroutine view: the event loop serves other requests while it waits."""
    await asyncio.sleep(0.01)  # stands in for a database or HTTP call
    log.info("home page served to %s", request.client_addr)
    return {"message": "Hello from Pyramid on asyncio", "path": request.path}


@view_config(route_name="blocking", renderer="json")
def blocking(request: Request) -> dict[str, Any]:
    """A plain view: it runs in the application's thread pool, so blocking is fine."""
    time.sleep(0.02)  # stands in for a blocking client library
    return {"thread": threading.current_thread().name, "pid": os.getpid()}


@synchronize
async def pause(seconds: float) -> None:
    await asyncio.sleep(seconds)


def _float_param(request: Request, name: str, default: float, low: float, high: float) -> float:
    raw = request.params.get(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not low <= value <= high:
        raise HTTPBadRequest(json_body={"error": f"{name} must be a number from {low} to {high}"})
    return value


@view_config(route_name="events")
async def events(request: Request) -> Response:
    """Server-sent events: ``count`` events, ``interval`` seconds apart.

    The body is a plain generator.  aiopyramid_ng iterates it in the request's
    greenlet, so the synchronized ``pause`` suspends this stream only, and
    each event reaches the client as soon as it is yielded.
    """
    count = int(_float_param(request, "count", 3, 1, MAX_EVENTS))
    interval = _float_param(request, "interval", 0.5, 0, MAX_INTERVAL)

    def stream() -> Iterator[bytes]:
        for number in range(count):
            if number:
                pause(interval)
            payload = json.dumps({"n": number, "of": count})
            yield f"id: {number}\ndata: {payload}\n\n".encode()

    return Response(
        app_iter=stream(),
        content_type="text/event-stream",
        cache_control="no-cache",
    )


@view_config(route_name="notes", request_method="GET", renderer="json")
async def list_notes(request: Request) -> dict[str, Any]:
    return {"notes": [note.as_json() for note in request.notes.all()]}


@view_config(route_name="notes", request_method="POST", renderer="json")
async def create_note(request: Request) -> dict[str, Any]:
    try:
        text = request.json_body["text"]
    except (ValueError, KeyError, TypeError):
        text = None
    if not isinstance(text, str) or not text.strip():
        raise HTTPBadRequest(json_body={"error": 'send JSON like {"text": "a non-empty string"}'})
    note = request.notes.add(text.strip())
    request.response.status_code = 201
    return note.as_json()


FORM_PAGE = """<!DOCTYPE html>
<html><head><title>Say hello</title></head>
<body>
<h1>Say hello</h1>
{errors}
<form method="post" action="/form">
<label>Name <input name="name" value="{name}" maxlength="50"></label>
<label>Age <input name="age" value="{age}" inputmode="numeric"></label>
<button type="submit">Send</button>
</form>
</body></html>
"""


def _form_page(name: str = "", age: str = "", errors: list[str] | None = None) -> str:
    error_list = "".join(f"<li>{html.escape(error)}</li>" for error in errors or [])
    return FORM_PAGE.format(
        name=html.escape(name),
        age=html.escape(age),
        errors=f'<ul class="errors">{error_list}</ul>' if error_list else "",
    )


@view_config(route_name="form", request_method="GET")
def show_form(request: Request) -> Response:
    return Response(_form_page())


@view_config(route_name="form", request_method="POST")
def submit_form(request: Request) -> Response:
    """Validate the form; invalid input gets the form back with a 400 status."""
    name = request.POST.get("name", "").strip()
    age = request.POST.get("age", "").strip()
    errors = []
    if not 1 <= len(name) <= 50:
        errors.append("Name must be 1 to 50 characters long.")
    if not (age.isdigit() and int(age) <= 150):
        errors.append("Age must be a whole number from 0 to 150.")
    if errors:
        return Response(_form_page(name, age, errors), status=400)
    greeting = f"<p>Hello, {html.escape(name)}! You are {int(age)}.</p>"
    return Response(f"<!DOCTYPE html><html><body>{greeting}</body></html>")


@view_config(route_name="echo", mapper=WebsocketMapper)
async def echo(ws: WebSocket) -> None:
    """A WebSocket view: sends every message back until the client closes."""
    while (message := await ws.recv()) is not None:
        await ws.send(message)


@notfound_view_config(renderer="json")
def notfound(request: Request) -> dict[str, Any]:
    request.response.status_code = 404
    return {"error": "not found", "path": request.path}
