"""Scale on one box (issue 15.4): a connect storm, live subscribers by the thousand,
idle connections by the ten thousand, against one tokenwire server process.

1. **Connect storm**: ``--storm`` clients (default 10,000) from ``--client-procs``
   processes that all start connecting at the same wall-clock instant, each from its
   own 127.0.0.x source address, to one stream's SSE endpoint. Every one must be
   accepted and get its first byte (the response head) within ``--attach-timeout``.
   Reported: how long the storm took, connect-to-first-byte p50/p99/max, and the
   kernel's listen-queue counters (``TcpExt ListenOverflows``/``ListenDrops``).
2. **Live**: those same clients are the subscribers of one stream that then
   publishes ``--tokens`` tokens at ``--rate``/s: delivered events/s, publish->receive
   p50/p99, server CPU per delivery, and each client process's CPU as a share of
   one core over the window (a client near 100 % would be the bottleneck).
3. **Idle**: ``--idle`` SSE and WebSocket connections (default: as many as the
   descriptor limit allows one server process, at most 100,000), spread over
   streams of at most 10,000 subscribers (the hub's per-stream default), each
   transport on a fresh server process: server RSS growth per connection, and
   what 100,000 would take at that rate.

The server is :mod:`bench.apps`'s tokenwire under uvicorn with ``--backlog``
(default: ``tokenwire serve``'s) and, by default, ``tokenwire serve``'s protocol
classes (``--protocols serve``: server/connections.py's guarded HTTP protocol with
its lean idle state; ``plain``: uvicorn's own, as the race runs). The bench raises
its own descriptor limit to the hard limit and says what it needed; it never
changes sysctls.

Run ``tokenwire bench scale`` (heavy: run it once, niced, on a quiet machine) or
``--quick`` (1,000 clients, 2,000 idle).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.race import RaceServer
from bench.sse_fanout import ClientProcess, FanoutResult, Scenario, Server, _split, measure
from tokenwire.server.config import ServerConfig

TARGET_IDLE_BYTES = 20 * 1024
PER_STREAM = 10_000  # HubConfig.max_subscribers_per_stream's default
SPARE_FDS = 256
IDLE_CONCURRENCY = 64  # connects in flight per client process while idle ones open


def read_int(path: str) -> int:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return -1


def listen_counters() -> dict[str, int]:
    """The kernel's TcpExt counters for a full listen queue (this network namespace)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            row = dict(zip(names.split()[1:], map(int, values.split()[1:]), strict=False))
            return {k: row.get(k, 0) for k in ("ListenOverflows", "ListenDrops")}
    return {"ListenOverflows": 0, "ListenDrops": 0}


@dataclass
class Limits:
    nofile_before: tuple[int, int]
    nofile: tuple[int, int]
    somaxconn: int
    backlog: int
    ports: str
    sources: list[str]

    @property
    def effective_backlog(self) -> int:
        return min(self.backlog, self.somaxconn) if self.somaxconn > 0 else self.backlog

    def describe(self, needed_fds: int) -> str:
        (s0, _), (s1, h1) = self.nofile_before, self.nofile
        return (
            f"RLIMIT_NOFILE raised {s0} -> {s1} (hard {h1}; {needed_fds} needed by the largest "
            f"process); listen backlog {self.backlog} asked, {self.effective_backlog} effective "
            f"(net.core.somaxconn {self.somaxconn}); ephemeral ports {self.ports} per source "
            f"address; source addresses {', '.join(self.sources)}"
        )


