"""Benchmarks: aiopyramid_ng on uvicorn against raw ASGI, Starlette and other ways to run Pyramid.

uvicorn runs as users deploy it, with uvloop and httptools
(``uvicorn[standard]``); ``--uvicorn standard,h11`` adds a second pass on
the asyncio loop and h11.

For every round, every scenario and every server (see ``apps.py``), in an
order that rotates each round: start the server in its own process on a free
port of 127.0.0.1, wait until it accepts connections, warm it up, load it for
``--duration`` seconds, read its peak resident memory, and stop it by its
PID.  HTTP load comes from ``wrk`` when it is on ``PATH`` (the built-in
asyncio generator otherwise, or with ``--load builtin``); WebSocket load
always from the built-in one.  Servers run on one half of the cores and the
load generator on the other when there are at least two.

The table lists each run; the summary gives, per aiopyramid_ng variant, the
median over rounds of its ratio to each baseline measured in the same round.

    python benchmarks/run.py                      # every scenario, 3 rounds
    python benchmarks/run.py --scenarios hello,ws-echo --duration 3 --rounds 5
    python benchmarks/run.py --uvicorn standard,h11  # also on the pure-Python parser and loop
    python benchmarks/run.py --list               # the scenarios and servers

Nothing is installed: the servers need ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from load import Request, Result, builtin_load, websocket_echo, websocket_idle, wrk_load

NG = "aiopyramid_ng"
#: The same application with ``aiopyramid_ng.gc.freeze_after_startup`` on:
#: a variant served by a server of its own (see ``apps.serve``).
FROZEN_GC = f"{NG} frozen GC"
BASELINES = (
    "raw ASGI",
    "bare Pyramid",
    "Starlette",
    "waitress",
    "gunicorn",
    "WsgiToAsgi",
    "a2wsgi",
)
FORM = b"&".join(b"field%d=%s" % (i, b"v" * 250) for i in range(250))[: 64 * 1024]


@dataclass
class Scenario:
    name: str
    description: str
    #: aiopyramid_ng variant -> its request; the baselines use ``baseline``.
    variants: dict[str, Request]
    baseline: Request
    connections: int
    servers: tuple[str, ...] = ("Starlette", "waitress", "WsgiToAsgi", "a2wsgi")
    #: "http", "ws-echo" or "ws-idle".
    kind: str = "http"


def _get(path: str) -> Request:
    return Request(path)


SCENARIOS = [
    Scenario(
        "hello",
        "hello world from an async def view, 64 connections",
        {f"{NG} async def": _get("/hello")},
        _get("/hello"),
        64,
        ("raw ASGI", "bare Pyramid", "Starlette", "waitress", "WsgiToAsgi", "a2wsgi"),
    ),
    Scenario(
        "plain",
        "hello world from a plain def view, 64 connections",
        {
            f"{NG} plain def": _get("/hello-sync"),
            f"{NG} GreenletMapper": _get("/hello-greenlet"),
            f"{NG} ExecutorMapper": _get("/hello-executor"),
        },
        _get("/hello-sync"),
        64,
        ("bare Pyramid", "waitress", "gunicorn"),
    ),
    Scenario(
        "await-200",
        "view awaiting 50 ms, 200 connections",
        {f"{NG} async def": _get("/sleep")},
        _get("/sleep"),
        200,
    ),
    Scenario(
        "await-1000",
        "view awaiting 50 ms, 1000 connections",
        {f"{NG} async def": _get("/sleep"), FROZEN_GC: _get("/sleep")},
        _get("/sleep"),
        1000,
    ),
    Scenario(
        "blocking",
        "view blocking 50 ms in a thread pool, 64 connections",
        {f"{NG} sync (executor)": _get("/blocking")},
        _get("/blocking"),
        64,
    ),
    Scenario(
        "json",
        "JSON renderer, 10 KB body, 64 connections",
        {f"{NG} async def": _get("/json")},
        _get("/json"),
        64,
    ),
    Scenario(
        "form",
        "POST of a 64 KB form, 64 connections",
        {f"{NG} async def": Request("/form", "POST", FORM, "application/x-www-form-urlencoded")},
        Request("/form", "POST", FORM, "application/x-www-form-urlencoded"),
        64,
    ),
    Scenario(
        "stream",
        "streamed response, 16 chunks of 1 KB, 64 connections",
        {f"{NG} async def": _get("/stream")},
        _get("/stream"),
        64,
    ),
    Scenario(
        "ws-echo",
        "WebSocket echo, 64 connections (messages/s)",
        {f"{NG} WebsocketMapper": _get("/ws")},
        _get("/ws"),
        64,
        ("Starlette",),
        "ws-echo",
    ),
    Scenario(
        "ws-idle",
        "10,000 idle WebSocket connections (RSS per connection)",
        {f"{NG} WebsocketMapper": _get("/ws")},
        _get("/ws"),
        10_000,
        ("Starlette",),
        "ws-idle",
    ),
]


# --- processes and cores -------------------------------------------------------------------------


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


def memory_kib(pid: int, key: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of ``pid``, in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{key}:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) if match else 0


def accept_queue(port: int) -> int | None:
    """Connections the kernel completed on 127.0.0.1:``port`` that the server has not accepted yet.

    For a listening socket, ``/proc/net/tcp`` reports that count as its
    receive queue.  None when no socket listens on ``port``.
    """
    local = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        next(table)  # the heading
        for line in table:
            fields = line.split()
            if fields[1] == local and fields[3] == "0A":  # 0A: LISTEN
                return int(fields[4].split(":")[1], 16)
    return None


@dataclass
class AcceptQueueWatch:
    """How long connections waited to be accepted during a load (``watching_accept_queue``)."""

    #: The integral of the accept queue's length over the load: seconds of waiting, summed.
    connection_seconds: float = 0.0

    def mean_wait_ms(self, connections: int) -> float:
        """The mean wait to be accepted of each of the load's ``connections``."""
        return 1000 * self.connection_seconds / connections


