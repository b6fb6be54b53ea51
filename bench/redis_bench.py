"""``tokenwire bench redis``: the Redis broker beside the memory broker, in one run.

One stream, ``--subscribers`` subscriptions on one hub (one gateway), for each broker:

- throughput: the producer publishes ``--events`` tokens as fast as it can (yielding to
  the loop after each, as any real producer does); delivered
  events/s = subscribers x events / (first publish -> the last subscriber's terminal);
- latency: ``--paced`` tokens at ``--rate``/s; publish -> receive p50/p99 over every
  (subscriber, event) pair;
- Redis commands per published event (``INFO commandstats`` before and after).

It starts its own redis-server (the Debian package) on a free port in a temp dir.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from typing import Any

from tokenwire.broker import Broker, MemoryBroker
from tokenwire.broker.redis import RedisBroker
from tokenwire.events import Event
from tokenwire.stream import Hub, HubConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(workdir: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--dir", workdir, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            return proc, port
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("redis-server did not start")


async def commands(broker: Broker) -> dict[str, int]:
    """Calls so far per Redis command (a script's own commands included)."""
    if not isinstance(broker, RedisBroker):
        return {}
    stats: dict[str, Any] = await broker.redis.info("commandstats")
    return {
        k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info"
    }


async def run_one(
    broker: Broker, subscribers: int, events: int, paced: int, rate: float
) -> dict[str, float]:
    hub = Hub(broker, HubConfig(grace_s=60, max_subscribers_per_stream=subscribers + 10))
    try:
        out: dict[str, float] = {}

        opened = 0
        all_open = asyncio.Event()

        async def follow(sid: str, lat: list[float] | None) -> None:
            nonlocal opened
            sub = hub.subscribe(sid)
            try:
                # Every subscription open before the clock starts: an open is a round
                # trip on Redis, and a late one would read a backlog, not live events.
                await sub.open()
                opened += 1
                if opened == subscribers:
                    all_open.set()
                while not sub.finished:
                    batch = await sub.read(512)
                    if lat is not None:
                        now = time.time()
                        lat.extend(now - e.ts for e in batch if e.kind == "token")
            finally:
                sub.close()

        # throughput
        gate = asyncio.Event()

        async def burst() -> Any:
            await gate.wait()
            for i in range(events):
                yield Event.token(f" t{i}")
                # A real producer awaits between tokens (a model, a socket): without
                # this the memory broker's producer never yields, and its subscribers
                # read the whole burst in a few batches, which no model does.
                await asyncio.sleep(0)

        stream = await hub.start(burst())
        readers = [asyncio.create_task(follow(stream.id, None)) for _ in range(subscribers)]
        await all_open.wait()
        before = await commands(broker)
        t0 = time.perf_counter()
        gate.set()
        await asyncio.gather(*readers)
        wall = time.perf_counter() - t0
        after = await commands(broker)
        out["delivered_per_s"] = subscribers * (events + 1) / wall
        for name, calls in after.items():
            if calls > before.get(name, 0):
                out["cmd_" + name] = (calls - before.get(name, 0)) / (events + 1)
        out["commands_per_event"] = sum(v for k, v in out.items() if k.startswith("cmd_"))

        # latency
        gate2 = asyncio.Event()

        async def paced_tokens() -> Any:
            await gate2.wait()
            for i in range(paced):
                yield Event.token(f" p{i}")
                await asyncio.sleep(1 / rate)

        stream = await hub.start(paced_tokens())
        lats: list[float] = []
        opened = 0
        all_open.clear()
        readers = [asyncio.create_task(follow(stream.id, lats)) for _ in range(subscribers)]
        await all_open.wait()
        before = await commands(broker)
        gate2.set()
        await asyncio.gather(*readers)
        after = await commands(broker)
        paced_calls = sum(after.values()) - sum(before.values())
        out["paced_commands_per_event"] = paced_calls / (paced + 1)
        out["paced_evalsha_per_event"] = (after.get("evalsha", 0) - before.get("evalsha", 0)) / (
            paced + 1
        )
        q = statistics.quantiles(lats, n=100)
        out["p50_ms"] = q[49] * 1000
        out["p99_ms"] = q[98] * 1000
        return out
    finally:
        await hub.aclose()


async def main_async(args: argparse.Namespace) -> int:
    workdir = tempfile.mkdtemp(prefix="tw-redis-bench-")
    proc, port = start_redis(workdir)
    try:
        rows = {}
        rows["memory"] = await run_one(
            MemoryBroker(), args.subscribers, args.events, args.paced, args.rate
        )
        redis_broker = RedisBroker(f"redis://127.0.0.1:{port}/0")
        rows["redis"] = await run_one(
            redis_broker, args.subscribers, args.events, args.paced, args.rate
        )
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"one stream, {args.subscribers} subscribers on one gateway; "
        f"{args.events} tokens as fast as possible, {args.paced} at {args.rate:g}/s"
    )
    print(
        f"{'broker':<8} {'delivered ev/s':>15} {'p50 ms':>8} {'p99 ms':>8} {'redis cmds/event':>17}"
    )
    for name, r in rows.items():
        print(
            f"{name:<8} {r['delivered_per_s']:>15,.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
            f"{r['commands_per_event']:>17.2f}"
        )
    m, r = rows["memory"], rows["redis"]
    detail = sorted((k[4:], v) for k, v in r.items() if k.startswith("cmd_"))
    print("redis commands per event: " + ", ".join(f"{k} {v:.2f}" for k, v in detail))
    print(
        f"paced ({args.rate:g}/s): {r['paced_commands_per_event']:.2f} redis commands per event, "
        f"{r['paced_evalsha_per_event']:.2f} append round trips per event"
    )
    print(
        f"redis/memory: throughput {r['delivered_per_s'] / m['delivered_per_s']:.2f}x, "
        f"p99 {r['p99_ms'] / m['p99_ms']:.2f}x"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="tokenwire bench redis", description=__doc__)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--paced", type=int, default=300)
    parser.add_argument("--rate", type=float, default=100.0)
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
