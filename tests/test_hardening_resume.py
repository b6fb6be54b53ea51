"""Resume at or past the end of a stream never freezes the server (issue 11, flaw 1).

A subscription that opens at the end of an ended stream used to get ``[]`` from
every read at once, and the delivery loops went round without awaiting. The
table below pins what a subscription and a cursor answer for every resume
offset and stream state; the end-to-end slice runs the dangerous rows on every
transport while the freeze detector (tests/conftest.py) polls ``/healthz``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import ServerFactory, ServerProcess
from tests.hardening_clients import (
    TRANSPORTS,
    no_subscribers,
    read_after,
    start,
    status,
    wait_ended,
)
from tokenwire.broker import MemoryBroker, Retention
from tokenwire.errors import StreamNotFound
from tokenwire.events import Event
from tokenwire.stream import Hub, HubConfig

EVENTS = 10  # 9 tokens and `done`


async def _tokens(n: int) -> AsyncIterator[str]:
    for i in range(n):
        yield f"t{i}"


async def _hub_with(state: str, retention: Retention | None = None) -> tuple[Hub, str]:
    """A hub holding one stream of EVENTS events in ``state``: ``running`` (9 tokens
    out, the producer waiting), ``ended`` or ``deleted`` (its log gone)."""
    config = HubConfig(retention=retention or Retention(), grace_s=60)
    hub = Hub(config=config)
    release, published = asyncio.Event(), asyncio.Event()

    async def producer() -> AsyncIterator[str]:
        async for token in _tokens(EVENTS - 1):
            yield token
        published.set()  # resumed after the hub published the last token
        await release.wait()

    stream = await hub.start(producer())
    await published.wait()
    if state != "running":
        release.set()
        await stream.wait()
    if state == "deleted":
        await hub.broker.delete(stream.id)
    return hub, stream.id


LAST = {"running": EVENTS - 1, "ended": EVENTS}
AFTERS = ("0", "middle", "last-1", "last", "last+5")


def _after(name: str, last: int) -> int:
    return {"0": 0, "middle": last // 2, "last-1": last - 1, "last": last, "last+5": last + 5}[name]


@pytest.mark.parametrize("after_name", AFTERS)
async def test_ended_stream_every_offset_finishes_without_spinning(after_name: str) -> None:
    hub, sid = await _hub_with("ended")
    after = _after(after_name, EVENTS)
    sub = hub.subscribe(sid, after)
    opened = await sub.open()
    assert opened["status"] == "done" and opened["last_seq"] == EVENTS
    assert opened["recovered"] is (after <= EVENTS)
    got: list[Event] = []
    reads = 0
    while not sub.finished:
        got.extend(await sub.read(4))
        reads += 1
        assert reads <= EVENTS, "a finished subscription kept answering reads"
    assert [e.seq for e in got] == list(range(min(after, EVENTS) + 1, EVENTS + 1))
    # Reading on would spin: it raises instead of answering [] at once forever.
    with pytest.raises(RuntimeError):
        await sub.read()
    sub.close()
    assert hub.subscriber_count == 0
    await hub.aclose()


@pytest.mark.parametrize("after_name", AFTERS)
async def test_running_stream_every_offset_waits_for_the_live_tail(after_name: str) -> None:
    hub, sid = await _hub_with("running")
    last = LAST["running"]
    after = _after(after_name, last)
    sub = hub.subscribe(sid, after)
    opened = await sub.open()
    assert opened["status"] == "running" and opened["recovered"] is (after <= last)
    got: list[Event] = []
    while len(got) < last - min(after, last):
        got.extend(await sub.read(100, 1.0))
    assert [e.seq for e in got] == list(range(min(after, last) + 1, last + 1))
    # At the live end a read waits (and times out), it does not return at once.
    loop = asyncio.get_running_loop()
    before = loop.time()
    assert await sub.read(100, 0.2) == []
    assert loop.time() - before >= 0.15
    assert not sub.finished
    await hub.cancel(sid)
    tail = await sub.read(100, 1.0)
    assert [e.kind for e in tail] == ["cancelled"] and sub.finished
    sub.close()
    await hub.aclose()


@pytest.mark.parametrize("after_name", AFTERS)
async def test_deleted_stream_every_offset_is_not_found(after_name: str) -> None:
    hub, sid = await _hub_with("deleted")
    with pytest.raises(StreamNotFound):
        await hub.subscribe(sid, _after(after_name, EVENTS)).open()
    assert hub.subscriber_count == 0
    await hub.aclose()


async def test_deleted_while_waiting_at_the_live_end_raises_not_found() -> None:
    hub, sid = await _hub_with("running")
    sub = hub.subscribe(sid, LAST["running"])
    await sub.open()
    read = asyncio.ensure_future(sub.read(10, 5.0))
    await asyncio.sleep(0.05)
    await hub.broker.delete(sid)
    with pytest.raises(StreamNotFound):
        await asyncio.wait_for(read, 1.0)
    sub.close()
    await hub.aclose()


@pytest.mark.parametrize("state", ["running", "ended"])
async def test_beyond_retention_every_offset_reports_the_gap(state: str) -> None:
    hub, sid = await _hub_with(state, Retention(max_events=3))
    last = LAST[state]
    sub = hub.subscribe(sid, 1)
    opened = await sub.open()
    assert opened["recovered"] is False and opened["first_seq"] == last - 2
    got: list[Event] = []
    while len(got) < 3:
        got.extend(await sub.read(100, 1.0))
    assert [e.seq for e in got] == [last - 2, last - 1, last]
    assert sub.finished is (state == "ended")
    sub.close()
    await hub.aclose()


async def test_python_iteration_of_an_ended_stream_from_its_end_returns() -> None:
    hub, sid = await _hub_with("ended")
    events = await asyncio.wait_for(_collect(hub, sid, EVENTS), 2.0)
    assert events == []
    await hub.aclose()


async def _collect(hub: Hub, sid: str, after: int) -> list[Event]:
    return [e async for e in hub.subscribe(sid, after)]


@pytest.mark.parametrize("state", ["running", "ended", "closed-cursor"])
@pytest.mark.parametrize("where", ["start", "last", "past"])
async def test_cursor_ended_tells_when_read_would_answer_at_once(state: str, where: str) -> None:
    broker = MemoryBroker()
    await broker.create("s")
    for i in range(4):
        await broker.append("s", Event.token(str(i)))
    if state != "running":
        await broker.append("s", Event.done())
    last = 5 if state != "running" else 4
    cursor = await broker.cursor("s", {"start": 0, "last": last, "past": last + 3}[where])
    if state == "closed-cursor":
        cursor.close()
    at_end = where != "start" or state == "closed-cursor"
    expect_ended = state != "running" and at_end
    assert cursor.ended is expect_ended
    if expect_ended:
        assert await cursor.read(10, 5.0) == []  # at once: the caller must stop on `ended`
    cursor.close()
    await broker.aclose()


# -- end to end, every transport ----------------------------------------------------


@pytest.fixture(scope="module")
def resume_server(start_server: ServerFactory) -> ServerProcess:
    return start_server(TOKENWIRE_GRACE_S="30")


@pytest.fixture(scope="module")
def ended_stream(resume_server: ServerProcess) -> tuple[str, int]:
    async def make() -> tuple[str, int]:
        sid = await start(resume_server, max_tokens=5)
        ended = await wait_ended(resume_server, sid)
        return sid, int(ended["last_seq"])

    return asyncio.run(make())


@pytest.mark.parametrize("offset", [-1, 0, 3])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_resume_at_or_past_the_end_ends_the_subscription(
    resume_server: ServerProcess, ended_stream: tuple[str, int], transport: str, offset: int
) -> None:
    sid, last = ended_stream
    after = last + offset
    opened, seqs = await asyncio.wait_for(read_after(resume_server, transport, sid, after), 20)
    if transport in ("sse", "sse-last-event-id", "ndjson") and offset >= 0:
        # HTTP: 204 with no body, which stops EventSource reconnecting.
        assert (opened, seqs) == (None, [])
        await no_subscribers(resume_server, sid)
        return
    assert opened["status"] == "done" and opened["last_seq"] == last
    assert opened["recovered"] is (offset <= 0)
    assert seqs == list(range(after + 1, last + 1))
    await no_subscribers(resume_server, sid)


async def test_openai_resume_recipe_after_a_complete_answer(resume_server: ServerProcess) -> None:
    """docs/protocol.md: resume on /events with Last-Event-ID = the last id seen."""
    body = {"model": "scripted", "stream": True, "max_tokens": 4}
    body["messages"] = [{"role": "user", "content": "hi"}]
    async with httpx.AsyncClient(base_url=resume_server.url, timeout=10) as client:
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200 and "[DONE]" in r.text
        sid = r.headers["x-tokenwire-stream"]
        last_id = [line for line in r.text.splitlines() if line.startswith("id: ")][-1][4:]
        ended = await wait_ended(resume_server, sid)
        assert int(last_id) == ended["last_seq"]
        again = await client.get(f"/v1/streams/{sid}/events", headers={"Last-Event-ID": last_id})
        # Resumed at the terminal event: 204, which stops EventSource reconnecting.
        assert again.status_code == 204 and again.content == b""
    assert (await status(resume_server, sid))["subscribers"] == 0


async def test_ai_sdk_resume_recipe_after_a_complete_answer(resume_server: ServerProcess) -> None:
    """useChat's resume URL after the answer ended: 204, at once."""
    message = {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}
    body = {"id": "chat-resume-end", "model": "scripted", "messages": [message], "max_tokens": 4}
    async with httpx.AsyncClient(base_url=resume_server.url, timeout=10) as client:
        r = await client.post("/v1/ai-sdk/chat", json=body)
        assert r.status_code == 200 and '"type":"finish"' in r.text
        sid = r.headers["x-tokenwire-stream"]
        await wait_ended(resume_server, sid)
        again = await client.get("/v1/ai-sdk/chat/chat-resume-end/stream")
        assert again.status_code == 204
    assert (await status(resume_server, sid))["subscribers"] == 0
