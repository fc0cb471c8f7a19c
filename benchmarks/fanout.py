"""Fan-out: one publisher to many WebSocket members of one group, in memory and over Redis.

::

    python benchmarks/fanout.py              # memory:// and redis://, 1000 members, 3 rounds
    python benchmarks/fanout.py --backends memory --members 200 --messages 50

For each round and backend, the driver starts the servers (uvicorn[standard]
running aiopyramid_ng, pinned to one half of the cores), connects
``--members`` WebSocket clients that join the group ``fanout``, then one
publisher sends ``--messages`` messages as fast as the server takes them;
the server broadcasts each with ``request.broadcast()``.  Every message
carries the driver's ``time.monotonic()`` at sending, so each delivery's
latency is read where it arrives, on the same clock.

* ``memory``: one server process, ``aiopyramid_ng.broadcast.url = memory://``;
* ``redis``: a ``redis-server`` (Debian's binary) and two server processes
  on one Redis; members are split between them and the publisher talks to
  the first, so half the deliveries cross processes through Redis.

Reported per run: deliveries per second (members times messages, over the time
from the first message of a burst sent to its last delivery), p50/p99
delivery latency of messages sent one every 0.1 s after the burst (below
the rate, so no queue stands ahead of them), deliveries missing after the
wait, and the server memory added
per member (resident memory with every member joined, minus before any
connected, over the number of members; both processes for ``redis``).
The members are Python clients on the load cores: with many members they,
not the server, can bound the rate; compare backends within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from load import percentile
from run import Server, free_port, memory_kib, pin, split_cores

GROUP = "fanout"
#: The latency phase: this many messages, one every PACE seconds.
PACED_MESSAGES = 20
PACE = 0.1


# --- the server side -------------------------------------------------------------------------


def fanout_app(url: str, queue_size: int) -> Any:
    """Members join the group and idle; the publisher's messages are broadcast to it."""
    from pyramid.config import Configurator

    from aiopyramid_ng.websocket import WebSocket, WebsocketMapper

    async def member(ws: WebSocket) -> None:
        await ws.join(GROUP)
        while await ws.recv() is not None:
            pass

    async def publisher(ws: WebSocket) -> None:
        while (message := await ws.recv()) is not None:
            await ws.request.broadcast(GROUP, message)

    settings = {
        "aiopyramid_ng.broadcast.url": url,
        # Room for the whole burst: the benchmark measures delivery, not
        # the closing of members that fall behind.
        "aiopyramid_ng.broadcast.queue_size": str(queue_size),
    }
    with Configurator(settings=settings) as config:
        config.include("aiopyramid_ng")
        config.add_route("member", "/member")
        config.add_route("publish", "/publish")
        config.add_view(member, route_name="member", mapper=WebsocketMapper)
        config.add_view(publisher, route_name="publish", mapper=WebsocketMapper)
        return config.make_asgi_app()


def serve(url: str, port: int, queue_size: int) -> None:
    import uvicorn
    from apps import UVICORN_CONFIGS, raise_fd_limit

    raise_fd_limit()
    uvicorn.run(
        fanout_app(url, queue_size),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        backlog=4096,
        ws_max_queue=1024,
        **UVICORN_CONFIGS["standard"],
    )


# --- processes -------------------------------------------------------------------------------


def _wait_for_port(started: Server, ready: bytes | None = None) -> Server:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if started.process.poll() is not None:
            raise RuntimeError(f"{started.name} exited at start; see {started.log}")
        try:
            with socket.create_connection(("127.0.0.1", started.port), timeout=1) as sock:
                if ready is None:
                    return started
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(ready):
                    return started
        except OSError:
            pass
        time.sleep(0.05)
    started.stop()
    raise RuntimeError(f"{started.name} did not start; see {started.log}")


def start_redis(logs: Path, cores: set[int] | None) -> Server:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit(
            "redis-server is not installed (apt-get install redis-server), or run --backends memory"
        )
    port = free_port()
    log = logs / f"redis-{port}.log"
    with log.open("wb") as output:
        # In memory only: nothing saved, nothing appended.
        persistence = ["--save", "", "--appendonly", "no"]
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", *persistence],
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=logs,
        )
    pin(process.pid, cores)
    return _wait_for_port(Server("redis-server", port, process, log), ready=b"+PONG")


def start_server(url: str, queue_size: int, logs: Path, cores: set[int] | None) -> Server:
    port = free_port()
    log = logs / f"fanout-{port}.log"
    here = Path(__file__).resolve().parent
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, str(here / "fanout.py"), "--serve", url, str(port), str(queue_size)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    pin(process.pid, cores)
    return _wait_for_port(Server("aiopyramid_ng", port, process, log))


# --- the load side ---------------------------------------------------------------------------


@dataclass
class Result:
    backend: str
    round: int
    deliveries_per_second: float
    p50_ms: float
    p99_ms: float
    missing: int
    kib_per_member: float


async def _connect(port: int, path: str, timeout: float) -> Any:
    from websockets.asyncio.client import connect

    return await asyncio.wait_for(
        connect(f"ws://127.0.0.1:{port}{path}", max_size=None, compression=None), timeout
    )


