"""Hub and Stream semantics, in process: lifecycle, terminal events, watchdog,
stop versus leave, cancellation reaching the producer."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import pytest

from tokenwire import Emitter, Event, Hub, HubConfig, StreamNotFoundError, StreamStatus
from tokenwire.errors import LimitExceededError


async def tokens(n: int, delay: float = 0.0) -> AsyncIterator[str]:
    for i in range(n):
        if delay:
            await asyncio.sleep(delay)
        yield f"t{i}"


async def forever(delay: float = 0.01) -> AsyncIterator[str]:
    i = 0
    while True:
        await asyncio.sleep(delay)
        i += 1
        yield f"x{i}"


async def collect(hub: Hub, sid: str, after: int = 0) -> list[Event]:
    return [e async for e in hub.subscribe(sid, after)]


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    h = Hub(config=HubConfig(grace_s=5))
    yield h
    await h.aclose()


async def test_async_iterator_producer_strings_become_tokens(hub: Hub) -> None:
    stream = await hub.start(tokens(3), model="m")
    events = await collect(hub, stream.id)
    assert [(e.seq, e.kind) for e in events] == [
        (1, "token"),
        (2, "token"),
        (3, "token"),
        (4, "done"),
    ]
    assert [e.fields["text"] for e in events[:3]] == ["t0", "t1", "t2"]
    assert stream.status is StreamStatus.DONE
    assert (await stream.wait()).kind == "done"


async def test_emit_callback_producer(hub: Hub) -> None:
    seen_ids = []

    async def produce(emit: Emitter) -> None:
        seen_ids.append(emit.stream_id)
        await emit("a")
        await emit(Event.progress("load", 0.5, "half"))
        await emit({"kind": "data", "data": {"x": 1}})

    stream = await hub.start(produce)
    events = await collect(hub, stream.id)
    assert [e.kind for e in events] == ["token", "progress", "data", "done"]
    assert events[1].fields == {"stage": "load", "progress": 0.5, "message": "half"}
    assert seen_ids == [stream.id]


async def test_producer_terminal_event_is_the_only_one(hub: Hub) -> None:
    async def produce() -> AsyncIterator[Event]:
        yield Event.token("a")
        yield Event.done("stop", {"prompt_tokens": 1, "completion_tokens": 1})
        yield Event.token("never")

    stream = await hub.start(produce())
    events = await collect(hub, stream.id)
    assert [e.kind for e in events] == ["token", "done"]
    assert events[-1].fields["usage"] == {"prompt_tokens": 1, "completion_tokens": 1}


async def test_producer_that_raises_ends_with_error(hub: Hub) -> None:
    async def produce() -> AsyncIterator[str]:
        yield "a"
        raise RuntimeError("boom")

    stream = await hub.start(produce())
    events = await collect(hub, stream.id)
    assert [e.kind for e in events] == ["token", "error"]
    assert events[-1].fields == {"code": "producer_error", "message": "boom"}
    assert stream.status is StreamStatus.ERROR


async def test_bad_item_type_ends_with_error(hub: Hub) -> None:
    async def produce() -> AsyncIterator[object]:
        yield 42  # a JSON value: data, as under event_stream_response
        yield object()

    stream = await hub.start(produce())
    assert (await stream.wait()).kind == "error"
    events = await collect(hub, stream.id)
    assert [(e.kind, e.fields.get("data")) for e in events[:1]] == [("data", 42)]


async def test_watchdog_turns_a_stall_into_error() -> None:
    hub = Hub(config=HubConfig(idle_timeout_s=0.2))
    closed = asyncio.Event()

    async def produce() -> AsyncIterator[str]:
        try:
            yield "a"
            await asyncio.sleep(30)
        finally:
            closed.set()

    stream = await hub.start(produce())
    t0 = time.monotonic()
    terminal = await asyncio.wait_for(stream.wait(), 3)
    assert terminal.kind == "error" and terminal.fields["code"] == "timeout"
    assert time.monotonic() - t0 < 2
    assert closed.is_set()  # the producer was stopped, not abandoned
    await hub.aclose()


async def test_watchdog_deadline() -> None:
    hub = Hub(config=HubConfig(deadline_s=0.3, idle_timeout_s=10))
    stream = await hub.start(forever())
    terminal = await asyncio.wait_for(stream.wait(), 3)
    assert terminal.fields["code"] == "deadline"
    await hub.aclose()


async def test_cancel_stops_at_once_and_reaches_the_producer(hub: Hub) -> None:
    closed = asyncio.Event()

    async def produce() -> AsyncIterator[str]:
        try:
            async for t in forever(0.005):
                yield t
        finally:
            closed.set()

    stream = await hub.start(produce())
    sub = hub.subscribe(stream.id)
    await sub.open()
    await sub.read(5, 1)
    await hub.cancel(stream.id)
    assert closed.is_set()
    assert stream.status is StreamStatus.CANCELLED
    rest = [e async for e in sub]
    assert rest[-1].kind == "cancelled" and rest[-1].fields == {"reason": "stopped"}
    assert sum(e.terminal for e in rest) == 1


async def test_cancel_flag_is_visible_to_a_thread(hub: Hub) -> None:
    produced_after_stop = []

    async def produce(emit: Emitter) -> None:
        def work() -> None:
            i = 0
            while not emit.cancelled.is_set():
                i += 1
                time.sleep(0.002)
            produced_after_stop.append(i)

        await asyncio.to_thread(work)

    stream = await hub.start(produce)
    await asyncio.sleep(0.05)
    await hub.cancel(stream.id)
    for _ in range(100):
        if produced_after_stop:
            break
        await asyncio.sleep(0.01)
    assert produced_after_stop, "the worker thread never saw the cancel flag"
    assert stream.cancelled.is_set()


async def test_emit_from_thread(hub: Hub) -> None:
    async def produce(emit: Emitter) -> None:
        def work() -> None:
            for i in range(3):
                emit.from_thread(f"w{i}")

        await asyncio.to_thread(work)

    stream = await hub.start(produce)
    events = await collect(hub, stream.id)
    assert [e.fields.get("text") for e in events[:3]] == ["w0", "w1", "w2"]


async def test_cancel_of_an_ended_stream_changes_nothing(hub: Hub) -> None:
    stream = await hub.start(tokens(2))
    await stream.wait()
    await hub.cancel(stream.id)
    assert stream.status is StreamStatus.DONE
    assert [e.kind for e in await collect(hub, stream.id)][-1] == "done"


async def test_leave_keeps_running_for_the_grace_period_then_cancels() -> None:
    hub = Hub(config=HubConfig(grace_s=0.3))
    stream = await hub.start(forever())
    sub = hub.subscribe(stream.id)
    await sub.open()
    await sub.read(2, 1)
    sub.close()
    await asyncio.sleep(0.15)
    assert stream.status is StreamStatus.RUNNING  # still within grace
    back = hub.subscribe(stream.id, after=sub.position)
    await back.open()
    await asyncio.sleep(0.4)
    assert stream.status is StreamStatus.RUNNING  # someone came back: no cancel
    back.close()
    terminal = await asyncio.wait_for(stream.wait(), 2)
    assert terminal.kind == "cancelled" and terminal.fields["reason"] == "no_subscribers"
    await hub.aclose()


async def test_unwatched_stream_is_cancelled_after_grace() -> None:
    hub = Hub(config=HubConfig(grace_s=0.2))
    stream = await hub.start(forever())
    terminal = await asyncio.wait_for(stream.wait(), 2)
    assert terminal.fields["reason"] == "no_subscribers"
    await hub.aclose()


async def test_subscribe_after_end_replays_history(hub: Hub) -> None:
    stream = await hub.start(tokens(5))
    await stream.wait()
    events = await collect(hub, stream.id, after=3)
    assert [e.seq for e in events] == [4, 5, 6]


async def test_open_frame_recovered_false_when_history_is_gone() -> None:
    from tokenwire.broker import Retention

    hub = Hub(config=HubConfig(retention=Retention(max_events=5)))
    stream = await hub.start(tokens(20))
    await stream.wait()
    sub = hub.subscribe(stream.id, after=2)
    frame = await sub.open()
    assert frame["recovered"] is False
    assert (frame["first_seq"], frame["last_seq"], frame["status"]) == (17, 21, "done")
    events = [e async for e in sub]
    assert [e.seq for e in events] == [17, 18, 19, 20, 21]
    ok = hub.subscribe(stream.id, after=16)
    assert (await ok.open())["recovered"] is True
    ok.close()
    await hub.aclose()


async def test_unknown_stream(hub: Hub) -> None:
    with pytest.raises(StreamNotFoundError):
        await hub.subscribe("st_nope").open()
    with pytest.raises(StreamNotFoundError):
        await hub.cancel("st_nope")


async def test_limits() -> None:
    hub = Hub(config=HubConfig(max_streams=2, max_subscribers_per_stream=1))
    a = await hub.start(forever())
    await hub.start(forever())
    with pytest.raises(LimitExceededError) as err:
        await hub.start(forever())
    assert err.value.code == "too_many_streams"
    sub = hub.subscribe(a.id)
    await sub.open()
    with pytest.raises(LimitExceededError):
        await hub.subscribe(a.id).open()
    sub.close()
    await hub.aclose()


async def test_stream_ids_are_unguessable(hub: Hub) -> None:
    ids = {(await hub.start(tokens(0))).id for _ in range(20)}
    assert len(ids) == 20
    assert all(i.startswith("st_") and len(i) >= 3 + 22 for i in ids)


async def test_fan_out_subscribers_see_identical_sequences(hub: Hub) -> None:
    stream = await hub.start(tokens(200, 0.0005))
    results = await asyncio.gather(*(collect(hub, stream.id) for _ in range(50)))
    first = [(e.seq, e.kind, e.fields) for e in results[0]]
    assert len(first) == 201
    for r in results[1:]:
        assert [(e.seq, e.kind, e.fields) for e in r] == first


async def test_threads_left_behind_none(hub: Hub) -> None:
    before = threading.active_count()
    stream = await hub.start(tokens(10))
    await collect(hub, stream.id)
    assert threading.active_count() <= before


async def test_ended_streams_kept_are_bounded() -> None:
    hub = Hub(config=HubConfig(max_ended_streams=5))
    ids = []
    for _ in range(12):
        stream = await hub.start(tokens(1))
        await stream.wait()
        ids.append(stream.id)
    await asyncio.sleep(0.01)  # let the early broker deletes run
    assert [i for i in ids if i in hub.streams] == ids[-5:]
    with pytest.raises(StreamNotFoundError):
        await hub.broker.info(ids[0])
    assert (await hub.broker.info(ids[-1])).closed
    await hub.aclose()
