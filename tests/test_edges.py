"""Every row of the resume edge table (tests/edge_table.py, docs/protocol.md "Resume
edges") answered as documented, on every transport.

The whole table runs through the session core in process (a Hub on the memory
broker, the transports' own offset parsers, encoders, Delivery, driver and
Session; no sockets); a slice of it runs against a real server over real clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import socketio  # type: ignore[import-untyped]
from websockets.asyncio.client import connect

from tests.conftest import ServerFactory
from tests.edge_table import (
    OFFSETS,
    STATES,
    TOKENS,
    TRANSPORTS,
    TRIMMED_RETENTION,
    Answer,
    Offset,
    expected,
    markdown,
    value,
)
from tokenwire.broker import MemoryBroker, Retention
from tokenwire.core.encoder import SharedBatches
from tokenwire.core.ops import SOCKETIO, WEBSOCKET, Dialect
from tokenwire.core.session import Session
from tokenwire.core.socketio_encoder import SocketIOEncoder
from tokenwire.core.ws_encoder import WebSocketEncoder
from tokenwire.errors import TokenwireError
from tokenwire.events import Event, dumps, loads
from tokenwire.ndjson import NDJSONParser
from tokenwire.server.access import OPEN
from tokenwire.server.config import ServerConfig
from tokenwire.server.errors import error_response
from tokenwire.server.http_stream import EventStreamEndpoint, ndjson_encoder, sse_encoder
from tokenwire.server.services import Services
from tokenwire.sse import OPEN_EVENT, SSEParser
from tokenwire.stream import Hub, HubConfig

# How long a subscription that should go on waiting is watched before it counts as
# live: generous, as nothing in process takes anywhere near it to end.
LIVE_S = 0.3

CELLS = [
    (offset, state, transport)
    for offset in OFFSETS
    for state in STATES
    for transport in TRANSPORTS
    if expected(state, offset, transport) is not None
]


def _id(cell: tuple[Offset, str, str]) -> str:
    offset, state, transport = cell
    return f"{offset.name.replace(' ', '_')}-{state}-{transport}"


# -- the states, in process -------------------------------------------------------


@contextlib.asynccontextmanager
async def stream_in(state: str, offset: Offset) -> AsyncIterator[tuple[Hub, str]]:
    trimmed = offset.name == "before retention"
    retention = Retention(max_events=TRIMMED_RETENTION if trimmed else 1000, ttl_s=0.05)
    if state != "expired":
        retention = Retention(max_events=retention.max_events, ttl_s=60)
    hub = Hub(MemoryBroker(retention), HubConfig(retention=retention, grace_s=60))
    release = asyncio.Event()
    emitted = asyncio.Event()

    async def producer() -> AsyncIterator[Any]:
        if state != "pending":
            for i in range(TOKENS):
                yield Event.token(f"t{i}")
            emitted.set()
        if state == "error":
            yield Event.error("boom", "the producer failed")
            return
        if state != "done":
            await release.wait()

    try:
        if state == "unknown":
            yield hub, "st_unknown"
            return
        stream = await hub.start(producer())
        if state in ("done", "error"):
            await stream.wait()
        elif state != "pending":
            await emitted.wait()  # every token published
        if state in ("cancelled", "expired", "deleted"):
            await hub.cancel(stream.id)
        if state == "expired":
            await asyncio.sleep(0.2)  # past the retention TTL: the hub forgets it
            assert stream.id not in hub.streams
        if state == "deleted":
            await hub.broker.delete(stream.id)
        yield hub, stream.id
    finally:
        release.set()
        await hub.aclose()


# -- the transports, in process ---------------------------------------------------


def _config() -> ServerConfig:
    return ServerConfig(heartbeat_s=30.0)


async def http_answer(transport: str, hub: Hub, stream_id: str, raw: Any) -> Answer:
    config = _config()
    encoder = sse_encoder(config) if transport == "sse" else ndjson_encoder(config)

    def on_error(exc: TokenwireError) -> Any:
        return error_response(exc.status, exc.code, exc.message)

    endpoint = EventStreamEndpoint(hub, config, encoder, on_error)
    query = b"" if raw is None else b"after=" + quote(raw).encode()
    scope = {
        "type": "http",
        "method": "GET",
        "path": f"/v1/streams/{stream_id}/{transport}",
        "path_params": {"stream_id": stream_id},
        "query_string": query,
        "headers": [],
    }
    gone = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    task = asyncio.ensure_future(endpoint(scope, receive, send))
    done, _ = await asyncio.wait({task}, timeout=LIVE_S)
    gone.set()
    await task
    status = sent[0]["status"]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    if status != 200:
        return (
            Answer("no_content")
            if status == 204
            else Answer("refused", loads(body)["error"]["code"])
        )
    if transport == "sse":
        parser = SSEParser()
        frames = [(m.event, loads(m.data)) for m in parser.feed(body)]
    else:
        frames = [(obj.pop("kind"), obj) for obj in NDJSONParser().feed(body)]
    assert frames[0][0] == (OPEN_EVENT if transport == "sse" else "open")
    return Answer(
        "open",
        recovered=frames[0][1]["recovered"],
        seqs=_covered(obj for _, obj in frames[1:]),
        ended=bool(done),
    )


def _covered(objects: Any) -> tuple[int, ...]:
    seqs: list[int] = []
    for obj in objects:
        seqs += range(obj.get("from_seq", obj["seq"]), obj["seq"] + 1)
    return tuple(seqs)


class MemoryPort:
    """A session's port that keeps what it is handed."""

    def __init__(self, encoder: Any, shared: SharedBatches[Any] | None) -> None:
        self.encoder = encoder
        self.shared = shared
        self.writes: list[Any] = []

    async def write(self, out: Any) -> None:
        self.writes.append(out)

    control = write

    async def ready(self) -> None:
        return None

    async def joined(self, stream_id: str) -> None:
        return None


