"""aiopyramid_ng against Pyramid's ASGI cookbook recipe (asgiref's ``WsgiToAsgi``), under uvicorn.

Starts four uvicorn servers on free ports of 127.0.0.1, each in its own process:

* ``hello``: a hello-world Pyramid view, ``async def`` through aiopyramid_ng
  against a plain view through ``asgiref.wsgi.WsgiToAsgi``;
* ``wait 50 ms``: a view that waits 50 ms, ``await asyncio.sleep(0.05)``
  through aiopyramid_ng against ``time.sleep(0.05)`` through the recipe (a
  plain view has no other way to wait).

Each server is loaded for ``--duration`` seconds over a fixed number of
keep-alive connections, by ``wrk`` when it is installed and by a built-in
asyncio load generator otherwise.  Rounds interleave the servers (the order
alternates each round) so a change in machine load hits both sides.  Servers
and the load generator are pinned to different CPU cores when there are at
least two.  The table gives requests per second, median and 99th percentile
latency, errors (failed connections and non-200 answers) and, per round, the
ratio of aiopyramid_ng's throughput to the recipe's.

    python benchmarks/asgi_vs_recipe.py [--duration 5] [--rounds 3]

A run with the defaults takes about 1.5 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VARIANTS = ("aiopyramid_ng", "WsgiToAsgi recipe")
SCENARIOS = ("hello", "wait 50 ms")
WAIT = 0.05


# --- the applications --------------------------------------------------------------------------


def build_app(scenario: str, variant: str) -> Any:
    """Return the ASGI application a server process serves."""
    from pyramid.config import Configurator
    from pyramid.response import Response

    body = b"Hello, world!"

    async def coroutine_view(request: Any) -> Response:
        if scenario != "hello":
            await asyncio.sleep(WAIT)
        return Response(body, content_type="text/plain")

    def plain_view(request: Any) -> Response:
        if scenario != "hello":
            time.sleep(WAIT)
        return Response(body, content_type="text/plain")

    with Configurator() as config:
        config.add_route("root", "/")
        if variant == "aiopyramid_ng":
            config.include("aiopyramid_ng")
            config.add_view(coroutine_view, route_name="root")
        else:
            config.add_view(plain_view, route_name="root")
        router = config.make_wsgi_app()
    if variant == "aiopyramid_ng":
        from aiopyramid_ng.asgi import make_asgi_app

        return make_asgi_app(router)
    from asgiref.wsgi import WsgiToAsgi

    return WsgiToAsgi(router)  # type: ignore[no-untyped-call]


def serve(scenario: str, variant: str, port: int) -> None:
    import uvicorn

    uvicorn.run(
        build_app(scenario, variant),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        # The recipe's adapter rejects lifespan scopes.
        lifespan="on" if variant == "aiopyramid_ng" else "off",
        # Each request in a fresh context: asyncio can leak one request's
        # context variables into the next task on a kept-alive connection
        # (python/cpython#140947), which breaks asgiref's thread handling.
        reset_contextvars=True,
    )


# --- processes and cores -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def split_cores() -> tuple[set[int], set[int]] | None:
    """Return (server cores, load cores), or None when they cannot be kept apart."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    half = len(cores) // 2
    return set(cores[:half]), set(cores[half:])


def pin(pid: int, cores: set[int] | None) -> None:
    if cores is not None:
        os.sched_setaffinity(pid, cores)


@dataclass
class Server:
    scenario: str
    variant: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


def start_server(scenario: str, variant: str, cores: set[int] | None, logs: Path) -> Server:
    port = free_port()
    command = [sys.executable, __file__, "--serve", scenario, variant, str(port)]
    log = logs / f"{scenario} {variant}.log".replace(" ", "-")
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    pin(process.pid, cores)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the {variant} server for {scenario!r} exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return Server(scenario, variant, port, process, log)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the {variant} server for {scenario!r} did not start")


# --- load generation ---------------------------------------------------------------------------


@dataclass
class Result:
    #: Successful (200) responses per second; errors are counted apart.
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


