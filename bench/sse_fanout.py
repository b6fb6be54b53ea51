"""SSE fan-out: one stream, N subscribers over real sockets, M token events.

For tokenwire and for the sse-starlette peer (:mod:`bench.apps`), side by side in
one run, it measures:

- delivered events/s: token events received by all clients / wall time from the
  first publish (the stamp of seq 1) to the last receive;
- publish-to-receive latency p50/p99/max over every delivered token (the
  producer stamps ``time.time_ns()`` into the token; clients compare on receipt);
- server CPU-seconds per 1,000 deliveries (psutil, user+system of the server
  process, from "go" until every client has finished);
- server RSS per idle SSE connection (K connections to a stream that emits
  nothing; RSS delta / K, after a warm-up).

Each server runs in its own uvicorn process (uvloop, httptools, no access log).
Clients are raw asyncio sockets (:mod:`bench.sse_client`) in one or two
processes; every client must receive all M tokens with seq contiguous from 1,
or the run is reported as FAILED.

Run ``python -m bench`` (about 4 minutes) or ``python -m bench --quick`` (< 1 minute).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
CPUS = os.cpu_count() or 1
SERVERS = ("tokenwire", "sse-starlette")

# The targets of issue 2, for 1,000 subscribers on one stream.
TARGET_EVENTS_PER_S = 100_000
TARGET_P99_MS = 50.0
TARGET_IDLE_BYTES = 20 * 1024
TARGET_VS_PEER = 2.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Lines:
    """The stdout of a child process, line by line, with timeouts."""

    def __init__(self, stream: IO[str]) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def next(self, timeout: float) -> str:
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no line from the child within {timeout:.0f}s") from None
        if line is None:
            raise RuntimeError("the child exited")
        return line


class Server:
    """One app under uvicorn, in its own process."""

    def __init__(self, app: str, *, gc_tune: bool = False) -> None:
        self.app = app
        self.port = _free_port()
        self.log = tempfile.TemporaryFile(mode="w+")
        tune = ["--gc-tune"] if gc_tune else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.apps", app, "--port", str(self.port), *tune],
            env=_env(),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.ps = psutil.Process(self.proc.pid)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30.0)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if self.http.get("/healthz").status_code == 200:
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{app} server did not start:\n{self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()[-4000:]

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def create_stream(self, tokens: int, delay_ms: float) -> tuple[str, str]:
        key = f"bench-{uuid.uuid4().hex}"
        body = {"model": "bench", "prompt": key, "max_tokens": tokens, "delay_ms": delay_ms}
        r = self.http.post("/v1/streams", json=body)
        r.raise_for_status()
        return r.json()["id"], key

    def wait_subscribers(self, stream_id: str, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            got = self.http.get(f"/v1/streams/{stream_id}").json()["subscribers"]
            if got == n:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.app}: {got} subscribers, expected {n}")
            time.sleep(0.05)

    def go(self, key: str) -> None:
        self.http.post("/bench/go", json={"key": key}).raise_for_status()

    def stop_stream(self, stream_id: str) -> None:
        with contextlib.suppress(httpx.HTTPError):
            self.http.delete(f"/v1/streams/{stream_id}")

    def close(self) -> None:
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class ClientProcess:
    """A bench client process: it prints ``READY <ok> <failed>``, then one JSON
    result line. Subclasses build the command line."""

    def __init__(self, args: list[str], timeout: float, *, stdin: bool = False) -> None:
        self.proc = subprocess.Popen(
            args,
            env=_env(),
            stdin=subprocess.PIPE if stdin else None,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.lines = Lines(self.proc.stdout)
        self.timeout = timeout

    def ready(self) -> tuple[int, int]:
        words = self.lines.next(self.timeout + 10).split()
        if words[0] != "READY":
            raise RuntimeError(f"client: {words}")
        return int(words[1]), int(words[2])

    def result(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.lines.next(self.timeout + 30))
        self.proc.wait(30)
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Clients(ClientProcess):
    """One client process holding ``conns`` SSE connections."""

    def __init__(
        self,
        server: Server,
        stream_id: str,
        conns: int,
        *,
        mode: str,
        expect: int = 0,
        timeout: float = 120.0,
        out: str = "/dev/null",
    ) -> None:
        args = [
            sys.executable, "-m", "bench.sse_client", "--port", str(server.port),
            "--path", f"/v1/streams/{stream_id}/events", "--conns", str(conns),
            "--mode", mode, "--expect", str(expect), "--timeout", str(timeout), "--out", out,
        ]  # fmt: skip
        super().__init__(args, timeout, stdin=True)

    def close_idle(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("close\n")
        self.proc.stdin.flush()
        self.lines.next(30)
        self.proc.wait(30)


def machine_busy_s() -> float:
    """CPU-seconds the whole machine has spent busy (every process, every core)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def wait_quiet(max_wait_s: float, busy_pct: float = 25.0) -> None:
    """Wait (up to ``max_wait_s``) until the machine is mostly idle: other work on a
    2-core machine distorts latency far more than throughput."""
    deadline = time.monotonic() + max_wait_s
    while time.monotonic() < deadline:
        if psutil.cpu_percent(interval=0.5) < busy_pct:
            return