async def fan_out(
    ports: list[int], members: int, messages: int, timeout: float, rss: Any
) -> tuple[float, list[float], int, float]:
    """Connect the members over ``ports``, publish to the first; return the figures."""
    before = rss()
    gate = asyncio.Semaphore(64)  # handshakes in flight at once

    async def join(number: int) -> Any:
        async with gate:
            return await _connect(ports[number % len(ports)], "/member", timeout)

    clients = await asyncio.gather(*(join(n) for n in range(members)))
    # Joining is asynchronous on the server: wait until every member hears a probe.
    publisher = await _connect(ports[0], "/publish", timeout)
    await asyncio.sleep(1.0)
    await publisher.send("probe")
    await asyncio.gather(*(asyncio.wait_for(c.recv(), timeout) for c in clients))
    added_kib = (rss() - before) / members

    async def publish(count: int, interval: float) -> tuple[float, list[float], int]:
        latencies: list[float] = []
        last_delivery = [0.0]
        missing = [0]

        async def receive(client: Any) -> None:
            for _ in range(count):
                try:
                    message = await asyncio.wait_for(client.recv(), timeout)
                except Exception:
                    missing[0] += 1
                    continue
                now = time.monotonic()
                latencies.append(now - float(message.partition(" ")[0]))
                last_delivery[0] = now

        receivers = [asyncio.ensure_future(receive(c)) for c in clients]
        first = time.monotonic()
        for _ in range(count):
            await publisher.send(f"{time.monotonic()!r} {'x' * 48}")
            if interval:
                await asyncio.sleep(interval)
        await asyncio.gather(*receivers)
        elapsed = max(last_delivery[0] - first, 1e-9)
        return (members * count - missing[0]) / elapsed, latencies, missing[0]

    # A burst, for the rate; then a message every ``pace`` seconds, below
    # that rate, for the latency of one delivery without a queue ahead of it.
    rate, _, burst_missing = await publish(messages, 0.0)
    _, latencies, paced_missing = await publish(PACED_MESSAGES, PACE)
    await asyncio.gather(publisher.close(), *(c.close() for c in clients), return_exceptions=True)
    return rate, latencies, burst_missing + paced_missing, added_kib


def run_one(backend: str, number: int, args: argparse.Namespace, logs: Path) -> Result:
    split = split_cores()
    server_cores, _load_cores = split if split else (None, None)
    started: list[Server] = []
    try:
        if backend == "memory":
            urls = ["memory://"]
        else:
            redis = start_redis(logs, server_cores)
            started.append(redis)
            urls = [f"redis://127.0.0.1:{redis.port}/0"] * 2
        servers = [start_server(url, args.messages + 64, logs, server_cores) for url in urls]
        started.extend(servers)
        pids = [s.process.pid for s in servers]

        def rss() -> int:
            return sum(memory_kib(pid, "VmRSS") for pid in pids)

        rate, latencies, missing, kib = asyncio.run(
            fan_out([s.port for s in servers], args.members, args.messages, args.timeout, rss)
        )
    finally:
        for process in reversed(started):
            process.stop()
    latencies.sort()
    return Result(
        backend,
        number,
        rate,
        percentile(latencies, 0.5) * 1000,
        percentile(latencies, 0.99) * 1000,
        missing,
        kib,
    )


def print_result(result: Result) -> None:
    print(
        f"{result.round:>3}  {result.backend:<7} {result.deliveries_per_second:>12.0f} "
        f"{result.p50_ms:>8.2f} {result.p99_ms:>8.2f} {result.missing:>8} "
        f"{result.kib_per_member:>9.1f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="memory,redis", help="comma-separated: memory, redis")
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=100, help="messages per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a message")
    parser.add_argument(
        "--serve", nargs=3, metavar=("URL", "PORT", "QUEUE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), int(args.serve[2]))
        return
    backends = args.backends.split(",")
    unknown = set(backends) - {"memory", "redis"}
    if unknown:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")
    split = split_cores()
    pin(os.getpid(), split[1] if split else None)
    from apps import raise_fd_limit

    raise_fd_limit()
    logs = Path(tempfile.mkdtemp(prefix="aiopyramid_ng-fanout-"))
    print(f"{args.members} members, {args.messages} messages per run; logs in {logs}")
    print(
        f"{'rnd':>3}  {'backend':<7} {'deliveries/s':>12} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'missing':>8} {'KiB/memb':>9}"
    )
    results = []
    for number in range(1, args.rounds + 1):
        shift = (number - 1) % len(backends)
        for backend in backends[shift:] + backends[:shift]:
            result = run_one(backend, number, args, logs)
            results.append(result)
            print_result(result)
    print("\nMedians over rounds:")
    for backend in backends:
        mine = [r for r in results if r.backend == backend]
        print(
            f"     {backend:<7} {statistics.median(r.deliveries_per_second for r in mine):>12.0f} "
            f"{statistics.median(r.p50_ms for r in mine):>8.2f} "
            f"{statistics.median(r.p99_ms for r in mine):>8.2f} "
            f"{sum(r.missing for r in mine):>8} "
            f"{statistics.median(r.kib_per_member for r in mine):>9.1f}"
        )


if __name__ == "__main__":
    main()
