"""The race: tokenwire against its peers, side by side in one run and one table.

Peers (each server in its own process, all driven by the same raw-socket clients):

- tokenwire over SSE, NDJSON, WebSocket (``/v1/ws``, one message an event) and
  Socket.IO (:mod:`bench.apps`, uvicorn with uvloop and httptools);
- sse-starlette and FastAPI 0.165's native SSE (``fastapi.sse.EventSourceResponse``),
  the broadcaster-with-a-queue-per-subscriber pattern (:mod:`bench.race_apps`);
- a plain Node SSE server (seed 002's ``Readable.from`` over an async generator)
  and Node's socket.io 4 server broadcasting to a room (``bench/node/``).

Scenarios: live paced fan-out (one stream, N subscribers, M tokens published 1
per ms by default; every reader is live, so catch-up merging cannot help) and a
burst (the producer as fast as it can). For every peer, in the same run:

- delivered events/s: tokens received by all clients / wall time from the first
  publish to the last receive;
- publish-to-receive p50/p99 over every delivered token (the producer stamps
  wall-clock ns into each token; clients on the same machine compare on receipt);
- server CPU per delivery, µs: utime+stime of the server process from
  ``/proc/<pid>/stat`` over the measured window (go -> every client done), / deliveries;
- tokens/frame: above 1.0 the server fell behind and merged a catch-up (nothing is
  lost; fewer frames carry the same tokens), so its CPU per delivery is no longer
  the live figure;
- RSS per idle connection: K connections subscribed to a stream that emits nothing,
  RSS delta / K after a warm-up of 50, each row on a fresh server process.

Every client must receive all M tokens with seq contiguous from 1, or the row
reads FAILED; the command exits 1 when a tokenwire row failed.

Run ``tokenwire bench race`` (about 16 minutes on 2 loaded cores) or ``--quick``
(about 1.5 minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import httpx
import psutil

from bench.sse_fanout import (
    ROOT,
    ClientProcess,
    FanoutResult,
    Scenario,
    Server,
    _env,
    _free_port,
    _split,
    machine_notes,
    measure,
)

NODE_DIR = ROOT / "bench" / "node"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Issue 15's targets, as ratios measured in the same run.
TARGET_SSE_VS_STARLETTE = 5.0
TARGET_P99_MS = 25.0
TARGET_IDLE_BYTES = 20 * 1024


@dataclass(frozen=True)
class Peer:
    name: str  # the row's label
    server: str  # which server process (SERVERS)
    transport: str  # sse | ndjson | ws | socketio


PEERS = (
    Peer("tokenwire", "tokenwire", "sse"),
    Peer("tokenwire", "tokenwire", "ndjson"),
    Peer("tokenwire", "tokenwire", "ws"),
    Peer("tokenwire", "tokenwire", "socketio"),
    Peer("sse-starlette", "sse-starlette", "sse"),
    Peer("fastapi", "fastapi", "sse"),
    Peer("node-sse", "node-sse", "sse"),
    Peer("node-socket.io", "node-socket.io", "socketio"),
)


def server_command(server: str, port: int) -> list[str]:
    if server == "node-sse":
        return ["node", str(NODE_DIR / "sse_server.mjs"), "--port", str(port)]
    if server == "node-socket.io":
        return ["node", str(NODE_DIR / "socketio_server.mjs"), "--port", str(port)]
    return [sys.executable, "-m", "bench.race_apps", server, "--port", str(port)]


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (every thread), from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class RaceServer(Server):
    """A raced server in its own process: :class:`bench.sse_fanout.Server`'s bench
    surface, any command line (Python or Node)."""

    def __init__(self, server: str, extra: Sequence[str] = ()) -> None:
        # Server's own __init__ runs bench.apps only.
        self.app = server
        self.port = _free_port()
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [*server_command(server, self.port), *extra],
            env=_env(),
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.ps = psutil.Process(self.proc.pid)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30.0)
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if self.http.get("/healthz").status_code == 200:
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{server} server did not start:\n{self.output()}")
            time.sleep(0.1)

    def cpu_s(self) -> float:
        return proc_cpu_s(self.proc.pid)


class PeerClients(ClientProcess):
    """One client process holding ``conns`` connections of one transport."""

    def __init__(
        self, server: Server, peer: Peer, stream_id: str, conns: int, *, mode: str,
        expect: int = 0, timeout: float = 120.0, out: str = "/dev/null",
    ) -> None:  # fmt: skip
        common = [
            "--port", str(server.port), "--conns", str(conns), "--mode", mode,
            "--expect", str(expect), "--timeout", str(timeout), "--out", out,
        ]  # fmt: skip
        if peer.transport in ("sse", "ndjson"):
            leaf = "events" if peer.transport == "sse" else "ndjson"
            path = f"/v1/streams/{stream_id}/{leaf}"
            args = [sys.executable, "-m", "bench.sse_client", "--path", path, *common]
        else:
            args = [sys.executable, "-m", "bench.ws_client", "--stream", stream_id,
                    "--protocol", peer.transport, *common]  # fmt: skip
        super().__init__(args, timeout, stdin=mode == "idle")

    def close_idle(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("close\n")
        self.proc.stdin.flush()
        self.lines.next(30)
        self.proc.wait(30)


def run_peer(server: Server, peer: Peer, sc: Scenario, procs: int, quiet_s: float) -> FanoutResult:
    res = FanoutResult(f"{peer.name} {peer.transport}", sc, expected=sc.subscribers * sc.tokens)
    delay_ms = 1000.0 / sc.rate if sc.rate else 0.0
    stream_id, key = server.create_stream(sc.tokens, delay_ms)
    publish_s = sc.tokens / sc.rate if sc.rate else 0.0
    # Generous: a run that cannot finish by then is reported as failed, not waited for.
    timeout = 60.0 + 2 * publish_s + sc.subscribers * sc.tokens / 10_000
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        split = _split(sc.subscribers, procs)
        outs = [f"{tmp}/lat{i}" for i in range(len(split))]
        group: list[PeerClients] = []
        for out, conns in zip(outs, split, strict=True):
            c = PeerClients(
                server, peer, stream_id, conns, mode="fanout", expect=sc.tokens,
                timeout=timeout, out=out,
            )  # fmt: skip
            stack.callback(c.kill)
            group.append(c)
        return measure(server, sc, res, stream_id, key, group, outs, quiet_s)


def idle_rss(server: Server, peer: Peer, k: int, procs: int) -> float:
    """Server RSS bytes per idle connection of ``peer``'s transport, over ``k``."""
    stream_id, _ = server.create_stream(1, 0.0)  # its gate never opens

    def hold(n: int, nprocs: int) -> list[PeerClients]:
        group = [
            PeerClients(server, peer, stream_id, c, mode="idle", timeout=120.0)
            for c in _split(n, nprocs)
        ]
        for c in group:
            c.ready()
        server.wait_subscribers(stream_id, n, timeout=120.0)
        return group

    try:
        # Warm up: the first connections pay for imports, caches and allocator arenas.
        for c in hold(50, 1):
            c.close_idle()
        server.wait_subscribers(stream_id, 0)
        time.sleep(0.5)
        rss0 = server.rss()
        group = hold(k, procs)
        try:
            time.sleep(1.0)
            rss1 = server.rss()
        finally:
            for c in group:
                c.close_idle()
        return (rss1 - rss0) / k
    finally:
        server.stop_stream(stream_id)


