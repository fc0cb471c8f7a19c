"""A lock that synchronous request code can hold across waits.

A ``threading.Lock`` held by one request greenlet while it waits (through
``synchronize`` or ``await_``) freezes the whole event loop as soon as a
second greenlet asks for it: the second one blocks the loop thread, so the
first can never resume to release it.  A ``threading.RLock`` lets the second
greenlet straight in, since both run on the same thread.  :class:`Lock` makes
the waiting request greenlet (or coroutine) suspend instead.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from .bridge import in_bridge
from .waiting import await_

__all__ = ["Lock"]


async def _release(lock: asyncio.Lock) -> None:
    lock.release()


class Lock:
    """Mutual exclusion for request code, usable as ``with lock:`` and ``async with lock:``.

    From a request greenlet, ``acquire()`` suspends only the calling request;
    from a worker thread serving a request, it blocks that thread while the
    request's loop waits for the lock.  Like :class:`asyncio.Lock`, it binds to
    the first event loop that waits on it; it is not reentrant.
    """

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    def locked(self) -> bool:
        """Return True when some request holds the lock."""
        return self._lock.locked()

    def acquire(self) -> bool:
        """Wait until the lock is free, then take it."""
        return await_(self._lock.acquire())

    def release(self) -> None:
        """Let the next waiter in.

        :raises RuntimeError: when the lock is not held.
        """
        if in_bridge():
            self._lock.release()
        else:
            # asyncio.Lock is not thread-safe: release it on its loop.
            await_(_release(self._lock))

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    async def __aenter__(self) -> bool:
        return await self._lock.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._lock.release()
