"""A slow Redis: a producer appending faster than Redis answers waits, and what waits
is bounded (redis_writer: MAX_PENDING_EVENTS, MAX_PENDING_BYTES per log).

Redis is made slow by a TCP proxy in front of the real redis-server that holds every
reply for ``DELAY_S`` before passing it on (a far or overloaded Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tokenwire.broker.redis import RedisBroker
from tokenwire.broker.redis_log import log_key, meta_key
from tokenwire.broker.redis_writer import MAX_PENDING_BYTES, MAX_PENDING_EVENTS
from tokenwire.events import Event

DELAY_S = 0.02


class SlowProxy:
    """Forwards to Redis; each chunk of replies is held ``delay`` seconds."""

    def __init__(self, port: int, delay: float) -> None:
        self.target_port = port
        self.delay = delay
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        sreader, swriter = await asyncio.open_connection("127.0.0.1", self.target_port)
        loop = asyncio.get_running_loop()
        pipes = [
            loop.create_task(self._pipe(creader, swriter, 0.0)),
            loop.create_task(self._pipe(sreader, cwriter, self.delay)),
        ]
        self._tasks.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)
        for w in (cwriter, swriter):
            w.close()

    @staticmethod
    async def _pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, delay: float) -> None:
        try:
            while data := await r.read(65536):
                if delay:
                    await asyncio.sleep(delay)
                w.write(data)
                await w.drain()
        except OSError:
            pass
        finally:
            w.close()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def slow_broker(redis_url: str) -> AsyncIterator[tuple[RedisBroker, aioredis.Redis]]:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    proxy = SlowProxy(port, DELAY_S)
    await proxy.start()
    broker = RedisBroker(f"redis://127.0.0.1:{proxy.port}/0")
    direct = aioredis.Redis.from_url(redis_url)  # sees what Redis holds, without delay
    try:
        yield broker, direct
    finally:
        await broker.aclose()
        await direct.aclose()
        await proxy.aclose()


async def test_a_fast_producer_waits_for_a_slow_redis(
    slow_broker: tuple[RedisBroker, aioredis.Redis],
) -> None:
    broker, direct = slow_broker
    await broker.create("s")
    total = 3000
    ahead: list[int] = []  # appended by the producer, minus what Redis holds
    for i in range(total):
        await broker.append("s", Event.token(f" t{i}"))
        if i % 50 == 49:
            in_redis = int(await direct.hget(meta_key("s"), "last") or 0)
            ahead.append(i + 1 - in_redis)
            assert broker._writers["s"].pending <= MAX_PENDING_EVENTS
    await broker.append("s", Event.done())
    # The producer ran ahead of Redis (its appends did not each wait for a round
    # trip), but never by more than the writer's bound.
    assert max(ahead) > 64, ahead
    assert max(ahead) <= MAX_PENDING_EVENTS, ahead
    entries = await direct.xrange(log_key("s"))
    assert [int(e[0].split(b"-")[0]) for e in entries] == list(range(1, total + 2))
    assert entries[10][1][b"f"] == b'{"text":" t10"}'


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_big_events_queue_by_bytes_and_memory_stays_flat(
    slow_broker: tuple[RedisBroker, aioredis.Redis],
) -> None:
    broker, direct = slow_broker
    await broker.create("s")
    warm, count = 160, 800  # 64 KiB each: 40 MiB after the warm-up, 20 ms a reply
    most_pending = 0
    grew = 0
    base = 0
    for i in range(count):
        if i == warm:  # the allocator's pools are filled: from here RSS must stay flat
            base = rss_bytes()
        # A fresh payload each time, as a producer makes them: nothing shared.
        await broker.append("s", Event.token(str(i % 10) * (64 * 1024)))
        most_pending = max(most_pending, broker._writers["s"]._pending_bytes)
        if base:
            grew = max(grew, rss_bytes() - base)
    await broker.append("s", Event.done())
    assert most_pending <= MAX_PENDING_BYTES + 64 * 1024 + 100
    # Queued without a bound, the 40 MiB would pile up (the producer is far faster
    # than this Redis); bounded, what RSS gains is the allocator's slack, not a share
    # of what went through.
    assert grew < 12 * 1024 * 1024, grew
    assert int(await direct.xlen(log_key("s"))) == count + 1


async def test_a_slow_redis_reader_still_sees_every_event_once(
    slow_broker: tuple[RedisBroker, aioredis.Redis],
) -> None:
    broker, _ = slow_broker
    await broker.create("s")
    cursor = await broker.cursor("s", 0)
    seen: list[int] = []

    async def read() -> None:
        while True:
            batch = await cursor.read(500, 5.0)
            seen.extend(e.seq for e in batch)
            if batch and batch[-1].terminal:
                return

    reader = asyncio.create_task(read())
    try:
        for i in range(1000):
            await broker.append("s", Event.token(str(i)))
        await broker.append("s", Event.done())
        await asyncio.wait_for(reader, 30)
    finally:
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader
        cursor.close()
    assert seen == list(range(1, 1002))