# -- report ------------------------------------------------------------------------


@dataclass
class Row:
    peer: Peer
    result: FanoutResult

    @property
    def cpu_us(self) -> float:
        return self.result.cpu_per_1k * 1000.0  # CPU-s per 1k deliveries -> µs per delivery


def format_race(rows: Sequence[Row], idle: dict[Peer, float]) -> str:
    head = (
        "| scenario | peer | transport | delivered ev/s | p50 ms | p99 ms "
        "| server CPU µs / delivery | tokens/frame | RSS / idle conn | client CPU-s | other load "
        "| check |"
    )
    lines = [head, "|" + " --- |" * 12]
    for row in rows:
        r, p = row.result, row.peer
        check = "ok" if r.ok else f"FAILED ({r.failed} clients, {r.delivered}/{r.expected})"
        rss = f"{idle[p] / 1024:.1f} KiB" if p in idle else "-"
        lines.append(
            f"| {r.scenario.label} | {p.name} | {p.transport} | {r.events_per_s:,.0f} "
            f"| {r.p50_ms:.1f} | {r.p99_ms:.1f} | {row.cpu_us:.2f} | {r.tokens_per_frame:.1f} "
            f"| {rss} "
            f"| {r.client_cpu_s:.1f} | {r.background_pct:.0f}% | {check} |"
        )
    for p, v in idle.items():  # a peer measured only idle (no scenario ran)
        if not any(row.peer == p for row in rows):
            lines.append(f"| idle only | {p.name} | {p.transport} | - | - | - | - | - "
                         f"| {v / 1024:.1f} KiB | - | - | ok |")  # fmt: skip
    return "\n".join(lines)


def _find(rows: Sequence[Row], sc: Scenario, name: str, transport: str) -> Row | None:
    return next(
        (
            r
            for r in rows
            if r.result.scenario == sc and r.peer.name == name and r.peer.transport == transport
        ),
        None,
    )


