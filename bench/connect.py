"""Opening many client connections at once, for the bench clients (a connect storm).

- ``--source 127.0.0.2,127.0.0.3,…``: each connection binds the next source address
  (round robin), so one process is not limited to one address's ~28k ephemeral ports;
- ``--start-at T``: wait until wall-clock time ``T`` before the first connect, so
  several client processes storm together;
- ``--concurrency C``: connects in flight at once (per process);
- ``--attach-timeout S``: a connection without its first response byte after ``S``
  seconds is counted failed (``no first byte``) instead of waited for.

Each protocol records ``connect_ns`` (before its connect) and ``attached_ns`` (first
response head); :func:`ready_line` reports the first-byte times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol


class Opened(Protocol):
    connect_ns: int
    attached_ns: int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", default="", help="source addresses, comma-separated")
    parser.add_argument("--start-at", type=float, default=0.0, help="wall-clock start (s)")
    parser.add_argument("--concurrency", type=int, default=64, help="connects in flight")
    parser.add_argument("--attach-timeout", type=float, default=0.0, help="0: --timeout")


async def open_all(
    protocols: Sequence[Any],
    host: str,
    port: int,
    args: argparse.Namespace,
    fail: Callable[[Any, str], None],
) -> None:
    """Connect every protocol (an asyncio.Protocol with ``connect_ns``)."""
    loop = asyncio.get_running_loop()
    sources = [s for s in args.source.split(",") if s]
    gate = asyncio.Semaphore(args.concurrency)
    if args.start_at:
        await asyncio.sleep(max(0.0, args.start_at - time.time()))

    async def one(i: int, proto: Any) -> None:
        local = (sources[i % len(sources)], 0) if sources else None
        async with gate:
            proto.connect_ns = time.monotonic_ns()
            try:
                await loop.create_connection(lambda: proto, host, port, local_addr=local)
            except OSError as exc:
                fail(proto, f"connect: {exc!r}")

    await asyncio.gather(*(one(i, p) for i, p in enumerate(protocols)))


def ready_line(attached: int, failed: int, protocols: Sequence[Opened]) -> str:
    """``READY <attached> <failed> <span_s> <p50_ms> <p99_ms> <max_ms>``: the span from
    the first connect to the last first byte, and connect-to-first-byte percentiles."""
    got = sorted(p.attached_ns - p.connect_ns for p in protocols if p.attached_ns)
    if not got:
        return f"READY {attached} {failed} 0 0 0 0"
    span = (max(p.attached_ns for p in protocols if p.attached_ns) - min(
        p.connect_ns for p in protocols if p.connect_ns
    )) / 1e9  # fmt: skip

    def pct(q: float) -> float:
        return got[min(len(got) - 1, int(q * len(got)))] / 1e6

    return (
        f"READY {attached} {failed} {span:.3f} {pct(0.5):.1f} {pct(0.99):.1f} {got[-1] / 1e6:.1f}"
    )


async def drive(
    name: str,
    run: Any,
    conns: Sequence[Any],
    args: argparse.Namespace,
    fail: Callable[[Any, str], None],
    idle: bool,
) -> int:
    """What a bench client does once its connects are under way: wait for every first
    byte, print ``READY``, then either hold the connections until a line on stdin
    (``idle``) or wait for every stream to finish and print the run's result as JSON
    (the client's own CPU included, so a reader can tell the client was no bottleneck)."""
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(
            asyncio.shield(run.all_attached), args.attach_timeout or args.timeout
        )
    except TimeoutError:
        for conn in conns:
            if not conn.attached and not conn.broken:
                fail(conn, "no first byte")
    print(ready_line(run.attached, run.failed, conns), flush=True)
    if idle:
        for error in run.errors:
            print(f"{name}: {error}", file=sys.stderr)
        await loop.run_in_executor(None, sys.stdin.readline)
        _close(conns)
        await asyncio.sleep(0.1)
        print("CLOSED", flush=True)
        return 0
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    try:
        await asyncio.wait_for(asyncio.shield(run.all_finished), args.timeout)
    except TimeoutError:
        for conn in conns:
            if not conn.done and not conn.broken:
                fail(conn, f"timed out at seq {conn.next_seq - 1} ({conn.tokens} tokens)")
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    _save(run.latencies, args.out)
    result: dict[str, Any] = {
        "conns": args.conns,
        "finished": run.finished,
        "failed": run.failed,
        "errors": run.errors,
        "tokens": run.tokens,
        "frames": run.frames,
        "reads": run.reads,
        "first_stamp": run.first_stamp,
        "last_recv": run.last_token_recv,
        "cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
    }
    print(json.dumps(result), flush=True)
    _close(conns)
    return 0


def _close(conns: Sequence[Any]) -> None:
    for conn in conns:
        conn.closing = True
        if conn.transport is not None:
            conn.transport.close()


def _save(latencies: Any, path: str) -> None:
    """Written once the run is over: nothing else runs on the loop then."""
    with open(path, "wb") as f:
        latencies.tofile(f)
