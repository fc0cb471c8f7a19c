"""Unix socket files the runners bind themselves.

A server stopped without its shutdown (``SIGKILL``, a crash) leaves its
socket file behind, and binding the same path again fails with "address
already in use".  asyncio's ``create_unix_server`` (uvicorn in one process)
and hypercorn remove such a file before binding; the runners do the same
where they bind the path themselves or hand it to a server that does not.
"""

from __future__ import annotations

import contextlib
import os
import stat

__all__ = ["remove_stale_socket"]


def remove_stale_socket(path: str) -> None:
    """Remove the unix socket file at ``path``, if there is one.

    Anything else at ``path`` (a regular file, a directory: a typo in the
    option) is left alone, so that binding fails and says so.
    """
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.remove(path)