def _split(n: int, procs: int) -> list[int]:
    procs = max(1, min(procs, n))
    return [n // procs + (1 if i < n % procs else 0) for i in range(procs)]


@contextlib.contextmanager
def _clients(
    server: Server, stream_id: str, n: int, procs: int, **kwargs: Any
) -> Iterator[list[Clients]]:
    group = [Clients(server, stream_id, c, **kwargs) for c in _split(n, procs)]
    try:
        yield group
    finally:
        for c in group:
            c.kill()


@dataclass
class Scenario:
    subscribers: int
    tokens: int
    rate: float  # tokens/s published; 0 means a burst (as fast as the producer can)

    @property
    def label(self) -> str:
        pace = f"paced {self.rate:g}/s" if self.rate else "burst"
        return f"N={self.subscribers} M={self.tokens} {pace}"


@dataclass
class FanoutResult:
    server: str
    scenario: Scenario
    delivered: int = 0
    expected: int = 0
    events_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    cpu_per_1k: float = 0.0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    tokens_per_frame: float = 0.0
    tokens_per_read: float = 0.0
    wall_s: float = 0.0
    background_pct: float = 0.0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.delivered == self.expected


def run_fanout(server: Server, sc: Scenario, procs: int, quiet_s: float = 0.0) -> FanoutResult:
    res = FanoutResult(server.app, sc, expected=sc.subscribers * sc.tokens)
    delay_ms = 1000.0 / sc.rate if sc.rate else 0.0
    stream_id, key = server.create_stream(sc.tokens, delay_ms)
    # Generous: a run that cannot finish by then is reported as failed, not waited for.
    publish_s = sc.tokens / sc.rate if sc.rate else 0.0
    timeout = 30.0 + 2 * publish_s + sc.subscribers * sc.tokens / 10_000
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        outs = [f"{tmp}/lat{i}" for i in range(max(1, min(procs, sc.subscribers)))]
        group: list[Clients] = []
        for out, conns in zip(outs, _split(sc.subscribers, procs), strict=True):
            c = Clients(
                server, stream_id, conns, mode="fanout", expect=sc.tokens,
                timeout=timeout, out=out,
            )  # fmt: skip
            stack.callback(c.kill)
            group.append(c)
        return measure(server, sc, res, stream_id, key, group, outs, quiet_s)


def measure(
    server: Server,
    sc: Scenario,
    res: FanoutResult,
    stream_id: str,
    key: str,
    group: Sequence[Any],
    outs: list[str],
    quiet_s: float,
) -> FanoutResult:
    """Release a prepared run (its client processes are attached), wait for every
    client, and fill in ``res``'s figures. Shared by every transport's bench."""
    for c in group:
        res.failed += c.ready()[1]
    server.wait_subscribers(stream_id, sc.subscribers - res.failed)
    wait_quiet(quiet_s)
    busy0, cpu0 = machine_busy_s(), server.cpu_s()
    t0 = time.monotonic()
    server.go(key)
    results = [c.result() for c in group]
    res.wall_s = time.monotonic() - t0
    res.server_cpu_s = server.cpu_s() - cpu0
    ours = res.server_cpu_s + sum(r["cpu_s"] for r in results)
    background = machine_busy_s() - busy0 - ours
    res.background_pct = max(0.0, 100 * background / (CPUS * res.wall_s))
    lat = np.concatenate([np.fromfile(out, dtype=np.int64) for out in outs])
    server.stop_stream(stream_id)
    res.delivered = sum(r["tokens"] for r in results)
    res.failed += sum(r["failed"] for r in results)
    res.errors = [e for r in results for e in r["errors"]][:5]
    res.client_cpu_s = sum(r["cpu_s"] for r in results)
    frames = sum(r["frames"] for r in results) - 2 * sc.subscribers  # metrics, done
    res.tokens_per_frame = res.delivered / frames if frames > 0 else 0.0
    reads = sum(r["reads"] for r in results)
    res.tokens_per_read = res.delivered / reads if reads else 0.0
    stamps = [r["first_stamp"] for r in results if r["first_stamp"]]
    if stamps and res.delivered:
        span_ns = max(r["last_recv"] for r in results) - min(stamps)
        res.events_per_s = res.delivered / (span_ns / 1e9) if span_ns > 0 else 0.0
    if lat.size:
        p50, p99 = np.percentile(lat, [50, 99])
        res.p50_ms, res.p99_ms, res.max_ms = p50 / 1e6, p99 / 1e6, lat.max() / 1e6
    if res.delivered:
        res.cpu_per_1k = res.server_cpu_s / (res.delivered / 1000)
    return res


def run_idle(server: Server, k: int, procs: int) -> float:
    """Server RSS bytes per idle SSE connection, over ``k`` connections."""
    stream_id, _ = server.create_stream(1, 0.0)  # its gate never opens
    try:
        # Warm up: the first connections pay for imports, caches and allocator arenas.
        with _clients(server, stream_id, 50, 1, mode="idle") as warm:
            for c in warm:
                c.ready()
            server.wait_subscribers(stream_id, 50)
            for c in warm:
                c.close_idle()
        server.wait_subscribers(stream_id, 0)
        time.sleep(0.5)
        rss0 = server.rss()
        with _clients(server, stream_id, k, procs, mode="idle") as group:
            for c in group:
                c.ready()
            server.wait_subscribers(stream_id, k)
            time.sleep(1.0)
            rss1 = server.rss()
            for c in group:
                c.close_idle()
        return (rss1 - rss0) / k
    finally:
        server.stop_stream(stream_id)


# -- report ------------------------------------------------------------------------


def _num(x: float) -> str:
    return f"{x:,.0f}"


def format_table(results: Sequence[FanoutResult], idle: dict[str, float]) -> str:
    head = (
        "| scenario | server | delivered ev/s | p50 ms | p99 ms | max ms "
        "| server CPU-s / 1k | tokens/frame | tokens/read | client CPU-s | other load | check |"
    )
    lines = [head, "|" + " --- |" * 12]
    for r in results:
        check = "ok" if r.ok else f"FAILED ({r.failed} clients, {r.delivered}/{r.expected})"
        lines.append(
            f"| {r.scenario.label} | {r.server} | {_num(r.events_per_s)} | {r.p50_ms:.1f} "
            f"| {r.p99_ms:.1f} | {r.max_ms:.1f} | {r.cpu_per_1k:.4f} | {r.tokens_per_frame:.1f} "
            f"| {r.tokens_per_read:.1f} "
            f"| {r.client_cpu_s:.1f} | {r.background_pct:.0f}% | {check} |"
        )
    if idle:
        lines += ["", "| server | RSS per idle SSE connection |", "| --- | --- |"]
        lines += [f"| {name} | {v / 1024:.1f} KiB |" for name, v in idle.items()]
    return "\n".join(lines)


def format_targets(results: Sequence[FanoutResult], idle: dict[str, float]) -> str:
    out = []

    def mark(ok: bool) -> str:
        return "MET " if ok else "MISS"

    for r in results:
        if r.server != "tokenwire" or r.scenario.subscribers != 1000:
            continue
        out.append(
            f"{mark(r.events_per_s >= TARGET_EVENTS_PER_S)} {r.scenario.label}: "
            f"{_num(r.events_per_s)} delivered ev/s (target >= {_num(TARGET_EVENTS_PER_S)})"
        )
        out.append(
            f"{mark(r.p99_ms <= TARGET_P99_MS)} {r.scenario.label}: "
            f"p99 {r.p99_ms:.1f} ms (target <= {TARGET_P99_MS:g} ms)"
        )
        peer = next(
            (p for p in results if p.server == "sse-starlette" and p.scenario == r.scenario), None
        )
        if peer is not None and peer.events_per_s:
            ratio = r.events_per_s / peer.events_per_s
            out.append(
                f"{mark(ratio >= TARGET_VS_PEER)} {r.scenario.label}: "
                f"{ratio:.1f}x sse-starlette's delivered ev/s (target >= {TARGET_VS_PEER:g}x)"
            )
    if "tokenwire" in idle:
        v = idle["tokenwire"]
        out.append(
            f"{mark(v <= TARGET_IDLE_BYTES)} idle SSE connection: {v / 1024:.1f} KiB "
            f"(target <= {TARGET_IDLE_BYTES // 1024} KiB)"
        )
    for r in results:
        if not r.ok:
            out.append(f"FAIL {r.server} {r.scenario.label}: {'; '.join(r.errors)}")
    return "\n".join(out)


# -- command -----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer tokens: under a minute")
    p.add_argument("--subscribers", default="1,100,1000", help="N values, comma-separated")
    p.add_argument("--tokens", type=int, help="M token events per stream (default 1000; quick 300)")
    p.add_argument("--rate", type=float, default=200.0, help="paced publish rate, tokens/s")
    p.add_argument("--modes", default="paced,burst", help="paced and/or burst")
    p.add_argument("--idle", type=int, default=1000, help="K idle connections (0: skip)")
    p.add_argument("--servers", default=",".join(SERVERS), help="which servers to run")
    p.add_argument("--client-procs", type=int, default=2, help="client processes for N > 100")
    p.add_argument(
        "--quiet-wait", type=float, help="seconds to wait for an idle machine before each run"
    )
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="scheduling priority of servers and clients (negative, as root: less disturbed "
        "by other work on the machine)",
    )
    p.add_argument(
        "--gc-tune",
        action="store_true",
        help="both servers: gc.freeze() after startup and gc.set_threshold(20000, 20, 10)",
    )
    p.add_argument("--json", help="also write the raw results to this file")
    args = p.parse_args(argv)
    if args.tokens is None:
        args.tokens = 300 if args.quick else 1000
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.quick else 8.0
    return args