def _socketio_frames(writes: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for packets in writes:
        for pkt in packets:
            name, payload = loads(re.sub(r"^\d+", "", pkt.data))
            out.append((name, payload))
    return out


async def session_answer(transport: str, hub: Hub, stream_id: str, raw: Any) -> Answer:
    config = _config()
    dialect: Dialect = WEBSOCKET if transport == "ws" else SOCKETIO
    if transport == "ws":
        encoder: Any = WebSocketEncoder(config.merge_after)
    else:
        encoder = SocketIOEncoder(socketio.AsyncServer().packet_class, config.merge_after)
    port = MemoryPort(encoder, None)
    services = Services(hub, None, config)  # type: ignore[arg-type]
    session = Session(services, port, OPEN, 64)
    data = (
        {dialect.stream: stream_id}
        if raw is None
        else {dialect.stream: stream_id, dialect.after: raw}
    )
    try:
        try:
            after = dialect.after_seq(data)
            await session.subscribe(stream_id, after)
        except TokenwireError as exc:
            return Answer("refused", exc.code)
        reader = session.readers.get(stream_id)
        ended = True
        if reader is not None:
            done, _ = await asyncio.wait({reader.task}, timeout=LIVE_S)
            ended = bool(done)
    finally:
        await session.aclose()
    if transport == "ws":
        frames = [loads(m) for out in port.writes for m in out]
        assert frames[0]["type"] == "open", frames
        assert all(f["type"] == "event" for f in frames[1:]), frames
        return Answer(
            "open", recovered=frames[0]["recovered"], seqs=_covered(frames[1:]), ended=ended
        )
    events = _socketio_frames(port.writes)
    assert events[0][0] == "job:open", events
    covered: list[int] = []
    for _, payload in events[1:]:
        seq = payload["sequence"]
        first = (payload.get("metadata") or {}).get("from_seq", seq)
        covered += range(first, seq + 1)
    return Answer("open", recovered=events[0][1]["recovered"], seqs=tuple(covered), ended=ended)


@pytest.mark.parametrize("cell", CELLS, ids=[_id(c) for c in CELLS])
async def test_the_core_answers_the_edge_table(cell: tuple[Offset, str, str]) -> None:
    offset, state, transport = cell
    raw = value(offset, state, text=transport in ("sse", "ndjson"))
    async with stream_in(state, offset) as (hub, stream_id):
        if transport in ("sse", "ndjson"):
            answer = await http_answer(transport, hub, stream_id, raw)
        else:
            answer = await session_answer(transport, hub, stream_id, raw)
        assert answer == expected(state, offset, transport)
        assert hub.subscriber_count == 0  # every way of leaving released it


def test_the_table_covers_every_offset_and_state() -> None:
    assert len(OFFSETS) == 10 and len(STATES) == 8
    # only offsets relative to events a pending stream does not have are left out
    assert len(CELLS) == 10 * 8 * len(TRANSPORTS) - 3 * len(TRANSPORTS)


# -- a slice against a real server ------------------------------------------------

SLICE_OFFSETS = [o for o in OFFSETS if o.name in ("negative", "last", "before retention")]
SLICE_STATES = ("done", "cancelled", "unknown")


async def _real_states(url: str) -> dict[str, tuple[str, int]]:
    """done and cancelled streams of TOKENS tokens (ids and last seqs), and an unknown id."""
    out: dict[str, tuple[str, int]] = {"unknown": ("st_unknown", TOKENS + 1)}
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        r = await http.post(
            "/v1/streams", json={"model": "scripted", "prompt": "x", "max_tokens": TOKENS}
        )
        done = r.json()["id"]
        r = await http.post(
            "/v1/streams",
            json={"model": "scripted", "prompt": "x", "max_tokens": 10_000, "delay_ms": 5},
        )
        running = r.json()["id"]
        for _ in range(600):
            status = (await http.get(f"/v1/streams/{running}")).json()
            if status["last_seq"] >= TOKENS:
                break
            await asyncio.sleep(0.05)
        await http.delete(f"/v1/streams/{running}")
        for sid, name in ((done, "done"), (running, "cancelled")):
            for _ in range(600):
                status = (await http.get(f"/v1/streams/{sid}")).json()
                if status["status"] == name:
                    break
                await asyncio.sleep(0.05)
            out[name] = (sid, status["last_seq"])
    return out


def _offset_value(offset: Offset, last: int) -> int:
    if offset.name == "negative":
        return -1
    return last if offset.name == "last" else 1


def _expect(state: str, offset: Offset, transport: str, last: int, first: int) -> Answer:
    """The table's answer for a real stream of ``last`` events (the cancelled one has
    more than TOKENS: it ran until stopped)."""
    if offset.name == "negative":
        return expected(state, offset, transport)  # type: ignore[return-value]
    if state == "unknown":
        return Answer("refused", "not_found")
    after = _offset_value(offset, last)
    if after >= last:
        return (
            Answer("no_content")
            if transport in ("sse", "ndjson")
            else Answer("open", recovered=True, ended=True)
        )
    return Answer(
        "open",
        recovered=first <= after + 1,
        seqs=tuple(range(max(first - 1, after) + 1, last + 1)),
        ended=True,
    )


async def _real_answer(url: str, transport: str, stream_id: str, after: int) -> Answer:
    if transport in ("sse", "ndjson"):
        path = "events" if transport == "sse" else "ndjson"
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            r = await http.get(f"/v1/streams/{stream_id}/{path}", params={"after": str(after)})
        if r.status_code == 204:
            return Answer("no_content")
        if r.status_code != 200:
            return Answer("refused", r.json()["error"]["code"])
        if transport == "sse":
            frames = [(m.event, loads(m.data)) for m in SSEParser().feed(r.content)]
        else:
            frames = [(o.pop("kind"), o) for o in NDJSONParser().feed(r.content)]
        return Answer(
            "open",
            recovered=frames[0][1]["recovered"],
            seqs=_covered(o for _, o in frames[1:]),
            ended=True,
        )
    if transport == "ws":
        ws_url = url.replace("http", "ws", 1) + "/v1/ws"
        async with connect(ws_url) as ws:
            await ws.send(dumps({"op": "subscribe", "stream": stream_id, "after": after}).decode())
            first = loads(await asyncio.wait_for(ws.recv(), 10))
            if first["type"] == "error":
                return Answer("refused", first["code"])
            frames: list[dict[str, Any]] = []
            while not frames or frames[-1].get("kind") not in ("done", "cancelled", "error"):
                try:
                    frames.append(loads(await asyncio.wait_for(ws.recv(), 1.0)))
                except TimeoutError:
                    break  # opened at the end: nothing more comes
            return Answer("open", recovered=first["recovered"], seqs=_covered(frames), ended=True)
    client = socketio.AsyncClient()
    events: list[tuple[str, dict[str, Any]]] = []
    ended = asyncio.Event()

    @client.on("*")
    async def any_event(name: str, payload: dict[str, Any]) -> None:
        events.append((name, payload))
        if name in ("job:completed", "job:error"):
            ended.set()

    await client.connect(url, transports=["websocket"])
    try:
        ack = await client.call(
            "subscribe", {"jobId": stream_id, "lastSequence": after}, timeout=10
        )
        if not ack["ok"]:
            return Answer("refused", ack["error"]["code"])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ended.wait(), 1.0)
    finally:
        await client.disconnect()
    opened = next(p for n, p in events if n == "job:open")
    covered: list[int] = []
    for name, payload in events:
        if name in ("job:open", "error"):
            continue
        seq = payload["sequence"]
        covered += range((payload.get("metadata") or {}).get("from_seq", seq), seq + 1)
    return Answer("open", recovered=opened["recovered"], seqs=tuple(covered), ended=True)


async def test_a_real_server_answers_a_slice_of_the_table(start_server: ServerFactory) -> None:
    server = start_server(TOKENWIRE_RETENTION_EVENTS=str(TRIMMED_RETENTION))
    states = await _real_states(server.url)
    for state in SLICE_STATES:
        stream_id, last = states[state]
        first = max(1, last - TRIMMED_RETENTION + 1) if state != "unknown" else 1
        for offset in SLICE_OFFSETS:
            for transport in TRANSPORTS:
                after = _offset_value(offset, last)
                answer = await _real_answer(server.url, transport, stream_id, after)
                want = _expect(state, offset, transport, last, first)
                assert answer == want, (state, offset.name, transport)


def test_docs_carry_the_table_as_the_data_says() -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    assert markdown() in docs  # regenerate with: python -m tests.edge_table