def percentile(ordered: Sequence[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _connection_loop(
    port: int, stop_at: float, timeout: float, latencies: list[float], errors: list[int]
) -> None:
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    writer = None
    while time.perf_counter() < stop_at:
        try:
            # A server that stops answering must not stall the whole run.
            async with asyncio.timeout(timeout):
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                if match is None:
                    raise ValueError("response without Content-Length")
                await reader.readexactly(int(match.group(1)))
            if head[9:12] == b"200":
                latencies.append(time.perf_counter() - started)
            else:
                errors.append(1)
        except (
            OSError,
            TimeoutError,
            ValueError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            errors.append(1)
            if writer is not None:
                writer.close()
            writer = None
    if writer is not None:
        writer.close()


def builtin_load(port: int, connections: int, duration: float, timeout: float) -> Result:
    """Keep ``connections`` keep-alive connections busy for ``duration`` seconds.

    A request without a complete answer after ``timeout`` seconds counts as
    an error and its connection is replaced.
    """

    async def run() -> Result:
        latencies: list[float] = []
        errors: list[int] = []
        started = time.perf_counter()
        stop_at = started + duration
        await asyncio.gather(
            *(
                _connection_loop(port, stop_at, timeout, latencies, errors)
                for _ in range(connections)
            )
        )
        elapsed = time.perf_counter() - started
        ordered = sorted(latencies)
        return Result(
            len(latencies) / elapsed,
            percentile(ordered, 0.50) * 1000,
            percentile(ordered, 0.99) * 1000,
            len(errors),
        )

    return asyncio.run(run())


_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk_ms(output: str, label: str) -> float:
    match = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    return float(match.group(1)) * _WRK_UNITS[match.group(2)] if match else float("nan")


def wrk_load(
    wrk: str, port: int, connections: int, duration: float, timeout: float, cores: set[int] | None
) -> Result:
    threads = max(1, min(connections, len(cores) if cores else 1))
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        f"--timeout={timeout}s",
        "--latency",
    ]
    process = subprocess.Popen(
        [*command, f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE, text=True
    )
    pin(process.pid, cores)
    output, _ = process.communicate()
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = sum(int(n) for n in socket_errors.groups()) if socket_errors else 0
    if done is None:
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    seconds = float(done.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[done.group(3)]
    non_2xx_count = int(non_2xx.group(1)) if non_2xx else 0
    return Result(
        (int(done.group(1)) - non_2xx_count) / seconds,
        _wrk_ms(output, "50%"),
        _wrk_ms(output, "99%"),
        errors + non_2xx_count,
    )


# --- the run -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument(
        "--connections", type=int, default=32, help="connections for the hello scenario"
    )
    parser.add_argument(
        "--wait-connections",
        type=int,
        default=100,
        help="connections for the 50 ms scenario",
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds before a request counts as failed"
    )
    parser.add_argument(
        "--load", choices=("auto", "wrk", "builtin"), default="auto", help="load generator"
    )
    parser.add_argument("--serve", nargs=3, metavar=("SCENARIO", "VARIANT", "PORT"))
    args = parser.parse_args(argv)
    if args.serve:
        scenario, variant, port = args.serve
        serve(scenario, variant, int(port))
        return

    # Stopped with SIGTERM, still stop the servers (the finally clause below).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    wrk = shutil.which("wrk") if args.load != "builtin" else None
    if args.load == "wrk" and wrk is None:
        parser.error("wrk is not installed (apt-get install wrk), use --load builtin")
    split = split_cores()
    server_cores, load_cores = split if split else (None, None)
    pin(os.getpid(), load_cores)

    def load(server: Server, duration: float) -> Result:
        connections = args.connections if server.scenario == "hello" else args.wait_connections
        if wrk is not None:
            return wrk_load(wrk, server.port, connections, duration, args.timeout, load_cores)
        return builtin_load(server.port, connections, duration, args.timeout)

    print(f"load generator: {wrk or 'built-in asyncio'}; ", end="")
    if split:
        print(f"servers on cores {sorted(server_cores or ())}, load on {sorted(load_cores or ())}")
    else:
        print("cores not pinned (fewer than two available)")
    logs = Path(tempfile.mkdtemp(prefix="asgi_vs_recipe-"))
    servers = {
        (scenario, variant): start_server(scenario, variant, server_cores, logs)
        for scenario in SCENARIOS
        for variant in VARIANTS
    }
    try:
        for server in servers.values():
            load(server, 1.0)  # warm up: imports, code paths, connection setup
        run_rounds(servers, args.rounds, args.duration, load)
    finally:
        for server in servers.values():
            server.process.terminate()
        for server in servers.values():
            try:
                server.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.process.kill()  # a deadlocked server ignores SIGTERM
                server.process.wait()
    report_server_errors(servers.values())


def report_server_errors(servers: Iterable[Server]) -> None:
    """Say which servers logged exceptions, and the first one's message."""
    for server in servers:
        lines = server.log.read_text(errors="replace").splitlines()
        tracebacks = sum(line.startswith("Traceback") for line in lines)
        if tracebacks:
            first = next(
                (line for line in lines if re.match(r"^\w[\w.]*(Error|Exception)\b", line)), "?"
            )
            print(
                f"{server.variant} ({server.scenario}): {tracebacks} exceptions logged, "
                f"the first: {first}  (log: {server.log})"
            )


def run_rounds(
    servers: dict[tuple[str, str], Server],
    rounds: int,
    duration: float,
    load: Callable[[Server, float], Result],
) -> None:
    header = (
        f"{'round':>5}  {'scenario':<11} {'server':<18} {'req/s':>9} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'errors':>6}  {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for number in range(1, rounds + 1):
        for scenario in SCENARIOS:
            # Alternate which side goes first, so a drift in load is shared.
            order = VARIANTS if number % 2 else VARIANTS[::-1]
            results = {variant: load(servers[scenario, variant], duration) for variant in order}
            ratio = (
                results[VARIANTS[0]].requests_per_second / results[VARIANTS[1]].requests_per_second
                if results[VARIANTS[1]].requests_per_second
                else float("inf")
            )
            for variant in VARIANTS:
                result = results[variant]
                shown_ratio = f"{ratio:>5.2f}x" if variant == VARIANTS[0] else ""
                print(
                    f"{number:>5}  {scenario:<11} {variant:<18} "
                    f"{result.requests_per_second:>9.0f} {result.p50_ms:>8.2f} "
                    f"{result.p99_ms:>8.2f} {result.errors:>6}  {shown_ratio:>6}",
                    flush=True,
                )
    print("ratio: aiopyramid_ng requests per second / the recipe's, in the same round")


if __name__ == "__main__":
    main()
