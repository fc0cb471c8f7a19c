"""The page, the login, and the chat room's WebSocket view."""

from __future__ import annotations

import json
from html import escape
from string import Template
from typing import Any

from pyramid.httpexceptions import HTTPSeeOther
from pyramid.request import Request
from pyramid.response import Response
from pyramid.security import forget, remember
from pyramid.view import view_config

from aiopyramid_ng.websocket import WebsocketConnectionView

#: The group every member's connection joins.
ROOM = "room"
#: The longest name and message accepted.
MAX_NAME = 32
MAX_MESSAGE = 500

LOGIN = Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Chat</title></head>
<body>
<h1>Chat</h1>
<form method="post" action="$login">
  <label>Your name <input id="name" name="name" maxlength="$max_name" required autofocus></label>
  <button id="login">Enter the room</button>
</form>
</body></html>
""")

PAGE = Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Chat</title></head>
<body data-socket="$socket">
<h1>Chat</h1>
<p>You are <strong id="me">$name</strong> &middot; <span id="status">connecting</span>
  <form method="post" action="$logout" style="display:inline"><button>Leave</button></form></p>
<ul id="messages"></ul>
<form id="say">
  <input id="message" maxlength="$max_message" autocomplete="off" required autofocus>
  <button id="send">Send</button>
</form>
<script>
const scheme = location.protocol === "https:" ? "wss://" : "ws://";
const socket = new WebSocket(scheme + location.host + document.body.dataset.socket);
const status = document.getElementById("status");
const messages = document.getElementById("messages");
const input = document.getElementById("message");
socket.onopen = () => { status.textContent = "connected"; };
socket.onclose = (event) => { status.textContent = "disconnected (" + event.code + ")"; };
socket.onmessage = (event) => {
  const data = JSON.parse(event.data);
  const item = document.createElement("li");
  item.textContent = data.kind === "message" ? data.user + ": " + data.text
                                             : data.user + " " + data.kind + " the room";
  messages.appendChild(item);
};
document.getElementById("say").onsubmit = (event) => {
  event.preventDefault();
  socket.send(input.value);
  input.value = "";
};
</script>
</body></html>
""")


@view_config(route_name="home", request_method="GET")
def home(request: Request) -> Response:
    name = request.identity
    if name is None:
        body = LOGIN.substitute(login=request.route_path("login"), max_name=MAX_NAME)
    else:
        body = PAGE.substitute(
            name=escape(name),
            socket=escape(request.route_path("chat")),
            logout=request.route_path("logout"),
            max_message=MAX_MESSAGE,
        )
    return Response(body, content_type="text/html")


@view_config(route_name="login", request_method="POST")
def login(request: Request) -> HTTPSeeOther:
    name = " ".join(request.POST.get("name", "").split())[:MAX_NAME]
    headers = remember(request, name) if name else []
    return HTTPSeeOther(request.route_url("home"), headers=headers)


@view_config(route_name="logout", request_method="POST")
def logout(request: Request) -> HTTPSeeOther:
    return HTTPSeeOther(request.route_url("home"), headers=forget(request))


@view_config(route_name="chat", permission="chat")
class ChatRoom(WebsocketConnectionView):
    """One member's connection: what it sends goes to everyone in the room."""

    async def tell_room(self, event: dict[str, Any]) -> None:
        """Broadcast ``event`` as JSON to every member (this one too, while it is in)."""
        await self.request.broadcast(ROOM, json.dumps(event))

    async def on_open(self) -> None:
        await self.join(ROOM)
        await self.tell_room({"kind": "joined", "user": self.request.identity})

    async def on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        await self.tell_room(
            {"kind": "message", "user": self.request.identity, "text": message[:MAX_MESSAGE]}
        )

    async def on_close(self) -> None:
        # Leaving would happen by itself once the connection closes; leaving
        # first keeps the farewell from being queued for this connection.
        await self.leave(ROOM)
        await self.tell_room({"kind": "left", "user": self.request.identity})