@contextmanager
def watching_accept_queue(port: int) -> Iterator[AcceptQueueWatch]:
    """Sample the accept queue of ``port`` every 10 ms in a thread, until the block ends.

    A server whose event loop is busy accepts late: under uvloop, libuv
    accepts one connection per loop iteration, so a client that connects
    while a long iteration runs waits in this queue, and its first request's
    latency counts the wait.
    """
    watch = AcceptQueueWatch()
    done = threading.Event()

    def sample() -> None:
        last = time.monotonic()
        while not done.wait(0.01):
            now = time.monotonic()
            watch.connection_seconds += (accept_queue(port) or 0) * (now - last)
            last = now

    sampler = threading.Thread(target=sample, name="accept queue sampler", daemon=True)
    sampler.start()
    try:
        yield watch
    finally:
        done.set()
        sampler.join()


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """Stop the server by its PID: SIGTERM, then SIGKILL if it hangs."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_server(name: str, config: str, cores: set[int] | None, logs: Path) -> Server:
    port = free_port()
    log = logs / f"{name.replace(' ', '-')}-{config}-{port}.log"
    here = Path(__file__).resolve().parent
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, str(here / "run.py"), "--serve", name, str(port), config],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    pin(process.pid, cores)
    server = Server(name, port, process, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the {name} server exited at start; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"the {name} server did not start; see {log}")


# --- measuring -------------------------------------------------------------------------------


@dataclass
class Run:
    #: The uvicorn configuration (``UVICORN_CONFIGS``) of the run.
    config: str
    round: int
    scenario: str
    variant: str
    result: Result
    peak_rss_mib: float
    #: For ws-idle: KiB of server RSS per open connection.
    kib_per_connection: float = float("nan")
    #: For HTTP loads: the mean wait of a connection to be accepted, ms
    #: (see ``watching_accept_queue``); NaN where not measured.
    accept_wait_ms: float = float("nan")


@dataclass
class Options:
    duration: float
    warmup: float
    timeout: float
    wrk: str | None
    load_cores: set[int] | None
    idle_connections: int
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class Measurement:
    result: Result
    #: For ws-idle: KiB of server RSS per open connection.
    kib_per_connection: float = float("nan")
    #: For HTTP loads: see :attr:`Run.accept_wait_ms`.
    accept_wait_ms: float = float("nan")


def measure(server: Server, scenario: Scenario, request: Request, options: Options) -> Measurement:
    """Warm ``server`` up and load it."""
    port = server.port
    if scenario.kind == "ws-echo":
        websocket_echo(port, request.path, 8, options.warmup, options.timeout)
        return Measurement(
            websocket_echo(
                port, request.path, scenario.connections, options.duration, options.timeout
            )
        )
    if scenario.kind == "ws-idle":
        websocket_echo(port, request.path, 8, options.warmup, options.timeout)
        wanted = options.idle_connections
        opened, failed, added = websocket_idle(
            port,
            request.path,
            wanted,
            options.timeout,
            lambda: memory_kib(server.process.pid, "VmRSS"),
        )
        per_connection = added / opened if opened else float("nan")
        return Measurement(Result(opened, float("nan"), float("nan"), failed), per_connection)

    def load(duration: float, connections: int) -> Result:
        if options.wrk is not None:
            threads = len(options.load_cores) if options.load_cores else 1
            return wrk_load(
                options.wrk, port, request, connections, duration, options.timeout, threads
            )
        return builtin_load(port, request, connections, duration, options.timeout)

    # Warm-up on at most 64 connections: enough to reach every code path,
    # and a backlog a slow server drains in seconds.
    load(options.warmup, min(scenario.connections, 64))
    settle(port, request.path, options.timeout)
    with watching_accept_queue(port) as accept_queue:
        result = load(options.duration, scenario.connections)
    wait = accept_queue.mean_wait_ms(scenario.connections)
    return Measurement(result, accept_wait_ms=wait)


def settle(port: int, path: str, timeout: float) -> None:
    """Wait until ``port`` answers a single request promptly.

    A server slower than the warm-up's load (waitress or the recipe with a
    view that waits) still works through the requests of the warm-up's
    closed connections: measuring before it is done would count that backlog
    against the run.
    """
    deadline = time.monotonic() + 6 * timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                if sock.recv(16).startswith(b"HTTP/1.1"):
                    return
        except OSError:
            pass


def run_one(
    config: str,
    number: int,
    scenario: Scenario,
    variant: str,
    server_name: str,
    request: Request,
    server_cores: set[int] | None,
    logs: Path,
    options: Options,
) -> Run:
    server = start_server(server_name, config, server_cores, logs)
    try:
        measured = measure(server, scenario, request, options)
        # gunicorn serves from a worker process: its peak is the one that counts.
        pids = [server.process.pid, *child_pids(server.process.pid)]
        peak = max(memory_kib(pid, "VmHWM") for pid in pids) / 1024
    finally:
        server.stop()
    return Run(
        config,
        number,
        scenario.name,
        variant,
        measured.result,
        peak,
        measured.kib_per_connection,
        measured.accept_wait_ms,
    )


def child_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in children.read_text().split()] if children.exists() else []


# --- reporting -------------------------------------------------------------------------------


def print_run(run: Run) -> None:
    result = run.result
    if run.scenario == "ws-idle":
        figures = f"{result.per_second:>9.0f} conns {run.kib_per_connection:>7.1f} KiB/conn"
    else:
        figures = (
            f"{result.per_second:>9.0f} {result.p50_ms:>8.2f} {result.p99_ms:>8.2f}"
            f" {run.accept_wait_ms:>9.1f}"
        )
    print(
        f"{run.config:<8} {run.round:>3}  {run.scenario:<10} {run.variant:<27} {figures} "
        f"{result.errors:>6} {run.peak_rss_mib:>7.1f}",
        flush=True,
    )


@dataclass
class Row:
    """The medians of one (configuration, scenario, variant) over its rounds."""

    config: str
    scenario: str
    variant: str
    per_second: float
    p99_ms: float
    errors: int
    peak_rss_mib: float
    #: Baseline -> median of the per-round ratios of req/s (for ws-idle: of
    #: KiB per connection, lower is better).
    ratios: dict[str, float]
    #: Baseline -> median of the per-round ratios of p99 latency and of peak RSS.
    p99_ratios: dict[str, float]
    rss_ratios: dict[str, float]
    kib_per_connection: float = float("nan")
    #: The median :attr:`Run.accept_wait_ms` of its rounds.
    accept_wait_ms: float = float("nan")


def _ratio(ours: float, theirs: float) -> float:
    return ours / theirs if theirs > 0 else float("inf")


def summarize(runs: list[Run]) -> list[Row]:
    """Medians per (configuration, scenario, variant), with per-round ratios to each baseline."""
    by_key: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
    for run in runs:
        by_key[run.config, run.scenario, run.variant].append(run)
    rows = []
    for (config, scenario, variant), group in by_key.items():
        ratios: dict[str, float] = {}
        p99_ratios: dict[str, float] = {}
        rss_ratios: dict[str, float] = {}
        if variant.startswith(NG):
            for baseline in BASELINES:
                pairs = [
                    (run, other)
                    for run in group
                    for other in by_key.get((config, scenario, baseline), [])
                    if other.round == run.round
                ]
                if not pairs:
                    continue
                if scenario == "ws-idle":
                    # Memory: lower is better; the ratio is our cost / the baseline's.
                    rate = [_ratio(r.kib_per_connection, o.kib_per_connection) for r, o in pairs]
                else:
                    rate = [_ratio(r.result.per_second, o.result.per_second) for r, o in pairs]
                ratios[baseline] = statistics.median(rate)
                p99_ratios[baseline] = statistics.median(
                    _ratio(r.result.p99_ms, o.result.p99_ms) for r, o in pairs
                )
                rss_ratios[baseline] = statistics.median(
                    _ratio(r.peak_rss_mib, o.peak_rss_mib) for r, o in pairs
                )
        rows.append(
            Row(
                config,
                scenario,
                variant,
                statistics.median(r.result.per_second for r in group),
                statistics.median(r.result.p99_ms for r in group),
                sum(r.result.errors for r in group),
                max(r.peak_rss_mib for r in group),
                ratios,
                p99_ratios,
                rss_ratios,
                statistics.median(r.kib_per_connection for r in group),
                statistics.median(r.accept_wait_ms for r in group),
            )
        )
    return rows


@dataclass
class Target:
    scenario: str
    variant: str
    baseline: str
    #: "rate" (ours / theirs, at least ``bound``), "p99" or "rss" (ours /
    #: theirs, at most ``bound``), "ws-idle" (KiB per connection, at most).
    metric: str
    bound: float
    #: Also require a run without errors.
    no_errors: bool = False


#: The project's targets, on the standard configuration (uvicorn[standard]).
TARGETS = [
    Target("hello", f"{NG} async def", "Starlette", "rate", 0.6),
    Target("hello", f"{NG} async def", "WsgiToAsgi", "rate", 6.0),
    Target("plain", f"{NG} plain def", "waitress", "rate", 1.0),
    Target("plain", f"{NG} GreenletMapper", "waitress", "rate", 1.5),
    Target("await-1000", f"{NG} async def", "Starlette", "rate", 0.75, no_errors=True),
    Target("await-1000", f"{NG} async def", "Starlette", "p99", 1.0),
    Target("await-1000", f"{NG} async def", "Starlette", "rss", 1.3),
    Target("ws-echo", f"{NG} WebsocketMapper", "Starlette", "rate", 0.7),
    Target("ws-idle", f"{NG} WebsocketMapper", "Starlette", "ws-idle", 1.5),
]


def print_summary(runs: list[Run]) -> None:
    rows = summarize(runs)
    print()
    print("Medians over rounds; ratios are medians of per-round ratios (aiopyramid_ng / baseline;")
    print("for ws-idle, KiB of RSS per connection / the baseline's, lower is better).")
    header = (
        f"{'uvicorn':<8} {'scenario':<10} {'server':<27} {'req/s':>9} {'p99 ms':>8} "
        f"{'errors':>6} {'peak MiB':>8}  " + " ".join(f"{'x ' + b:>14}" for b in BASELINES)
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        cells = " ".join(
            f"{row.ratios[b]:>14.2f}" if b in row.ratios else f"{'':>14}" for b in BASELINES
        )
        extra = f"  {row.kib_per_connection:.1f} KiB/conn" if row.scenario == "ws-idle" else ""
        print(
            f"{row.config:<8} {row.scenario:<10} {row.variant:<27} {row.per_second:>9.0f} "
            f"{row.p99_ms:>8.2f} {row.errors:>6} {row.peak_rss_mib:>8.1f}  {cells}{extra}"
        )
    print()
    print("Targets (uvicorn standard):")
    found = {(r.config, r.scenario, r.variant): r for r in rows}
    for target in TARGETS:
        row = found.get(("standard", target.scenario, target.variant))
        if row is None:
            continue
        ratios = {"p99": row.p99_ratios, "rss": row.rss_ratios}.get(target.metric, row.ratios)
        ratio = ratios.get(target.baseline)
        if ratio is None:
            continue
        at_least = target.metric == "rate"
        met = ratio >= target.bound if at_least else ratio <= target.bound
        note = ""
        if target.no_errors:
            met = met and row.errors == 0
            note = f", {row.errors} errors (0 wanted)"
        baseline_row = found.get(("standard", target.scenario, target.baseline))
        if target.metric == "p99" and baseline_row and row.accept_wait_ms >= 0:
            # A latency tail can be connections the server accepted late.
            note = (
                f"; mean wait to be accepted {row.accept_wait_ms:.0f} ms "
                f"({target.baseline}: {baseline_row.accept_wait_ms:.0f} ms)"
            )
        wanted = f"{'>=' if at_least else '<='} {target.bound}"
        label = {"rate": "", "ws-idle": " KiB/conn"}.get(target.metric, f" {target.metric}")
        print(
            f"  {target.scenario:<10} {target.variant:<27}{label} vs {target.baseline:<10} "
            f"{ratio:>6.2f}x (wanted {wanted}){note}: {'met' if met else 'MISSED'}"
        )


_HTTP_RUN = re.compile(
    r"^(?P<config>\S+)\s+(?P<round>\d+)\s+(?P<scenario>\S+)\s+(?P<variant>.+?)\s+"
    r"(?P<per_second>\d+)\s+(?P<p50>[\d.]+|nan)\s+(?P<p99>[\d.]+|nan)\s+"
    # Outputs before the accept queue was sampled leave its column blank.
    r"(?:(?P<accept_wait>[\d.]+|nan)\s+)?(?P<errors>\d+)\s+(?P<peak>[\d.]+)$"
)
_IDLE_RUN = re.compile(
    r"^(?P<config>\S+)\s+(?P<round>\d+)\s+(?P<scenario>ws-idle)\s+(?P<variant>.+?)\s+"
    r"(?P<per_second>\d+) conns\s+(?P<kib>[\d.]+) KiB/conn\s+"
    r"(?P<errors>\d+)\s+(?P<peak>[\d.]+)$"
)


def read_runs(output: Path) -> list[Run]:
    """The runs a saved output of this script lists (its per-run lines, as print_run wrote them)."""
    runs = []
    for line in output.read_text().splitlines():
        idle = _IDLE_RUN.match(line)
        found = idle or _HTTP_RUN.match(line)
        if found is None:
            continue
        fields = found.groupdict()
        result = Result(
            float(fields["per_second"]),
            float("nan") if idle else float(fields["p50"]),
            float("nan") if idle else float(fields["p99"]),
            int(fields["errors"]),
        )
        runs.append(
            Run(
                fields["config"],
                int(fields["round"]),
                fields["scenario"],
                fields["variant"],
                result,
                float(fields["peak"]),
                float(fields["kib"]) if idle else float("nan"),
                float(fields.get("accept_wait") or "nan"),
            )
        )
    return runs


TIMES = "\N{MULTIPLICATION SIGN}"


def rst_table(runs: list[Run]) -> str:
    """The summary as the reStructuredText list-table docs/performance.rst shows."""
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "",
        "   * - uvicorn",
        "     - scenario",
        "     - server",
        "     - req/s",
        "     - p99 ms",
        "     - errors",
        "     - peak RSS MiB",
        "     - aiopyramid_ng / baseline (median of per-round ratios)",
    ]
    for row in summarize(runs):
        if row.scenario == "ws-idle":
            rate = f"{row.per_second:.0f} connections, {row.kib_per_connection:.1f} KiB each"
            p99 = "—"
        else:
            unit = " messages/s" if row.scenario == "ws-echo" else ""
            rate, p99 = f"{row.per_second:.0f}{unit}", f"{row.p99_ms:.2f}"
        ratios = "; ".join(f"{ratio:.2f}{TIMES} {name}" for name, ratio in row.ratios.items())
        lines += [
            f"   * - {row.config}",
            f"     - {row.scenario}",
            f"     - {row.variant}",
            f"     - {rate}",
            f"     - {p99}",
            f"     - {row.errors}",
            f"     - {row.peak_rss_mib:.1f}",
            f"     - {ratios or '—'}",
        ]
    return "\n".join(lines) + "\n"


def report_server_errors(logs: Path) -> None:
    """Say which server logs hold exceptions, with the first one's message."""
    for log in sorted(logs.glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()
        tracebacks = sum(line.startswith("Traceback") for line in lines)
        if tracebacks:
            first = next(
                (line for line in lines if re.match(r"^\w[\w.]*(Error|Exception)\b", line)), "?"
            )
            print(f"{log.name}: {tracebacks} exceptions logged, the first: {first}  ({log})")


# --- the run ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [s.name for s in SCENARIOS]
    parser.add_argument(
        "--scenarios", default=",".join(names), help=f"comma-separated, of: {', '.join(names)}"
    )
    parser.add_argument(
        "--servers",
        default=",".join(BASELINES),
        help="baselines to run, comma-separated (aiopyramid_ng always runs)",
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds before a request counts as failed"
    )
    parser.add_argument(
        "--idle-connections", type=int, default=10_000, help="connections for ws-idle"
    )
    parser.add_argument(
        "--load", choices=("auto", "wrk", "builtin"), default="auto", help="HTTP load generator"
    )
    parser.add_argument(
        "--uvicorn",
        default="standard",
        help="uvicorn configurations, comma-separated, of: standard (uvloop and httptools, "
        "the default), h11 (asyncio and h11)",
    )
    parser.add_argument("--list", action="store_true", help="list scenarios and exit")
    parser.add_argument(
        "--rst", type=Path, metavar="FILE", help="also write the summary as an RST table to FILE"
    )
    parser.add_argument(
        "--summarize",
        type=Path,
        metavar="OUTPUT",
        help="run nothing: print the summary of a saved output of this script (with --rst, "
        "write its table)",
    )
    parser.add_argument(
        "--serve", nargs=3, metavar=("SERVER", "PORT", "CONFIG"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.serve:
        from apps import serve

        serve(args.serve[0], int(args.serve[1]), args.serve[2])
        return
    from apps import UVICORN_CONFIGS

    configs = args.uvicorn.split(",")
    if set(configs) - set(UVICORN_CONFIGS):
        parser.error(
            f"unknown uvicorn configurations: {', '.join(set(configs) - set(UVICORN_CONFIGS))}"
        )
    if args.list:
        for scenario in SCENARIOS:
            variants = ", ".join(scenario.variants)
            print(
                f"{scenario.name:<10} {scenario.description}\n{'':<11}{variants}; "
                f"against {', '.join(scenario.servers)}"
            )
        return
    if args.summarize:
        saved = read_runs(args.summarize)
        if not saved:
            parser.error(f"{args.summarize} lists no runs of this script")
        print_summary(saved)
        if args.rst:
            args.rst.write_text(rst_table(saved))
        return
    chosen = [s for s in SCENARIOS if s.name in args.scenarios.split(",")]
    unknown = set(args.scenarios.split(",")) - set(names)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    baselines = set(args.servers.split(","))
    if baselines - set(BASELINES):
        parser.error(f"unknown servers: {', '.join(sorted(baselines - set(BASELINES)))}")

    # Stopped with SIGTERM, still stop the running server (the finally clauses).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    wrk = shutil.which("wrk") if args.load != "builtin" else None
    if args.load == "wrk" and wrk is None:
        parser.error("wrk is not installed (apt-get install wrk), or use --load builtin")
    split = split_cores()
    server_cores, load_cores = split if split else (None, None)
    pin(os.getpid(), load_cores)
    from apps import raise_fd_limit

    raise_fd_limit()  # the ws-idle clients live in this process
    options = Options(
        args.duration, args.warmup, args.timeout, wrk, load_cores, args.idle_connections
    )
    print(f"HTTP load: {wrk or 'built-in asyncio generator'}; WebSocket load: built-in; ", end="")
    if split:
        print(f"servers on cores {sorted(server_cores or ())}, load on {sorted(load_cores or ())}")
    else:
        print("cores not pinned (fewer than two available)")
    logs = Path(tempfile.mkdtemp(prefix="aiopyramid_ng-bench-"))
    print(
        f"{'uvicorn':<8} {'rnd':>3}  {'scenario':<10} {'server':<27} {'req/s':>9} "
        f"{'p50 ms':>8} {'p99 ms':>8}"
        f" {'accept ms':>9} {'errors':>6} {'peakMiB':>7}"
    )
    runs: list[Run] = []
    started = time.monotonic()
    for config in configs:
        for number in range(1, args.rounds + 1):
            for scenario in chosen:
                entries: list[tuple[str, str, Request]] = [
                    (variant, FROZEN_GC if variant == FROZEN_GC else NG, request)
                    for variant, request in scenario.variants.items()
                ] + [(b, b, scenario.baseline) for b in scenario.servers if b in baselines]
                # Rotate the order each round, so a drift in machine load is shared.
                shift = (number - 1) % len(entries)
                for variant, server_name, request in entries[shift:] + entries[:shift]:
                    run = run_one(
                        config,
                        number,
                        scenario,
                        variant,
                        server_name,
                        request,
                        server_cores,
                        logs,
                        options,
                    )
                    runs.append(run)
                    print_run(run)
    print(f"\n{len(runs)} runs in {time.monotonic() - started:.0f} s")
    print_summary(runs)
    if args.rst:
        args.rst.write_text(rst_table(runs))
    report_server_errors(logs)


if __name__ == "__main__":
    main()
