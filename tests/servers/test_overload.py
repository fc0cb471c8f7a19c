"""A burst ten times the application's concurrency bound, over real uvicorn.

The application (``tests/support/overload_app.py``, served by uvicorn in a
subprocess) admits 10 requests at once (``aiopyramid_ng.max_concurrency``)
with a deadline of 2 s (``aiopyramid_ng.timeout``); each admitted request
waits 0.1 s.  120 clients send requests back to back for 1.5 s, each on its own
keep-alive connection.  The shed ones must
get their 503 (with ``Retry-After``) well before the deadline, the admitted
ones must finish within it, and right after the burst a request must be
admitted at once.  The figures are printed and recorded as properties of
the test (``--junitxml`` shows them).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.support import REPO_ROOT
from tests.support.overload_app import BOUND, DEADLINE
from tests.support.servers import HOST, PATIENCE, accepts_connections, free_port, serving

CLIENTS = 12 * BOUND
BURST = 1.5


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Client:
    """One keep-alive HTTP/1.1 connection sending ``GET /`` back to back.

    Written on asyncio streams rather than with httpx: 120 httpx clients in
    one process spend more time in the client than the server takes to shed,
    and then measure the client's own queueing instead of the server's answer.
    """

    def __init__(self, port: int):
        self.port = port

    async def run(
        self, until: float, admitted: list[float], shed: list[float], other: list[str]
    ) -> None:
        reader, writer = await asyncio.open_connection(HOST, self.port)
        try:
            while time.monotonic() < until:
                started = time.monotonic()
                writer.write(b"GET / HTTP/1.1\r\nHost: overload\r\n\r\n")
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
                length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
                await reader.readexactly(length)
                took = time.monotonic() - started
                status = head.split(" ", 2)[1]
                if status == "200":
                    admitted.append(took)
                elif status == "503" and "\r\nretry-after: 1\r\n" in head:
                    shed.append(took)
                else:
                    other.append(head)
        finally:
            writer.close()
            await writer.wait_closed()


async def overload(port: int) -> tuple[list[float], list[float], list[str]]:
    admitted: list[float] = []
    shed: list[float] = []
    other: list[str] = []
    until = time.monotonic() + BURST
    clients = [Client(port).run(until, admitted, shed, other) for _ in range(CLIENTS)]
    await asyncio.wait_for(asyncio.gather(*clients), PATIENCE)
    return admitted, shed, other


def test_a_burst_ten_times_the_bound_is_shed_fast_and_recovers_at_once(
    record_property: Callable[[str, object], None], tmp_path: Path
) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "tests.support.overload_app:app", "--host", HOST]
    argv += ["--port", str(port), "--log-level", "warning", "--backlog", "4096"]
    url = f"http://{HOST}:{port}"
    with serving(argv, tmp_path / "uvicorn.log", accepts_connections(port), cwd=REPO_ROOT):
        admitted, shed, other = asyncio.run(overload(port))
        started = time.monotonic()
        after = httpx.get(url + "/", timeout=PATIENCE)
        recovery = time.monotonic() - started

    figures = {
        "admitted": len(admitted),
        "admitted_p50_ms": round(statistics.median(admitted) * 1000, 1),
        "admitted_p99_ms": round(quantile(admitted, 0.99) * 1000, 1),
        "shed": len(shed),
        "shed_p50_ms": round(statistics.median(shed) * 1000, 1),
        "shed_p99_ms": round(quantile(shed, 0.99) * 1000, 1),
        "recovery_ms": round(recovery * 1000, 1),
    }
    print("\noverload:", figures)
    for name, value in figures.items():
        record_property(name, value)

    assert other == []  # every answer is a 200 or a 503 with Retry-After: no 504, no error
    assert len(shed) > len(admitted)  # the burst really was beyond the bound
    assert len(admitted) >= BOUND
    assert max(admitted) < DEADLINE  # admitted requests finish within their deadline
    assert quantile(shed, 0.99) < DEADLINE / 4  # a 503 arrives well before the deadline
    assert after.status_code == 200
    assert recovery < DEADLINE / 4  # admitted at once once the burst is over