def machine_notes() -> str:
    """One line on what the numbers were measured on."""
    from importlib.metadata import version

    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    pkgs = ", ".join(
        f"{name} {version(name)}"
        for name in ("uvicorn", "uvloop", "httptools", "starlette", "sse-starlette")
    )
    return (
        f"{CPUS} CPUs ({model}), {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"Python {platform.python_version()}, {pkgs}; servers and clients share the CPUs, "
        f"loopback; load average at start {os.getloadavg()[0]:.1f}"
    )


def main(argv: Sequence[str] | None = None, prog: str = "python -m bench") -> int:
    """Run the bench and print its table; 1 if any client lost or reordered events."""
    args = parse_args(argv, prog)
    names = [s for s in args.servers.split(",") if s]
    unknown = set(names) - set(SERVERS)
    if unknown:
        raise SystemExit(f"unknown server(s): {', '.join(sorted(unknown))}")
    modes = [m for m in args.modes.split(",") if m]
    scenarios = [
        Scenario(int(n), args.tokens, args.rate if mode == "paced" else 0.0)
        for mode in modes
        for n in args.subscribers.split(",")
    ]
    if args.nice:
        os.nice(args.nice)  # inherited by every server and client process
    notes = machine_notes()
    if args.nice:
        notes += f"; servers and clients at nice {os.nice(0)}"
    if args.gc_tune:
        notes += "; servers with gc.freeze() and gc.set_threshold(20000, 20, 10)"
    print(f"SSE fan-out bench on {notes}", file=sys.stderr)
    started = time.monotonic()
    servers = {name: Server(name, gc_tune=args.gc_tune) for name in names}
    results: list[FanoutResult] = []
    idle: dict[str, float] = {}
    try:
        if args.idle:
            for name, server in servers.items():
                idle[name] = run_idle(server, args.idle, args.client_procs)
                print(f"  idle {name}: {idle[name] / 1024:.1f} KiB/conn", file=sys.stderr)
        for sc in scenarios:
            procs = args.client_procs if sc.subscribers > 100 else 1
            for name, server in servers.items():
                r = run_fanout(server, sc, procs, args.quiet_wait)
                results.append(r)
                print(
                    f"  {sc.label} {name}: {_num(r.events_per_s)} ev/s, p99 {r.p99_ms:.1f} ms, "
                    f"{'ok' if r.ok else 'FAILED'} ({r.wall_s:.1f}s, other load "
                    f"{r.background_pct:.0f}%)",
                    file=sys.stderr,
                )
    finally:
        for server in servers.values():
            server.close()
    pace = f"paced = {args.rate:g} tokens/s; burst = as fast as the producer can, yielding every 64"
    print(f"SSE fan-out, one stream, M={args.tokens} tokens; {pace}.\nMachine: {notes}.\n")
    print(format_table(results, idle))
    print(
        "\nother load: CPU-time of every other process on the machine during the run, "
        "as a share of all CPUs.\nLatency needs a quiet machine; read it next to that column.\n"
    )
    print(format_targets(results, idle))
    print(f"\n({time.monotonic() - started:.0f} s)")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "fanout": [
                        {**r.__dict__, "scenario": r.scenario.__dict__, "ok": r.ok} for r in results
                    ],
                    "idle_bytes_per_conn": idle,
                },
                indent=2,
            )
        )
    failed = [r for r in results if not r.ok]
    if failed:
        print(f"\nFAILED: {len(failed)} run(s) lost or reordered events", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m bench.sse_fanout"))
