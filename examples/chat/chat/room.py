"""The chat room: the connections in it, and sending to all of them."""

from __future__ import annotations

import json
from typing import Any

from aiopyramid_ng.websocket import ConnectionClosedError, WebSocket


class Room:
    """The open connections of one application; all of them run on its event loop."""

    def __init__(self) -> None:
        self.members: set[WebSocket] = set()

    def join(self, ws: WebSocket) -> None:
        self.members.add(ws)

    def leave(self, ws: WebSocket) -> None:
        self.members.discard(ws)

    async def broadcast(self, event: dict[str, Any]) -> None:
        """Send ``event`` as JSON to every member."""
        text = json.dumps(event)
        for member in list(self.members):
            try:
                await member.send(text)
            except ConnectionClosedError:
                # It left while we were sending; its own view removes it.
                self.leave(member)
