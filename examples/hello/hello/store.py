"""An in-memory note store, safe to share between requests."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Note:
    id: int
    text: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class NoteStore:
    """Notes kept in memory for the life of the process.

    Coroutine views call it from request greenlets on the event loop and
    plain views from the thread pool, so a :class:`threading.Lock` guards
    it.  The lock is only ever held for a few statements that never await:
    held across an await it would freeze the event loop the moment a second
    request on that loop asked for it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._notes: dict[int, Note] = {}
        self._last_id = 0

    def add(self, text: str) -> Note:
        with self._lock:
            self._last_id += 1
            note = self._notes[self._last_id] = Note(self._last_id, text)
        return note

    def all(self) -> list[Note]:
        with self._lock:
            return list(self._notes.values())