IDLE_TARGETED = ("sse", "ndjson", "ws")
"""The transports the idle-memory target names (issue 15.4: SSE and WebSocket)."""


def format_targets(rows: Sequence[Row], idle: dict[Peer, float], idle_k: int = 0) -> str:
    out: list[str] = []

    def mark(ok: bool) -> str:
        return "MET " if ok else "MISS"

    scenarios = list(dict.fromkeys(r.result.scenario.label for r in rows))
    for label in scenarios:
        sc = next(r.result.scenario for r in rows if r.result.scenario.label == label)
        tw, peer = _find(rows, sc, "tokenwire", "sse"), _find(rows, sc, "sse-starlette", "sse")
        if tw and peer and tw.cpu_us and sc.rate:
            ratio = peer.cpu_us / tw.cpu_us
            out.append(
                f"{mark(ratio >= TARGET_SSE_VS_STARLETTE)} {label}: tokenwire SSE CPU/delivery "
                f"{tw.cpu_us:.2f} µs, {ratio:.1f}x better than sse-starlette's "
                f"{peer.cpu_us:.2f} (target >= {TARGET_SSE_VS_STARLETTE:g}x)"
            )
        tw, node = (
            _find(rows, sc, "tokenwire", "socketio"),
            _find(rows, sc, "node-socket.io", "socketio"),
        )
        if tw and node and node.cpu_us:
            out.append(
                f"{mark(tw.cpu_us <= node.cpu_us)} {label}: tokenwire Socket.IO CPU/delivery "
                f"{tw.cpu_us:.2f} µs vs Node socket.io's {node.cpu_us:.2f} "
                f"({tw.cpu_us / node.cpu_us:.2f}x; target <= 1x)"
            )
        if sc.subscribers >= 1000 and sc.rate:
            for row in rows:
                if row.result.scenario == sc and row.peer.name == "tokenwire":
                    p99 = row.result.p99_ms
                    out.append(
                        f"{mark(p99 <= TARGET_P99_MS)} {label}: tokenwire {row.peer.transport} "
                        f"p99 {p99:.1f} ms (target <= {TARGET_P99_MS:g} ms)"
                    )
    for p, v in idle.items():
        if p.name == "tokenwire" and p.transport in IDLE_TARGETED:
            out.append(
                f"{mark(v <= TARGET_IDLE_BYTES)} idle {p.transport} connection: {v / 1024:.1f} KiB "
                f"over {idle_k} (target <= {TARGET_IDLE_BYTES // 1024} KiB at 100k; a few "
                "thousand carry the allocator's steps: `tokenwire bench scale --parts idle`)"
            )
    for row in rows:
        if not row.result.ok:
            r = row.result
            out.append(f"FAIL {r.server} {r.scenario.label}: {'; '.join(r.errors)}")
    return "\n".join(out)


def race_notes() -> str:
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    sio = json.loads((NODE_DIR / "node_modules" / "socket.io" / "package.json").read_text())
    return (
        f"{machine_notes()}; fastapi {version('fastapi')}, python-socketio "
        f"{version('python-socketio')}; node {node}, socket.io {sio['version']}"
    )


# -- command -----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tokenwire bench race", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes: about a minute")
    p.add_argument("--subscribers", help="N values, comma-separated (default 200,1000; quick 200)")
    p.add_argument("--tokens", type=int, help="M tokens per stream (default 1000; quick 300)")
    p.add_argument("--rate", type=float, default=1000.0, help="paced publish rate, tokens/s")
    p.add_argument("--modes", default="paced,burst", help="paced and/or burst")
    p.add_argument("--burst-subscribers", type=int, help="N of the burst (default: the largest N)")
    p.add_argument("--idle", type=int, help="K idle connections per peer (default 1000; quick 200)")
    p.add_argument("--peers", help="which rows: names or name:transport, comma-separated")
    p.add_argument("--client-procs", type=int, default=2, help="client processes for N > 100")
    p.add_argument("--quiet-wait", type=float, help="seconds to wait for an idle machine per run")
    p.add_argument("--json", help="also write the raw results to this file")
    args = p.parse_args(argv)
    if args.subscribers is None:
        args.subscribers = "200" if args.quick else "200,1000"
    if args.tokens is None:
        args.tokens = 300 if args.quick else 1000
    if args.idle is None:
        args.idle = 200 if args.quick else 1000
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.quick else 5.0
    return args


