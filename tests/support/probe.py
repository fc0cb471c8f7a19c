"""What an application observed: one :class:`Probe` on each test application's registry.

The ASGI and WebSocket test applications record on it what happened to their
views, so a test (or, under a server in another process, the ``/stats``
view) can check that ``finally`` blocks and callbacks ran exactly once.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter, defaultdict

from pyramid.request import Request

from aiopyramid_ng.websocket import WebSocket


class Probe:
    """What the application observed; one per application object."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        #: Callbacks of each WebSocket Room, by its ``id`` query parameter, in order.
        self.calls: defaultdict[str, list[str]] = defaultdict(list)
        self.errors: list[str] = []
        self.notes: list[str] = []
        #: The first connection to ``/ws/relay``, which the next one sends to.
        self.relay: WebSocket | None = None
        # Created on first use, so each is bound to the loop serving the app.
        self._events: dict[str, asyncio.Event] = {}
        self.thread_gates: dict[str, threading.Event] = {}

    def event(self, name: str) -> asyncio.Event:
        return self._events.setdefault(name, asyncio.Event())

    def thread_gate(self, name: str) -> threading.Event:
        return self.thread_gates.setdefault(name, threading.Event())


def probe_of(request: Request) -> Probe:
    """The probe of ``request``'s application."""
    probe: Probe = request.registry.probe
    return probe