def raise_limits(backlog: int, procs: int) -> Limits:
    """Descriptor limit up to the hard limit (children inherit it); one source address
    per client process, so no process runs out of ephemeral ports."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard = before[1]
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ports = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return Limits(
        nofile_before=before,
        nofile=resource.getrlimit(resource.RLIMIT_NOFILE),
        somaxconn=read_int("/proc/sys/net/core/somaxconn"),
        backlog=backlog,
        ports="-".join(ports),
        sources=[f"127.0.0.{2 + i}" for i in range(procs)],
    )


class ScaleClients(ClientProcess):
    """One client process (SSE or WebSocket) with storm options; keeps its READY line."""

    def __init__(
        self, server: Server, transport: str, stream_id: str, conns: int, *, mode: str,
        source: str, start_at: float, expect: int, timeout: float, attach_timeout: float,
        out: str = "/dev/null", concurrency: int = 512,
    ) -> None:  # fmt: skip
        common = [
            "--port", str(server.port), "--conns", str(conns), "--mode", mode,
            "--expect", str(expect), "--timeout", str(timeout), "--out", out,
            "--source", source, "--start-at", f"{start_at:.3f}", "--concurrency", str(concurrency),
            "--attach-timeout", str(attach_timeout),
        ]  # fmt: skip
        if transport == "sse":
            path = f"/v1/streams/{stream_id}/events"
            args = [sys.executable, "-m", "bench.sse_client", "--path", path, *common]
        else:
            args = [sys.executable, "-m", "bench.ws_client", "--stream", stream_id,
                    "--protocol", "ws", *common]  # fmt: skip
        super().__init__(args, max(timeout, attach_timeout), stdin=mode == "idle")
        self.words: list[str] = []
        self.cpu_s = 0.0

    def result(self) -> dict[str, Any]:
        result = super().result()
        self.cpu_s = float(result["cpu_s"])
        return result

    def ready(self) -> tuple[int, int]:
        if not self.words:
            self.words = self.lines.next(self.timeout + 10).split()
            if self.words[0] != "READY":
                raise RuntimeError(f"client: {self.words}")
        return int(self.words[1]), int(self.words[2])

    def close_idle(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("close\n")
        self.proc.stdin.flush()
        self.lines.next(60)
        self.proc.wait(60)


@dataclass
class Storm:
    clients: int
    accepted: int = 0
    failed: int = 0
    span_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0  # the worst process's p99
    max_ms: float = 0.0
    overflows: int = 0
    drops: int = 0
    errors: list[str] = field(default_factory=list)


def start_at(procs: int) -> float:
    """A wall-clock instant by which every client process has started (Python import
    time on a busy 2-core machine is most of a second each)."""
    return time.time() + 3.0 + 0.8 * procs


def storm_and_live(
    server: Server, limits: Limits, n: int, procs: int, tokens: int, rate: float,
    attach_timeout: float,
) -> tuple[Storm, FanoutResult, list[float]]:  # fmt: skip
    sc = Scenario(n, tokens, rate)
    res = FanoutResult("tokenwire sse", sc, expected=n * tokens)
    stream_id, key = server.create_stream(tokens, 1000.0 / rate if rate else 0.0)
    timeout = 120.0 + 3 * tokens / (rate or 1000) + n * tokens / 20_000
    storm = Storm(n)
    counters0 = listen_counters()
    at = start_at(procs)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        split = _split(n, procs)
        outs = [f"{tmp}/lat{i}" for i in range(len(split))]
        group: list[ScaleClients] = []
        for i, (out, conns) in enumerate(zip(outs, split, strict=True)):
            c = ScaleClients(
                server, "sse", stream_id, conns, mode="fanout", source=limits.sources[i],
                start_at=at, expect=tokens, timeout=timeout, attach_timeout=attach_timeout,
                out=out,
            )  # fmt: skip
            stack.callback(c.kill)
            group.append(c)
        for c in group:
            attached, failed = c.ready()
            storm.accepted += attached
            storm.failed += failed
            span, p50, p99, worst = map(float, c.words[3:7])
            storm.span_s = max(storm.span_s, span)
            storm.p50_ms = max(storm.p50_ms, p50)
            storm.p99_ms = max(storm.p99_ms, p99)
            storm.max_ms = max(storm.max_ms, worst)
        counters1 = listen_counters()
        storm.overflows = counters1["ListenOverflows"] - counters0["ListenOverflows"]
        storm.drops = counters1["ListenDrops"] - counters0["ListenDrops"]
        live = measure(server, sc, res, stream_id, key, group, outs, 0.0)
        # Each client process's CPU over the live window, as a share of one core.
        shares = [c.cpu_s / max(live.wall_s, 1e-9) for c in group]
    return storm, live, shares


def run_idle(
    server: Server, limits: Limits, transport: str, n: int, procs: int, attach_timeout: float
) -> tuple[float, int]:
    """Server RSS growth per idle connection over ``n``, and how many were held."""
    streams = [server.create_stream(1, 0.0)[0] for _ in range(-(-n // PER_STREAM))]
    try:
        warm = ScaleClients(
            server, transport, streams[0], 50, mode="idle", source=limits.sources[0],
            start_at=0.0, expect=0, timeout=120.0, attach_timeout=attach_timeout,
        )  # fmt: skip
        warm.ready()
        warm.close_idle()
        time.sleep(1.0)
        rss0 = server.rss()
        at = start_at(procs)
        split = _split(n, procs)
        # Process i fills stream i % len(streams): each stream stays within its bound.
        group: list[ScaleClients] = []
        try:
            for i, conns in enumerate(split):
                k = i % len(streams)
                group.append(
                    ScaleClients(
                        server,
                        transport,
                        streams[k],
                        conns,
                        mode="idle",
                        source=limits.sources[i % len(limits.sources)],
                        start_at=at,
                        expect=0,
                        timeout=600.0,
                        attach_timeout=attach_timeout,
                        # Idle is about memory, not a storm: fewer handshakes in
                        # flight, so none waits past the server's header deadline.
                        concurrency=IDLE_CONCURRENCY,
                    )
                )
            held_by = [0] * len(streams)
            for i, c in enumerate(group):
                held_by[i % len(streams)] += c.ready()[0]
            held = sum(held_by)
            for k, stream_id in enumerate(streams):
                server.wait_subscribers(stream_id, held_by[k], timeout=120.0)
            time.sleep(2.0)
            rss1 = server.rss()
        finally:
            for c in group:
                with contextlib.suppress(Exception):
                    c.close_idle()
                c.kill()
        return (rss1 - rss0) / max(held, 1), held
    finally:
        for stream_id in streams:
            server.stop_stream(stream_id)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tokenwire bench scale", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1,000 clients, 2,000 idle")
    p.add_argument("--storm", type=int, help="storm clients = live subscribers (default 10000)")
    p.add_argument("--tokens", type=int, default=300, help="tokens the live stream publishes")
    p.add_argument("--rate", type=float, default=50.0, help="tokens/s (default 50: 20 ms apart)")
    p.add_argument("--idle", type=int, help="idle connections per transport (default: max fit)")
    p.add_argument("--idle-transports", default="sse,ws", help="sse and/or ws")
    p.add_argument("--client-procs", type=int, default=4, help="client processes")
    p.add_argument("--attach-timeout", type=float, default=30.0, help="first byte within (s)")
    p.add_argument("--backlog", type=int, default=ServerConfig().backlog)
    p.add_argument("--parts", default="storm,idle", help="storm (with live) and/or idle")
    p.add_argument("--protocols", default="serve", choices=("serve", "plain"),
                   help="uvicorn protocol classes: tokenwire serve's or uvicorn's own")  # fmt: skip
    args = p.parse_args(argv)
    if args.storm is None:
        args.storm = 1000 if args.quick else 10_000
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    parts = set(args.parts.split(","))
    limits = raise_limits(args.backlog, args.client_procs)
    fd_room = limits.nofile[0] - SPARE_FDS
    idle_n = args.idle or (1000 * (fd_room // 1000) if not args.quick else 2000)
    idle_n = min(idle_n, 100_000)
    if idle_n > fd_room:
        print(f"--idle {idle_n} > {fd_room} descriptors one server may hold", file=sys.stderr)
        idle_n = fd_room
    needed = max(args.storm, idle_n) + SPARE_FDS
    notes = limits.describe(needed)
    print(f"scale bench: {notes}", file=sys.stderr)
    started = time.monotonic()
    load0 = os.getloadavg()[0]
    server_args = ["--backlog", str(args.backlog), "--protocols", args.protocols]
    server = RaceServer("tokenwire", server_args)
    out: list[str] = []
    failed = False
    try:
        if "storm" in parts:
            storm, live, shares = storm_and_live(
                server, limits, args.storm, args.client_procs, args.tokens, args.rate,
                args.attach_timeout,
            )  # fmt: skip
            failed |= storm.failed > 0 or not live.ok
            out += [
                f"## Connect storm: {storm.clients:,} SSE clients from {args.client_procs} "
                "processes at one instant",
                "",
                "| clients | accepted + first byte | failed | storm took | first byte p50 "
                "| p99 (worst process) | max | ListenOverflows | ListenDrops |",
                "|" + " --- |" * 9,
                f"| {storm.clients:,} | {storm.accepted:,} | {storm.failed} | {storm.span_s:.1f} s "
                f"| {storm.p50_ms:.0f} ms | {storm.p99_ms:.0f} ms | {storm.max_ms:.0f} ms "
                f"| {storm.overflows} | {storm.drops} |",
                "",
                f"## Live: {live.scenario.subscribers:,} subscribers on one stream, "
                f"{args.tokens} tokens at {args.rate:g}/s",
                "",
                "| delivered ev/s | p50 ms | p99 ms | max ms | server CPU µs / delivery "
                "| server CPU | client processes' CPU | lost | other load |",
                "|" + " --- |" * 9,
                f"| {live.events_per_s:,.0f} | {live.p50_ms:.1f} | {live.p99_ms:.1f} "
                f"| {live.max_ms:.1f} | {live.cpu_per_1k * 1000:.2f} "
                f"| {100 * live.server_cpu_s / max(live.wall_s, 1e-9):.0f}% of a core "
                f"| {', '.join(f'{100 * s:.0f}%' for s in shares)} of a core, over "
                f"{live.wall_s:.1f} s | {live.expected - live.delivered} "
                f"| {live.background_pct:.0f}% |",
            ]
            if live.errors or storm.errors:
                out.append("errors: " + "; ".join([*storm.errors, *live.errors]))
            print("\n".join(out), flush=True)
            out = []
        if "idle" in parts:
            out += [
                "",
                f"## Idle: connections held by one server process (streams of <= {PER_STREAM:,})",
                "",
                "| transport | held | RSS growth / connection | at 100,000 | target |",
                "| --- | --- | --- | --- | --- |",
            ]
            for transport in (t for t in args.idle_transports.split(",") if t):
                # A fresh server: connections opened and closed before (the storm, the
                # other transport) leave freed memory the next ones reuse, and look free.
                fresh = RaceServer("tokenwire", server_args)
                try:
                    # Tens of thousands of handshakes on a shared machine: minutes.
                    per, held = run_idle(
                        fresh, limits, transport, idle_n, args.client_procs, 4 * args.attach_timeout
                    )
                finally:
                    fresh.close()
                failed |= held < idle_n
                mark = "MET" if per <= TARGET_IDLE_BYTES else "MISS"
                out.append(
                    f"| {transport} | {held:,} of {idle_n:,} | {per / 1024:.1f} KiB "
                    f"| {per * 100_000 / 2**30:.2f} GiB (extrapolated) | {mark} <= 20 KiB |"
                )
                print(f"  idle {transport}: {held} held, {per / 1024:.1f} KiB", file=sys.stderr)
                print("\n".join(out), flush=True)
                out = []
    finally:
        server.close()
    print(
        f"\nMachine: {notes}; load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end."
    )
    print(f"\n({time.monotonic() - started:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