def select_peers(spec: str | None) -> list[Peer]:
    if not spec:
        return list(PEERS)
    chosen = []
    for word in (w for w in spec.split(",") if w):
        name, _, transport = word.partition(":")
        found = [p for p in PEERS if p.name == name and transport in ("", p.transport)]
        if not found:
            raise SystemExit(f"unknown peer {word!r}: {', '.join(sorted({p.name for p in PEERS}))}")
        chosen += [p for p in found if p not in chosen]
    return chosen


def scenarios_of(args: argparse.Namespace) -> list[Scenario]:
    ns = [int(n) for n in args.subscribers.split(",") if n]
    modes = [m for m in args.modes.split(",") if m]
    out = [Scenario(n, args.tokens, args.rate) for n in ns] if "paced" in modes else []
    if "burst" in modes:
        out.append(Scenario(args.burst_subscribers or max(ns), args.tokens, 0.0))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Race every peer and print one table; 1 if a tokenwire client lost or reordered
    events (a peer's failure is reported in its row)."""
    args = parse_args(argv)
    peers = select_peers(args.peers)
    if any(p.server.startswith("node") for p in peers):
        if shutil.which("node") is None or not (NODE_DIR / "node_modules").is_dir():
            raise SystemExit("the Node peers need node and `npm ci` in bench/node")
    scenarios = scenarios_of(args)
    notes = race_notes()
    print(f"race on {notes}", file=sys.stderr)
    started = time.monotonic()
    loads: list[float] = []
    names = list(dict.fromkeys(p.server for p in peers))
    servers: dict[str, Server] = {}
    rows: list[Row] = []
    idle: dict[Peer, float] = {}
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)  # noqa: E731
    try:
        if args.idle:
            # A fresh server per row: memory freed by one transport's connections is
            # reused by the next one's, which would then look almost free.
            for p in peers:
                fresh = RaceServer(p.server)
                try:
                    idle[p] = idle_rss(fresh, p, args.idle, args.client_procs)
                finally:
                    fresh.close()
                log(f"  idle {p.name} {p.transport}: {idle[p] / 1024:.1f} KiB/conn")
        for name in names:
            servers[name] = RaceServer(name)
        for sc in scenarios:
            procs = args.client_procs if sc.subscribers > 100 else 1
            for p in peers:
                r = run_peer(servers[p.server], p, sc, procs, args.quiet_wait)
                loads.append(os.getloadavg()[0])
                rows.append(Row(p, r))
                log(
                    f"  {sc.label} {r.server}: {r.events_per_s:,.0f} ev/s, p99 {r.p99_ms:.1f} ms, "
                    f"{Row(p, r).cpu_us:.2f} µs CPU/delivery, {'ok' if r.ok else 'FAILED'} "
                    f"({r.wall_s:.1f}s, other load {r.background_pct:.0f}%)"
                )
    finally:
        for server in servers.values():
            server.close()
    load = f"{min(loads):.1f}-{max(loads):.1f}" if loads else "-"
    print(
        f"Race, one stream per run, M={args.tokens} tokens; paced = {args.rate:g}/s, "
        f"burst = as fast as the producer can.\nMachine: {notes}; load average during "
        f"the runs {load}.\n"
    )
    print(format_race(rows, idle))
    print(
        "\nserver CPU: utime+stime of the server process (/proc/<pid>/stat) from go until "
        "every client is done, per delivered token.\nother load: CPU-time of every other "
        "process on the machine during the run, as a share of all CPUs.\n"
    )
    print(format_targets(rows, idle, args.idle))
    print(f"\n({time.monotonic() - started:.0f} s)")
    if args.json:
        data = {
            "machine": notes,
            "load_average": load,
            "rows": [
                {
                    "peer": row.peer.name,
                    "transport": row.peer.transport,
                    "scenario": row.result.scenario.__dict__,
                    "label": row.result.scenario.label,
                    "events_per_s": row.result.events_per_s,
                    "p50_ms": row.result.p50_ms,
                    "p99_ms": row.result.p99_ms,
                    "cpu_us_per_delivery": row.cpu_us,
                    "tokens_per_frame": row.result.tokens_per_frame,
                    "delivered": row.result.delivered,
                    "expected": row.result.expected,
                    "failed": row.result.failed,
                    "client_cpu_s": row.result.client_cpu_s,
                    "ok": row.result.ok,
                }
                for row in rows
            ],
            "idle_bytes_per_conn": [
                {"peer": p.name, "transport": p.transport, "bytes": v} for p, v in idle.items()
            ],
        }
        Path(args.json).write_text(json.dumps(data, indent=2))
    # A peer that cannot deliver in time is a finding (its row says FAILED); tokenwire
    # losing or reordering an event is a failure of the run.
    return 1 if any(not row.result.ok for row in rows if row.peer.name == "tokenwire") else 0


if __name__ == "__main__":
    sys.exit(main())
