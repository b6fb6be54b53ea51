"""WebSocket and Socket.IO fan-out beside SSE: one stream, N subscribers, M tokens.

The scenario, the server and the figures are :mod:`bench.sse_fanout`'s: one
tokenwire server (:mod:`bench.apps`, uvicorn with uvloop and httptools, in its
own process) runs a gated producer that stamps ``time.time_ns()`` into each
token; N clients on real sockets subscribe; the bench opens the gate and
measures

- delivered events/s: tokens received by all clients / wall time from the first
  publish to the last receive;
- publish-to-receive latency p50/p99/max over every delivered token;
- server CPU-seconds per 1,000 deliveries.

Per transport: ``sse`` is :func:`bench.sse_fanout.run_fanout` itself; ``ws``
(tokenwire's ``/v1/ws``, one frame a message), ``ws-batch`` (``/v1/ws?batch=1``,
one message a batch) and ``socketio`` (``/socket.io/``, python-socketio) use
raw WebSocket clients (:mod:`bench.ws_client`), so the client library is not what
is measured. Every client must get all M tokens with seqs contiguous from 1.

Run ``python -m bench.ws_fanout`` (a few minutes) or ``--quick`` (about a minute).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.sse_fanout import (
    ClientProcess,
    FanoutResult,
    Scenario,
    Server,
    _split,
    format_table,
    measure,
    run_fanout,
)

TRANSPORTS = ("sse", "ws", "ws-batch", "socketio")


class WSClients(ClientProcess):
    """One client process holding ``conns`` WebSocket connections."""

    def __init__(
        self, server: Server, stream_id: str, conns: int, protocol: str, expect: int,
        timeout: float, out: str,
    ) -> None:  # fmt: skip
        args = [
            sys.executable, "-m", "bench.ws_client", "--port", str(server.port),
            "--stream", stream_id, "--conns", str(conns), "--protocol", protocol,
            "--expect", str(expect), "--timeout", str(timeout), "--out", out,
        ]  # fmt: skip
        super().__init__(args, timeout)


def run_ws_fanout(
    server: Server, sc: Scenario, procs: int, protocol: str, quiet_s: float = 0.0
) -> FanoutResult:
    """The fan-out scenario over ``ws`` or ``socketio`` (figures as in run_fanout)."""
    res = FanoutResult(f"tokenwire {protocol}", sc, expected=sc.subscribers * sc.tokens)
    delay_ms = 1000.0 / sc.rate if sc.rate else 0.0
    stream_id, key = server.create_stream(sc.tokens, delay_ms)
    timeout = 60.0 + 2 * (sc.tokens / sc.rate if sc.rate else 0.0)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        split = _split(sc.subscribers, procs)
        outs = [f"{tmp}/lat{i}" for i in range(len(split))]
        group: list[WSClients] = []
        for out, conns in zip(outs, split, strict=True):
            c = WSClients(server, stream_id, conns, protocol, sc.tokens, timeout, out)
            stack.callback(c.kill)
            group.append(c)
        return measure(server, sc, res, stream_id, key, group, outs, quiet_s)


def format_verdict(results: Sequence[FanoutResult]) -> str:
    """The target: WebSocket delivery at least as fast as SSE's, per scenario."""
    out = []
    for ws in results:
        if ws.server not in ("tokenwire ws", "tokenwire ws-batch"):
            continue
        sse = next(
            (r for r in results if r.server == "tokenwire sse" and r.scenario == ws.scenario), None
        )
        if sse is None or not sse.events_per_s:
            continue
        ratio = ws.events_per_s / sse.events_per_s
        # Paced, both can only deliver what is published: within 1% is as fast.
        target = 0.99 if ws.scenario.rate else 1.0
        mark = "MET " if ratio >= target else "MISS"
        out.append(
            f"{mark} {ws.scenario.label}: {ws.server} {ratio:.2f}x SSE's delivered ev/s "
            f"(target >= {target:g}x), p99 {ws.p99_ms:.1f} vs {sse.p99_ms:.1f} ms"
        )
    for r in results:
        if not r.ok:
            out.append(f"FAIL {r.server} {r.scenario.label}: {'; '.join(r.errors)}")
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.ws_fanout", description=__doc__.split("\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="fewer tokens: about a minute")
    p.add_argument("--subscribers", default="1,100,1000", help="N values, comma-separated")
    p.add_argument("--tokens", type=int, help="M token events per stream (default 2000; quick 300)")
    p.add_argument("--rate", type=float, default=200.0, help="paced publish rate, tokens/s")
    p.add_argument("--modes", default="paced,burst", help="paced and/or burst")
    p.add_argument("--transports", default=",".join(TRANSPORTS), help="sse, ws, socketio")
    p.add_argument("--client-procs", type=int, default=2, help="client processes for N > 100")
    p.add_argument(
        "--quiet-wait", type=float, help="seconds to wait for an idle machine before each run"
    )
    p.add_argument("--json", help="also write the raw results to this file")
    args = p.parse_args(argv)
    if args.tokens is None:
        args.tokens = 300 if args.quick else 2000
    if args.quiet_wait is None:
        args.quiet_wait = 2.0 if args.quick else 10.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    transports = [t for t in args.transports.split(",") if t]
    unknown = set(transports) - set(TRANSPORTS)
    if unknown:
        raise SystemExit(f"unknown transport(s): {', '.join(sorted(unknown))}")
    scenarios = [
        Scenario(int(n), args.tokens, args.rate if mode == "paced" else 0.0)
        for mode in (m for m in args.modes.split(",") if m)
        for n in args.subscribers.split(",")
    ]
    print(
        f"fan-out bench: {os.cpu_count()} CPUs, server and clients on this machine, loopback; "
        f"tokenwire over {', '.join(transports)}",
        file=sys.stderr,
    )
    started = time.monotonic()
    server = Server("tokenwire")
    results: list[FanoutResult] = []
    try:
        for sc in scenarios:
            procs = args.client_procs if sc.subscribers > 100 else 1
            for transport in transports:
                if transport == "sse":
                    r = run_fanout(server, sc, procs, args.quiet_wait)
                    r.server = "tokenwire sse"
                else:
                    r = run_ws_fanout(server, sc, procs, transport, args.quiet_wait)
                results.append(r)
                print(
                    f"  {sc.label} {r.server}: {r.events_per_s:,.0f} ev/s, p99 {r.p99_ms:.1f} ms, "
                    f"{'ok' if r.ok else 'FAILED'} ({r.wall_s:.1f}s)",
                    file=sys.stderr,
                )
    finally:
        server.close()
    print(format_table(results, {}))
    print()
    print(format_verdict(results))
    print(f"\n({time.monotonic() - started:.0f} s)")
    if args.json:
        rows = [{**r.__dict__, "scenario": r.scenario.__dict__, "ok": r.ok} for r in results]
        Path(args.json).write_text(json.dumps({"fanout": rows}, indent=2))
    return 1 if any(not r.ok for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
