"""The broadcast path (core/broadcast.py) through a real server: live SSE and NDJSON
readers get each event from one pass, and every way off it keeps exactly-once."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import httpx
import pytest
import uvicorn
import websockets

from tests.conftest import ServerProcess
from tests.resume_checks import assert_scripted_exactly_once, covered
from tokenwire.core.broadcast import Broadcasts, Frames, Member
from tokenwire.core.delivery import Delivery, Heartbeat
from tokenwire.core.encoder import SharedBatches
from tokenwire.core.http_encoders import SSEEncoder
from tokenwire.events import dumps, loads
from tokenwire.models import ModelManager
from tokenwire.ndjson import NDJSONParser
from tokenwire.server import ServerConfig, create_app
from tokenwire.sse import SSEParser
from tokenwire.stream import Hub, HubConfig

pytestmark = pytest.mark.slow

TERMINAL = ("done", "error", "cancelled")


async def start(client: httpx.AsyncClient, **body: Any) -> str:
    r = await client.post("/v1/streams", json={"model": "scripted", "prompt": "hi", **body})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def counter(client: httpx.AsyncClient, name: str, transport: str) -> float:
    text = (await client.get("/metrics")).text
    m = re.search(rf'^{name}{{[^}}]*transport="{transport}"[^}}]*}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def sse_events(body: bytes) -> tuple[list[dict[str, Any]], int]:
    """The events of an SSE body, and how many heartbeat comments it held."""
    parser = SSEParser()
    messages = parser.feed(body) + parser.close()
    events = [loads(m.data) for m in messages if m.event not in ("tw-open", "message")]
    return events, body.count(b": hb\n")


async def read_sse(client: httpx.AsyncClient, sid: str, query: str = "") -> list[dict[str, Any]]:
    body = b""
    async with client.stream("GET", f"/v1/streams/{sid}/events{query}") as r:
        assert r.status_code == 200
        async for chunk in r.aiter_bytes():
            body += chunk
    return sse_events(body)[0]


async def read_ndjson(client: httpx.AsyncClient, sid: str) -> list[dict[str, Any]]:
    parser = NDJSONParser()
    lines: list[Any] = []
    async with client.stream("GET", f"/v1/streams/{sid}/ndjson") as r:
        assert r.status_code == 200
        async for chunk in r.aiter_bytes():
            lines += parser.feed(chunk)
    lines += parser.close()
    return [obj for obj in lines if obj["kind"] not in ("open", "heartbeat")]


async def test_live_readers_get_every_event_once_from_the_broadcast(server: ServerProcess) -> None:
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as client:
        before = {
            t: await counter(client, "tokenwire_broadcast_events_total", t)
            for t in ("sse", "ndjson")
        }
        sid = await start(client, max_tokens=60, delay_ms=15)
        results = await asyncio.gather(
            *(read_sse(client, sid) for _ in range(20)),
            *(read_ndjson(client, sid) for _ in range(5)),
        )
        for events in results:
            assert_scripted_exactly_once(events, 60)
        for transport in ("sse", "ndjson"):
            after = await counter(client, "tokenwire_broadcast_events_total", transport)
            assert after > before[transport], f"no {transport} event went through a broadcast"


@contextlib.asynccontextmanager
async def small_buffer_server(hub: Hub) -> AsyncIterator[str]:
    """The app under uvicorn (httptools) in this process, on a listening socket whose
    accepted connections get a small kernel send buffer, so a reader that stops
    reading fills the server's own write buffer within a few hundred KB."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sock.bind(("127.0.0.1", 0))
    config = ServerConfig(heartbeat_s=1.0, hub=hub.config)
    app = create_app(hub=hub, config=config, models=ModelManager(default="scripted"))
    server = uvicorn.Server(
        uvicorn.Config(app, http="httptools", lifespan="off", log_level="warning")
    )
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    for _ in range(1000):
        if server.started:
            break
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


async def big_tokens(count: int, size: int) -> AsyncIterator[str]:
    for i in range(count):
        yield f"{i:08d}".ljust(size, ".")
        await asyncio.sleep(0.001)  # paced: the readers are live, in the broadcast


