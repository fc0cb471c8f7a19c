"""Load generators: wrk for HTTP if installed, else asyncio clients (always for WebSockets)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Request:
    path: str
    method: str = "GET"
    body: bytes = b""
    content_type: str = ""


@dataclass
class Result:
    #: Successful (2xx) responses, or echoed messages, per second.
    per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


def percentile(ordered: Sequence[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _summary(latencies: list[float], errors: int, elapsed: float) -> Result:
    ordered = sorted(latencies)
    return Result(
        len(latencies) / elapsed,
        percentile(ordered, 0.50) * 1000,
        percentile(ordered, 0.99) * 1000,
        errors,
    )


# --- wrk ------------------------------------------------------------------------------------------

_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk_ms(output: str, label: str) -> float:
    match = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    return float(match.group(1)) * _WRK_UNITS[match.group(2)] if match else float("nan")


def wrk_load(
    wrk: str,
    port: int,
    request: Request,
    connections: int,
    duration: float,
    timeout: float,
    threads: int,
) -> Result:
    """Run wrk against ``request`` and read its report (non-2xx answers count as errors)."""
    command = [
        wrk,
        f"-t{max(1, min(connections, threads))}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={max(1, round(timeout))}s",
        "--latency",
    ]
    with tempfile.TemporaryDirectory() as scratch:
        if request.method != "GET":
            # wrk sends a body only from a Lua script; the body goes in a file.
            body = Path(scratch, "body")
            body.write_bytes(request.body)
            script = Path(scratch, "request.lua")
            script.write_text(
                f'local f = io.open("{body}", "rb")\n'
                "wrk.body = f:read('*a')\nf:close()\n"
                f'wrk.method = "{request.method}"\n'
                f'wrk.headers["Content-Type"] = "{request.content_type}"\n'
            )
            command += ["-s", str(script)]
        output = subprocess.run(
            [*command, f"http://127.0.0.1:{port}{request.path}"],
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        ).stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", output)
    if done is None:
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    seconds = float(done.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[done.group(3)]
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    failed = int(non_2xx.group(1)) if non_2xx else 0
    errors = sum(int(n) for n in socket_errors.groups()) if socket_errors else 0
    return Result(
        (int(done.group(1)) - failed) / seconds,
        _wrk_ms(output, "50%"),
        _wrk_ms(output, "99%"),
        errors + failed,
    )


# --- built-in HTTP ------------------------------------------------------------------------------


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    """Read one response; return its status code (its body is read and dropped)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    if length is not None:
        await reader.readexactly(int(length.group(1)))
    elif re.search(rb"(?i)\r\ntransfer-encoding: *chunked", head):
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    else:
        raise ValueError("response without Content-Length or chunked body")
    return head[9:12]


async def _http_connection(
    port: int,
    raw: bytes,
    stop_at: float,
    timeout: float,
    latencies: list[float],
    errors: list[int],
) -> None:
    writer = None
    while time.perf_counter() < stop_at:
        try:
            # A server that stops answering must not stall the whole run.
            async with asyncio.timeout(timeout):
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                started = time.perf_counter()
                writer.write(raw)
                status = await _read_response(reader)
            if status.startswith(b"2"):
                latencies.append(time.perf_counter() - started)
            else:
                errors.append(1)
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
            errors.append(1)
            if writer is not None:
                writer.close()
            writer = None
    if writer is not None:
        writer.close()


def builtin_load(
    port: int, request: Request, connections: int, duration: float, timeout: float
) -> Result:
    """Keep ``connections`` keep-alive connections busy with ``request`` for ``duration`` seconds.

    A request without a complete answer after ``timeout`` seconds counts as
    an error and its connection is replaced.  Written in Python, it saturates
    well before wrk does.
    """
    head = f"{request.method} {request.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if request.method != "GET":
        head += f"Content-Type: {request.content_type}\r\nContent-Length: {len(request.body)}\r\n"
    raw = head.encode() + b"\r\n" + request.body

    async def run() -> Result:
        latencies: list[float] = []
        errors: list[int] = []
        started = time.perf_counter()
        stop_at = started + duration
        await asyncio.gather(
            *(
                _http_connection(port, raw, stop_at, timeout, latencies, errors)
                for _ in range(connections)
            )
        )
        return _summary(latencies, len(errors), time.perf_counter() - started)

    return asyncio.run(run())


# --- WebSockets -----------------------------------------------------------------------------------


async def _connect(port: int, path: str, timeout: float) -> object:
    from websockets.asyncio.client import connect

    return await asyncio.wait_for(
        connect(f"ws://127.0.0.1:{port}{path}", max_size=None, compression=None), timeout
    )


def websocket_echo(
    port: int, path: str, connections: int, duration: float, timeout: float
) -> Result:
    """Messages echoed per second over ``connections`` connections, one message in flight each."""
    message = "x" * 64

    async def client(stop_at: float, latencies: list[float], errors: list[int]) -> None:
        try:
            ws = await _connect(port, path, timeout)
        except Exception:
            errors.append(1)
            return
        try:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                await ws.send(message)  # type: ignore[attr-defined]
                if await asyncio.wait_for(ws.recv(), timeout) != message:  # type: ignore[attr-defined]
                    errors.append(1)
                    continue
                latencies.append(time.perf_counter() - started)
        except Exception:
            errors.append(1)
        finally:
            await ws.close()  # type: ignore[attr-defined]

    async def run() -> Result:
        latencies: list[float] = []
        errors: list[int] = []
        started = time.perf_counter()
        await asyncio.gather(
            *(client(started + duration, latencies, errors) for _ in range(connections))
        )
        return _summary(latencies, len(errors), time.perf_counter() - started)

    return asyncio.run(run())


def websocket_idle(
    port: int, path: str, connections: int, timeout: float, measure: Callable[[], int]
) -> tuple[int, int, int]:
    """Open ``connections`` idle connections; return (opened, failed, bytes of server RSS added).

    ``measure`` reads the server's resident memory; it is called before the
    first connection and once all are open and settled.
    """

    async def run() -> tuple[int, int, int]:
        before = measure()
        gate = asyncio.Semaphore(64)  # handshakes in flight, below the listen backlog

        async def open_one() -> object | None:
            async with gate:
                try:
                    return await _connect(port, path, timeout)
                except Exception:
                    return None

        sockets = await asyncio.gather(*(open_one() for _ in range(connections)))
        opened = [ws for ws in sockets if ws is not None]
        await asyncio.sleep(2)  # let the server settle its buffers
        added = measure() - before
        await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)  # type: ignore[attr-defined]
        return len(opened), connections - len(opened), added

    return asyncio.run(run())
