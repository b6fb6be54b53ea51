"""The broker conformance suite: every Broker implementation must pass it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable

import pytest

from tokenwire.broker import Broker, MemoryBroker, Retention
from tokenwire.broker.redis import RedisBroker
from tokenwire.errors import StreamLaggedError, StreamNotFoundError
from tokenwire.events import TENSOR_CHUNK, Event

BrokerFactory = Callable[..., Broker]


@pytest.fixture(params=["memory", "redis"])
async def make_broker(request: pytest.FixtureRequest) -> AsyncIterator[BrokerFactory]:
    """Each test runs on every broker: memory, and Redis on a real redis-server."""
    made: list[Broker] = []
    url = request.getfixturevalue("redis_url") if request.param == "redis" else ""

    def make(retention: Retention | None = None, window_bytes: int = 1 << 20) -> Broker:
        broker: Broker
        if url:
            broker = RedisBroker(url, retention, window_bytes=window_bytes)
        else:
            broker = MemoryBroker(retention, window_bytes=window_bytes)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        await broker.aclose()


async def read_all(broker: Broker, sid: str, after: int = 0, timeout: float = 2.0) -> list[Event]:
    cursor = await broker.cursor(sid, after)
    out: list[Event] = []
    try:
        while True:
            batch = await cursor.read(100, timeout)
            if not batch:
                return out
            out.extend(batch)
            if batch[-1].terminal:
                return out
    finally:
        cursor.close()


async def test_seq_is_contiguous_from_one_and_epoch_is_stable(make_broker: BrokerFactory) -> None:
    broker = make_broker()
    epoch = await broker.create("s")
    seqs = [await broker.append("s", Event.token(str(i))) for i in range(10)]
    assert seqs == list(range(1, 11))
    info = await broker.info("s")
    assert (info.epoch, info.first_seq, info.last_seq, info.closed) == (epoch, 1, 10, False)
    assert len(epoch) >= 8


async def test_epochs_differ_between_logs(make_broker: BrokerFactory) -> None:
    broker = make_broker()
    assert await broker.create("a") != await broker.create("b")


async def test_unknown_stream_raises(make_broker: BrokerFactory) -> None:
    broker = make_broker()
    with pytest.raises(StreamNotFoundError):
        await broker.info("nope")
    with pytest.raises(StreamNotFoundError):
        await broker.cursor("nope", 0)


async def test_history_then_live_with_no_gap_or_duplicate(make_broker: BrokerFactory) -> None:
    broker = make_broker()
    await broker.create("s")
    for i in range(5):
        await broker.append("s", Event.token(str(i)))
    cursor = await broker.cursor("s", 2)
    first = await cursor.read(100, 1.0)
    assert [e.seq for e in first] == [3, 4, 5]

    async def produce() -> None:
        for i in range(5, 10):
            await asyncio.sleep(0.001)
            await broker.append("s", Event.token(str(i)))
        await broker.append("s", Event.done())

    task = asyncio.create_task(produce())
    rest: list[Event] = []
    while not rest or not rest[-1].terminal:
        rest.extend(await cursor.read(100, 2.0))
    await task
    assert [e.seq for e in first + rest] == list(range(3, 12))


async def test_subscribe_races_with_appends(make_broker: BrokerFactory) -> None:
    """Subscribers join at random moments while the producer appends: each sees
    every event after its `after`, once, in order."""
    broker = make_broker()
    await broker.create("s")
    total = 300
    rng = random.Random(7)

    async def produce() -> None:
        for i in range(total):
            await broker.append("s", Event.token(str(i)))
            if rng.random() < 0.3:
                await asyncio.sleep(0)
        await broker.append("s", Event.done())

    async def join() -> tuple[int, list[int]]:
        for _ in range(rng.randrange(0, 50)):
            await asyncio.sleep(0)
        info = await broker.info("s")
        after = rng.randrange(0, info.last_seq + 1)
        events = await read_all(broker, "s", after)
        return after, [e.seq for e in events]

    producer = asyncio.create_task(produce())
    results = await asyncio.gather(*(join() for _ in range(40)))
    await producer
    for after, seqs in results:
        assert seqs == list(range(after + 1, total + 2))


async def test_every_cursor_shares_the_same_event_objects(make_broker: BrokerFactory) -> None:
    broker = make_broker()
    await broker.create("s")
    await broker.append("s", Event.token("x"))
    await broker.append("s", Event.done())
    a, b = await read_all(broker, "s"), await read_all(broker, "s")
    assert a == b
    if isinstance(broker, MemoryBroker):
        assert all(x is y for x, y in zip(a, b, strict=True))  # fan-out without copies
        assert a[0].sse() is b[0].sse()  # encoded once, same bytes for everyone


async def test_retention_by_events(make_broker: BrokerFactory) -> None:
    broker = make_broker(retention=Retention(max_events=10))
    await broker.create("s")
    for i in range(25):
        await broker.append("s", Event.token(str(i)))
    info = await broker.info("s")
    assert (info.first_seq, info.last_seq) == (16, 25)
    events = await read_all(broker, "s", 15, timeout=0.05)
    assert [e.seq for e in events] == list(range(16, 26))


async def test_retention_by_bytes(make_broker: BrokerFactory) -> None:
    broker = make_broker(retention=Retention(max_bytes=8000))
    await broker.create("s")
    for _ in range(100):
        await broker.append("s", Event.token("x" * 100))
    info = await broker.info("s")
    retained = info.last_seq - info.first_seq + 1
    assert 10 <= retained < 100
    events = await read_all(broker, "s", info.first_seq - 1, timeout=0.05)
    assert sum(e.size for e in events) <= 8000


async def test_terminal_event_is_always_retained(make_broker: BrokerFactory) -> None:
    broker = make_broker(retention=Retention(max_events=1, max_bytes=1))
    await broker.create("s")
    await broker.append("s", Event.token("a" * 100))
    await broker.append("s", Event.done())
    info = await broker.info("s")
    assert info.closed and info.first_seq == info.last_seq == 2
    assert [e.kind for e in await read_all(broker, "s", 1)] == ["done"]


async def test_lagging_cursor_raises_instead_of_skipping(make_broker: BrokerFactory) -> None:
    broker = make_broker(retention=Retention(max_events=5))
    await broker.create("s")
    cursor = await broker.cursor("s", 0)
    for i in range(20):
        await broker.append("s", Event.token(str(i)))
    with pytest.raises(StreamLaggedError) as err:
        await cursor.read(10, 0.1)
    assert err.value.last_seq == 0 and err.value.first_seq == 16
    cursor.close()


async def test_ttl_after_terminal_expires_the_log(make_broker: BrokerFactory) -> None:
    broker = make_broker(retention=Retention(ttl_s=0.1))
    await broker.create("s")
    await broker.append("s", Event.token("a"))
    await broker.info("s")
    await broker.append("s", Event.done())
    assert (await broker.info("s")).closed
    await asyncio.sleep(0.3)
    with pytest.raises(StreamNotFoundError):
        await broker.info("s")


async def test_append_after_terminal_is_refused(make_broker: BrokerFactory) -> None:
    broker = make_broker()
    await broker.create("s")
    await broker.append("s", Event.done())
    with pytest.raises(RuntimeError):
        await broker.append("s", Event.token("late"))


async def test_read_times_out_with_empty_batch(make_broker: BrokerFactory) -> None:
    broker = make_broker()
    await broker.create("s")
    cursor = await broker.cursor("s", 0)
    assert await cursor.read(10, 0.05) == []
    cursor.close()


async def test_batches_hold_several_events_when_behind(make_broker: BrokerFactory) -> None:
    broker = make_broker()
    await broker.create("s")
    cursor = await broker.cursor("s", 0)
    for i in range(50):
        await broker.append("s", Event.token(str(i)))
    batch = await cursor.read(20, 1.0)
    assert [e.seq for e in batch] == list(range(1, 21))
    cursor.close()


def chunk(n: int) -> Event:
    return Event(TENSOR_CHUNK, {"tensor_id": "t", "index": 0, "offset": 0}, binary=b"\0" * n)


async def test_byte_window_throttles_to_the_slowest_cursor(make_broker: BrokerFactory) -> None:
    broker = make_broker(window_bytes=10_000)
    await broker.create("s")
    slow = await broker.cursor("s", 0)
    appended = 0

    async def produce() -> None:
        nonlocal appended
        for _ in range(50):
            await broker.append("s", chunk(1000), window=True)
            appended += 1

    task = asyncio.create_task(produce())
    # Each windowed append is a round trip on Redis: wait for the window to fill
    # (not a fixed time: under load ten round trips can take longer), then see
    # that nothing more goes in.
    for _ in range(500):
        if appended >= 9:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    stalled_at = appended
    assert 9 <= stalled_at <= 12, stalled_at  # ~window / chunk size, then it waits
    assert not task.done()
    read = 0
    while read < 50:
        read += len(await slow.read(3, 1.0))
        await asyncio.sleep(0)
    await asyncio.wait_for(task, 2.0)
    assert appended == 50
    slow.close()


async def test_byte_window_ignores_token_events(make_broker: BrokerFactory) -> None:
    broker = make_broker(window_bytes=1000)
    await broker.create("s")
    idle = await broker.cursor("s", 0)
    for _ in range(100):
        await asyncio.wait_for(broker.append("s", Event.token("x" * 100)), 0.5)
    idle.close()


async def test_closing_the_slow_cursor_releases_the_window(make_broker: BrokerFactory) -> None:
    broker = make_broker(window_bytes=2000)
    await broker.create("s")
    slow = await broker.cursor("s", 0)
    fast = await broker.cursor("s", 0)
    task = asyncio.gather(*[broker.append("s", chunk(1000), window=True) for _ in range(10)])
    await asyncio.sleep(0.05)
    assert not task.done()
    slow.close()  # the fast reader now sets the pace

    async def drain() -> None:
        got = 0
        while got < 10:
            got += len(await fast.read(10, 1.0))

    await asyncio.wait_for(asyncio.gather(task, drain()), 2.0)
    fast.close()


async def test_byte_window_waits_for_a_first_reader(make_broker: BrokerFactory) -> None:
    """With nobody subscribed, a tensor producer stops after one window instead of
    rolling its own header out of retention; the first reader releases it."""
    broker = make_broker(window_bytes=5000)
    await broker.create("s")
    task = asyncio.gather(*[broker.append("s", chunk(1000), window=True) for _ in range(20)])
    # Appends take a round trip each on Redis: wait for the window to fill, then
    # see that nothing more goes in.
    for _ in range(500):
        if (await broker.info("s")).last_seq >= 4:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    assert not task.done()
    assert 4 <= (await broker.info("s")).last_seq <= 6
    reader = await broker.cursor("s", 0)
    got = 0
    while got < 20:
        got += len(await reader.read(5, 1.0))
    await asyncio.wait_for(task, 1.0)
    reader.close()
