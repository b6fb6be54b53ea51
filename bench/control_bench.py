"""Stops and viewer presence across nodes (broker/redis_control.py), measured.

Two hubs on two RedisBrokers over one redis-server this starts (two nodes in one
process: the figures are Redis round trips and loop hops, not a network):

- stop: ``--stops`` streams run on node R, each read on node G; G stops each. From
  ``Hub.cancel`` on G: R's producer cancelled, the terminal event in the log
  (``cancel`` returns), G's reader has it; p50/p99; Redis commands per stop;
- presence: a viewer moves from R to G ``--moves`` times, each time staying on G past
  the grace: the stream must survive every move; Redis commands per move (a quiet
  stream, so they are presence and the reader's opening, not appends).

``python -m bench.control_bench``
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import AsyncIterator

from bench.redis_bench import commands, start_redis
from tokenwire.broker.redis import RedisBroker
from tokenwire.stream import Hub, HubConfig, StreamStatus


async def calls(broker: RedisBroker) -> int:
    """Redis commands run so far, every kind together (``INFO`` itself left out)."""
    return sum((await commands(broker)).values())


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def bench(url: str, stops: int, moves: int) -> None:
    runner = Hub(RedisBroker(url), HubConfig(grace_s=0.5))
    gateway = Hub(RedisBroker(url), HubConfig(grace_s=0.5))
    cancelled_at: dict[str, float] = {}

    def producer(name: list[str], every: float = 0.05) -> AsyncIterator[str]:
        async def tokens() -> AsyncIterator[str]:
            try:
                while True:
                    await asyncio.sleep(every)
                    yield "t "
            except asyncio.CancelledError:
                cancelled_at[name[0]] = time.perf_counter()
                raise

        return tokens()

    try:
        to_producer, to_log, to_reader = [], [], []
        spent = 0
        for _ in range(stops):
            name: list[str] = []
            stream = await runner.start(producer(name))
            name.append(stream.id)
            sub = gateway.subscribe(stream.id)
            await sub.open()
            while not await sub.read(16):
                pass
            before = await calls(runner.broker)
            t0 = time.perf_counter()
            await gateway.cancel(stream.id)
            to_log.append(time.perf_counter() - t0)
            spent += await calls(runner.broker) - before
            while not sub.finished:
                await sub.read(64)
            to_reader.append(time.perf_counter() - t0)
            to_producer.append(cancelled_at[stream.id] - t0)
            sub.close()
        print(f"stop ({stops} streams)     p50 ms   p99 ms")
        for label, values in (
            ("to the producer", to_producer),
            ("terminal in the log", to_log),
            ("the other gateway's reader", to_reader),
        ):
            print(f"  {label:<27} {pct(values, 0.5):6.1f}   {pct(values, 0.99):6.1f}")
        print(f"  Redis commands per stop: {spent / stops:.1f} (with the log reads meanwhile)")

        name = []
        stream = await runner.start(producer(name, every=60))  # quiet: presence only
        name.append(stream.id)
        before = await calls(runner.broker)
        for _ in range(moves):
            here = runner.subscribe(stream.id)
            await here.open()
            there = gateway.subscribe(stream.id)
            await asyncio.sleep(0.3)
            here.close()  # the reload: gone from R, arriving at G within the grace
            await asyncio.sleep(0.05)
            await there.open()
            await asyncio.sleep(0.6)  # past R's grace: only G's viewer holds it
            there.close()
            assert stream.status is StreamStatus.RUNNING, "the stream ended while watched"
        per_move = (await calls(runner.broker) - before) / moves
        left = time.perf_counter()
        terminal = await stream.wait()
        print(f"presence ({moves} moves R -> G): the stream ran through every move")
        print(f"  Redis commands per move: {per_move:.1f}")
        took = time.perf_counter() - left
        print(f"  after the last viewer left: {terminal.fields} after {took:.2f} s (grace 0.5 s)")
    finally:
        await gateway.aclose()
        await runner.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.control_bench")
    parser.add_argument("--stops", type=int, default=50)
    parser.add_argument("--moves", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        proc, port = start_redis(workdir)
        try:
            asyncio.run(bench(f"redis://127.0.0.1:{port}/0", args.stops, args.moves))
        finally:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