async def test_slow_reader_falls_back_and_still_gets_every_event_once() -> None:
    count, size = 400, 2000  # 800 KB: far past the 64 KiB write buffer and the socket's
    hub = Hub(config=HubConfig(grace_s=30.0))
    async with (
        small_buffer_server(hub) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
        httpx.AsyncClient(base_url=url, timeout=30) as slow_client,
    ):
        gate = asyncio.Event()

        async def producer() -> AsyncIterator[str]:
            await gate.wait()
            async for token in big_tokens(count, size):
                yield token

        stream = await hub.start(producer())
        live = asyncio.ensure_future(read_sse(client, stream.id))
        body = b""
        async with slow_client.stream("GET", f"/v1/streams/{stream.id}/events") as r:
            chunks = r.aiter_bytes()
            body += await anext(chunks)  # the open frame: now at the head, parked
            await until(lambda: stream.subscribers == 2)
            gate.set()
            await until(lambda: stream.terminal is not None)  # not reading meanwhile
            async for chunk in chunks:
                body += chunk
        texts = [f"{i:08d}".ljust(size, ".") for i in range(count)]
        for events in (sse_events(body)[0], await live):
            assert covered(events) == list(range(1, count + 2))
            assert "".join(e.get("text", "") for e in events) == "".join(texts)
            assert events[-1]["kind"] == "done"
        # The slow reader's socket filled while it was live: it was handed back.
        text = (await client.get("/metrics")).text
        fallbacks = re.search(
            r'^tokenwire_broadcast_fallbacks_total{transport="sse"} (\S+)$', text, re.M
        )
        assert fallbacks is not None and float(fallbacks.group(1)) >= 1
    await hub.aclose()


