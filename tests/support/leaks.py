"""What a request could leave behind: request greenlets, threads, threadlocal entries, tasks."""

from __future__ import annotations

import asyncio
import gc
import threading

from pyramid.threadlocal import manager

from aiopyramid_ng.bridge import RequestGreenlet


def request_greenlets() -> list[RequestGreenlet]:
    """Request greenlets that are started and not finished: suspended forever if leaked."""
    gc.collect()
    return [obj for obj in gc.get_objects() if isinstance(obj, RequestGreenlet) and obj]


class LeakCheck:
    """Snapshot of everything a request could leave behind."""

    def __init__(self) -> None:
        self.greenlets = len(request_greenlets())
        self.threads = threading.active_count()
        self.stack = list(manager.stack)

    def assert_clean(
        self, loop: asyncio.AbstractEventLoop | None = None, max_new_threads: int = 0
    ) -> None:
        assert len(request_greenlets()) == self.greenlets, "request greenlets leaked"
        assert threading.active_count() <= self.threads + max_new_threads, "threads leaked"
        assert manager.stack == self.stack, "threadlocal entries leaked"
        if loop is not None:
            pending = [t for t in asyncio.all_tasks(loop) if t is not asyncio.current_task(loop)]
            assert pending == [], "tasks leaked"
