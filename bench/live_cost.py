"""Live fan-out cost: server CPU per delivered event at N live subscribers, by variant.

One stream, N subscribers (SSE and/or NDJSON) from raw-socket client processes,
M tokens paced at R/s (slow enough that every reader stays live), for each variant
of the tokenwire server (:mod:`bench.apps`'s app, a fresh process each):

- ``driver``: the broadcast path off (``ServerConfig(broadcast=False)``), one
  driver wake-up and ASGI ``send`` per subscriber per event;
- ``broadcast``: the default, one pass over the live subscribers per append;
- ``coalesce=5``, ``coalesce=20``: the broadcast with ``?coalesce_ms=``.

Figures: delivered ev/s, publish->receive p50/p99, server CPU per delivery in µs
(utime+stime from ``/proc/<pid>/stat`` over go -> every client done), its user and
kernel parts, tokens per frame and per client read (above 1.0 the server fell
behind, or coalesced), and a client process's CPU share of the wall time on
average (well under 100 %: the clients were waiting for events, not the bottleneck).

Run: ``python -m bench.live_cost [--subscribers 1000] [--tokens 300] [--rate 100]
[--transports sse,ndjson] [--variants driver,broadcast,coalesce=5,coalesce=20]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.race import CLK_TCK, Peer, RaceServer
from bench.sse_fanout import (
    ClientProcess,
    FanoutResult,
    Scenario,
    _split,
    machine_notes,
    measure,
)


def cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process in seconds, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def serve(port: int, broadcast: bool) -> None:
    import uvicorn

    import bench.apps
    import tokenwire.server

    base = tokenwire.server.ServerConfig

    def config(**kw: object) -> tokenwire.server.ServerConfig:
        return base(**{"broadcast": broadcast, **kw})  # type: ignore[arg-type]

    tokenwire.server.ServerConfig = config  # type: ignore[assignment,misc]
    app = bench.apps.tokenwire_app()
    uvicorn.run(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
        access_log=False, log_level="warning", backlog=4096,
    )  # fmt: skip


@dataclass
class Run:
    variant: str
    transport: str
    result: FanoutResult
    user_s: float
    sys_s: float
    client_share: float  # a client process's CPU / wall, on average

    def us(self, seconds: float) -> float:
        return seconds / self.result.delivered * 1e6 if self.result.delivered else 0.0


def run_variant(
    variant: str, transport: str, sc: Scenario, procs: int
) -> tuple[FanoutResult, float, float, float]:
    coalesce = int(variant.split("=")[1]) if variant.startswith("coalesce=") else 0
    server = _spawn(broadcast=variant != "driver")
    try:
        peer = Peer("tokenwire", "tokenwire", transport)
        res = FanoutResult(f"tokenwire {transport}", sc, expected=sc.subscribers * sc.tokens)
        stream_id, key = server.create_stream(sc.tokens, 1000.0 / sc.rate)
        timeout = 60.0 + 2 * sc.tokens / sc.rate + sc.subscribers * sc.tokens / 10_000
        with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
            split = _split(sc.subscribers, procs)
            outs = [f"{tmp}/lat{i}" for i in range(len(split))]
            group = []
            for out, conns in zip(outs, split, strict=True):
                c = clients(server, peer, stream_id, conns, sc, timeout, out, coalesce)
                stack.callback(c.kill)
                group.append(c)
            # measure() reads the server's CPU right before "go" and once every
            # client is done: take the user/kernel split at the same two points.
            marks: list[tuple[float, float]] = []

            def cpu_s() -> float:
                marks.append(cpu_split(server.proc.pid))
                return sum(marks[-1])

            server.cpu_s = cpu_s  # type: ignore[method-assign]
            res = measure(server, sc, res, stream_id, key, group, outs, 0.0)
        (u0, s0), (u1, s1) = marks[0], marks[1]
        share = res.client_cpu_s / len(split) / res.wall_s if res.wall_s else 0.0
        return res, u1 - u0, s1 - s0, share
    finally:
        server.close()


def _spawn(broadcast: bool) -> RaceServer:
    import bench.race

    real = bench.race.server_command

    def command(server: str, port: int) -> list[str]:
        flag = "1" if broadcast else "0"
        return [sys.executable, "-m", "bench.live_cost", "--serve", str(port), "--broadcast", flag]

    bench.race.server_command = command
    try:
        return RaceServer("tokenwire")
    finally:
        bench.race.server_command = real


def clients(
    server: RaceServer, peer: Peer, stream_id: str, conns: int, sc: Scenario,
    timeout: float, out: str, coalesce: int,
) -> ClientProcess:  # fmt: skip
    leaf = "events" if peer.transport == "sse" else "ndjson"
    query = f"?coalesce_ms={coalesce}" if coalesce else ""
    path = f"/v1/streams/{stream_id}/{leaf}{query}"
    args = [
        sys.executable, "-m", "bench.sse_client", "--path", path,
        "--port", str(server.port), "--conns", str(conns), "--mode", "fanout",
        "--expect", str(sc.tokens), "--timeout", str(timeout), "--out", out,
    ]  # fmt: skip
    return ClientProcess(args, timeout)


def format_runs(runs: Sequence[Run]) -> str:
    head = (
        "| transport | variant | delivered ev/s | p50 ms | p99 ms | server CPU µs / delivery "
        "| of which user | of which kernel | tokens/frame | tokens/read | client CPU share "
        "| other load | check |"
    )
    lines = [head, "|" + " --- |" * 13]
    for r in runs:
        res = r.result
        check = "ok" if res.ok else f"FAILED ({res.failed} clients, {res.delivered}/{res.expected})"
        lines.append(
            f"| {r.transport} | {r.variant} | {res.events_per_s:,.0f} | {res.p50_ms:.1f} "
            f"| {res.p99_ms:.1f} | {r.us(r.user_s + r.sys_s):.2f} | {r.us(r.user_s):.2f} "
            f"| {r.us(r.sys_s):.2f} | {res.tokens_per_frame:.1f} | {res.tokens_per_read:.1f} "
            f"| {100 * r.client_share:.0f}% | {res.background_pct:.0f}% | {check} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.live_cost", description=__doc__.split("\n")[0]
    )
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--tokens", type=int, default=300)
    p.add_argument("--rate", type=float, default=100.0, help="paced publish rate, tokens/s")
    p.add_argument("--transports", default="sse,ndjson")
    p.add_argument("--variants", default="driver,broadcast,coalesce=5,coalesce=20")
    p.add_argument("--client-procs", type=int, default=2)
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    p.add_argument("--broadcast", default="1", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(args.serve, args.broadcast == "1")
        return 0
    sc = Scenario(args.subscribers, args.tokens, args.rate)
    print(f"# {sc.label}; {machine_notes()}", flush=True)
    runs: list[Run] = []
    for transport in args.transports.split(","):
        for variant in args.variants.split(","):
            res, user, system, share = run_variant(variant, transport, sc, args.client_procs)
            runs.append(Run(variant, transport, res, user, system, share))
            print(format_runs(runs[-1:]).splitlines()[-1], flush=True)
    print()
    print(format_runs(runs))
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0 if all(r.result.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