async def test_reader_that_resumes_mid_stream_joins_and_misses_nothing(
    server: ServerProcess,
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        sid = await start(client, max_tokens=120, delay_ms=5)
        first: list[dict[str, Any]] = []
        async with client.stream("GET", f"/v1/streams/{sid}/events") as r:
            parser = SSEParser()
            async for chunk in r.aiter_bytes():
                first += [loads(m.data) for m in parser.feed(chunk) if m.event != "tw-open"]
                if len(covered(first)) >= 30:
                    break
        last = first[-1]["seq"]
        rest = await read_sse(client, sid, f"?after={last}")
        assert_scripted_exactly_once(first + rest, 120)


async def test_heartbeat_still_sent_while_parked_in_a_broadcast(server: ServerProcess) -> None:
    # 1 s heartbeats (the fixture); the model waits 1.6 s before each token.
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        sid = await start(client, max_tokens=2, delay_ms=1600)
        body = b""
        async with client.stream("GET", f"/v1/streams/{sid}/events") as r:
            async for chunk in r.aiter_bytes():
                body += chunk
        events, heartbeats = sse_events(body)
        assert_scripted_exactly_once(events, 2)
        assert heartbeats >= 2
        # A heartbeat between the two tokens: the parked reader was woken for it.
        first, second = body.index(b"id: 1\n"), body.index(b"id: 2\n")
        assert b": hb\n" in body[first:second]


@pytest.mark.parametrize("coalesce_ms", [5, 50])
async def test_coalesce_keeps_order_and_delivers_within_the_window(
    server: ServerProcess, coalesce_ms: int
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        sid = await start(client, max_tokens=80, delay_ms=2)
        events: list[dict[str, Any]] = []
        reads: list[float] = []
        async with client.stream("GET", f"/v1/streams/{sid}/events?coalesce_ms={coalesce_ms}") as r:
            parser = SSEParser()
            loop = asyncio.get_running_loop()
            async for chunk in r.aiter_bytes():
                got = [loads(m.data) for m in parser.feed(chunk) if m.event != "tw-open"]
                if got:
                    events += got
                    reads.append(loop.time())
        assert_scripted_exactly_once(events, 80)
        gaps = [b - a for a, b in itertools.pairwise(reads)]
        assert max(gaps) < coalesce_ms / 1000 + 1.0  # generous: a loaded machine
        if coalesce_ms == 50:
            # ~160 ms of tokens at one write per 50 ms: far fewer writes than tokens
            assert len(reads) < 40


async def test_coalesce_ms_out_of_range_is_a_422(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        sid = await start(client, max_tokens=2)
        for bad in ("-1", "1001", "x", "1.5"):
            r = await client.get(f"/v1/streams/{sid}/events?coalesce_ms={bad}")
            assert r.status_code == 422, bad
            assert r.json()["error"]["code"] == "invalid_request"


async def read_ws(url: str, sid: str, batch: bool) -> list[dict[str, Any]]:
    """Every event of ``sid`` over /v1/ws, with no compression offered (a shared
    frame can only go to connections without a per-connection deflate context)."""
    query = "?batch=1" if batch else ""
    events: list[dict[str, Any]] = []
    ws_url = url.replace("http://", "ws://") + "/v1/ws" + query
    async with websockets.connect(ws_url, compression=None) as ws:
        await ws.send(dumps({"op": "subscribe", "stream": sid}).decode())
        while not events or events[-1]["kind"] not in TERMINAL:
            message = await asyncio.wait_for(ws.recv(), 20)
            assert isinstance(message, str)
            for line in message.split("\n"):
                frame = loads(line)
                if frame["type"] == "event":
                    events.append(frame)
    return events


@pytest.mark.parametrize("batch", [False, True])
async def test_websocket_live_readers_get_every_event_once_from_the_broadcast(
    server: ServerProcess, batch: bool
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        before = await counter(client, "tokenwire_broadcast_events_total", "ws")
        sid = await start(client, max_tokens=60, delay_ms=15)
        results = await asyncio.gather(*(read_ws(server.url, sid, batch) for _ in range(10)))
        for events in results:
            assert_scripted_exactly_once(events, 60)
        assert await counter(client, "tokenwire_broadcast_events_total", "ws") > before


class ListWrite:
    """A fake transport (named as such): takes every write, keeps the bytes."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def writable(self) -> bool:
        return True

    def try_write(self, frames: Frames) -> bool:
        self.bodies.append(frames.body)
        return True


async def test_a_parked_member_is_told_what_the_broadcast_wrote_once_it_leaves() -> None:
    hub = Hub(config=HubConfig(grace_s=30.0))
    tokens: asyncio.Queue[str | None] = asyncio.Queue()

    async def producer() -> AsyncIterator[str]:
        while (token := await tokens.get()) is not None:
            yield token

    stream = await hub.start(producer())
    encoder = SSEEncoder(None, None)
    shared: SharedBatches[tuple[bytes, int]] = SharedBatches(encoder.batch, None)
    broadcasts = Broadcasts(hub, shared, "sse", 64, None)
    loop = asyncio.get_running_loop()
    members = []
    for _ in range(2):
        sub = hub.subscribe(stream.id, 0, transport="sse")
        await sub.open()
        delivery = Delivery(stream.id, encoder, Heartbeat(15.0, loop.time() - 60), shared)
        members.append((sub, delivery, ListWrite()))
    futures = [broadcasts.follow(Member(*m), 0.0) for m in members]
    assert all(f is not None for f in futures)

    async def driver(parked: asyncio.Future[None] | None) -> None:
        await cast(asyncio.Future[None], parked)  # as a parked driver waits

    drivers = [asyncio.ensure_future(driver(f)) for f in futures]
    for i in range(5):
        await tokens.put(f"t{i}")
        await until(lambda i=i: all(len(out.bodies) == i + 1 for _, _, out in members))
    (sub, delivery, out), (other_sub, other, other_out) = members
    assert sub.position == 5  # parked: the broadcast moved the cursor on
    delivery.heartbeat.due = True  # the timer found the connection silent: it wakes it
    sub.wake()
    await drivers[0]
    assert delivery.events == 5 and delivery.bytes == sum(map(len, out.bodies))
    assert delivery.last_write == delivery.heartbeat.last_sent > loop.time() - 5
    # Still due: tick decides, and the broadcast wrote within the interval.
    assert delivery.heartbeat.due and delivery.tick(loop.time()) == []
    # The other member stays parked and gets the rest; its account is settled at the end.
    await tokens.put("t5")
    await until(lambda: len(other_out.bodies) == 6)
    assert len(out.bodies) == 5 and sub.position == 5
    await tokens.put(None)  # the terminal event: every member goes back to its driver
    await drivers[1]
    assert other.events == 6 and other.bytes == sum(map(len, other_out.bodies))
    assert other_sub.position == 6
    await hub.aclose()
