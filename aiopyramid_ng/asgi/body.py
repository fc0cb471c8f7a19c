"""Reading an ASGI request body before the WSGI application sees it.

WSGI code reads ``wsgi.input`` synchronously and may read it more than once
(``request.POST``, ``json_body``, ``make_body_seekable()``), from a request
greenlet or an executor thread.  Receiving the body from the server is
asynchronous, so it is read completely *before* the application runs: small
bodies stay in memory, larger ones spill to a temporary file, and a body over
the limit is refused without the application running at all.
"""

from __future__ import annotations

from io import BytesIO
from tempfile import SpooledTemporaryFile
from typing import IO

from ..exceptions import ClientDisconnected
from ..types import Receive, ReceiveEvent

__all__ = ["SPOOL_SIZE", "BodyTooLarge", "read_body"]

#: Bodies up to this size stay in memory; larger ones go to a temporary file.
SPOOL_SIZE = 1024 * 1024


class BodyTooLarge(Exception):
    """The request body exceeds the application's limit."""


def _chunk_of(message: ReceiveEvent) -> tuple[bytes, bool]:
    """The body chunk of one message, and whether more chunks follow."""
    if message["type"] == "http.request":
        return message.get("body", b""), message.get("more_body", False)
    if message["type"] == "http.disconnect":
        raise ClientDisconnected()
    return b"", False  # nothing but the two above is sent; end the body


async def read_body(receive: Receive, limit: int) -> tuple[IO[bytes], int]:
    """Receive the whole request body; return it rewound, with its length.

    Works the same for a body with ``Content-Length`` and a chunked one.

    :raises BodyTooLarge: as soon as more than ``limit`` bytes arrived.
    :raises ClientDisconnected: on ``http.disconnect`` before the last chunk.
    """
    message = await receive()
    chunk, more = _chunk_of(message)
    size = len(chunk)
    if size > limit:
        raise BodyTooLarge()
    if not more and size <= SPOOL_SIZE:
        # Most bodies (every GET) arrive in one message: a BytesIO shares that
        # bytes object until written to, where a spooled file would copy it.
        return BytesIO(chunk), size
    # Writes past SPOOL_SIZE go to a temporary file on the loop thread: they
    # land in the page cache and cost about as much as the copy in memory
    # would, while a thread hop per chunk would cost more than the write.
    body: IO[bytes] = SpooledTemporaryFile(max_size=SPOOL_SIZE)  # noqa: SIM115 - returned open
    try:
        body.write(chunk)
        while more:
            message = await receive()
            chunk, more = _chunk_of(message)
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge()
            body.write(chunk)
    except BaseException:
        body.close()
        raise
    body.seek(0)
    return body, size
