"""Socket.IO deliveries written straight to the WebSocket (server/engineio_wire.py):
the frames are byte for byte what engine.io's writer sends, and live, resuming,
polling and lagging clients of one stream each get every event exactly once."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import socketio
import websockets
from engineio import packet as eio_packet
from websockets.frames import Frame, Opcode

from tests.inprocess_server import serving
from tests.resume_checks import assert_scripted_exactly_once, covered
from tests.test_socketio import Client, Received, as_event, job_events
from tokenwire.core.socketio_encoder import Packets, SocketIOEncoder
from tokenwire.core.ws_direct import SansIOSocket
from tokenwire.events import Event, loads
from tokenwire.server import create_app
from tokenwire.server.config import ServerConfig
from tokenwire.server.socketio_app import SocketIOAdapter

# -- the frames ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 100, 125, 126, 1000, 65535, 65536, 200_000])
def test_frames_are_what_websockets_serializes_for_engineio_s_packets(size: int) -> None:
    encoder = SocketIOEncoder(socketio.AsyncServer().packet_class, merge_after=None)
    event = Event("token", {"text": "é" * (size // 2) + "x" * (size % 2)})
    event.seq = 7
    packets, _ = encoder.batch("st_x", [event])
    assert isinstance(packets, Packets)
    want = b"".join(
        Frame(Opcode.TEXT, pkt.encode().encode()).serialize(mask=False) for pkt in packets
    )
    assert packets.frames == want
    assert packets.frames is packets.frames  # built once, for every socket


def test_an_event_s_cached_frames_are_charged_to_retention() -> None:
    encoder = SocketIOEncoder(socketio.AsyncServer().packet_class, merge_after=None)
    event = Event("token", {"text": "x" * 1000})
    event.seq = 1
    before = event.encoded_bytes
    packets, _ = encoder.batch("st_x", [event])
    charged = event.encoded_bytes - before
    assert charged >= len(packets.frames) + len(packets[0].data)


def test_a_binary_attachment_is_a_binary_frame() -> None:
    encoder = SocketIOEncoder(socketio.AsyncServer().packet_class, merge_after=None)
    chunk = Event("tensor.chunk", {"tensor_id": "t", "index": 0, "offset": 0}, binary=b"\x00" * 300)
    chunk.seq = 3
    packets, _ = encoder.batch("st_x", [chunk])
    assert [p.packet_type for p in packets] == [eio_packet.MESSAGE, eio_packet.MESSAGE]
    header, raw = packets
    want = Frame(Opcode.TEXT, header.encode().encode()).serialize(mask=False) + Frame(
        Opcode.BINARY, raw.encode()
    ).serialize(mask=False)
    assert packets.frames == want


def test_a_batch_joins_its_events_frames() -> None:
    encoder = SocketIOEncoder(socketio.AsyncServer().packet_class, merge_after=None)
    events = []
    for seq in (1, 2, 3):
        events.append(Event("token", {"text": f"t{seq}"}))
        events[-1].seq = seq
    single = b"".join(encoder.batch("st_x", [ev])[0].frames for ev in events)
    assert encoder.batch("st_x", events)[0].frames == single


# -- one stream, every kind of reader ----------------------------------------------------


@pytest.fixture(params=[True, False], ids=["broadcast", "readers"])
async def app_url(request: pytest.FixtureRequest) -> AsyncIterator[tuple[SocketIOAdapter, str]]:
    """With the broadcast (core/broadcast.py) writing for the live sockets, and without
    (each socket's reader writes for itself, straight to its WebSocket too)."""
    config = ServerConfig.from_env({}, preload_model=False, broadcast=request.param)
    app = create_app(config=config)
    adapter = app.sio.handlers["/"]["connect"].__self__  # type: ignore[attr-defined]
    async with serving(app) as url:
        yield adapter, url


async def start(url: str, tokens: int, delay_ms: float) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        r = await http.post(
            "/v1/streams",
            json={"model": "scripted", "prompt": "p", "max_tokens": tokens, "delay_ms": delay_ms},
        )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


class UrlClient(Client):
    async def connect_url(self, url: str, transports: list[str] | None = None) -> UrlClient:
        await self.sio.connect(url, transports=transports or ["websocket"], wait_timeout=10)
        return self


async def read_job(client: Client, job: str, after: int = 0) -> list[Received]:
    ack = await client.call("subscribe", {"jobId": job, "lastSequence": after})
    assert ack == {"ok": True, "jobId": job}
    return await client.until("job:completed", timeout=30)


class RawReader:
    """A raw engine.io WebSocket client of one job (engine.io v4 text packets)."""

    def __init__(self, url: str, compression: str | None = None) -> None:
        self.url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        self.compression = compression
        self.opened = asyncio.Event()

    async def read(self, job: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        async with websockets.connect(self.url, max_queue=1, compression=self.compression) as ws:
            assert str(await ws.recv()).startswith("0")  # engine.io open
            await ws.send("40")
            assert str(await ws.recv()).startswith("40")  # Socket.IO connect
            await ws.send(f'421["subscribe",{{"jobId":"{job}","lastSequence":0}}]')
            while not events or events[-1]["kind"] != "done":
                text = str(await asyncio.wait_for(ws.recv(), 30))
                if text == "2":  # engine.io ping
                    await ws.send("3")
                elif text.startswith("42["):  # an event (not the ack, "431[…]")
                    name, data = loads(text[2:])
                    if name == "job:open":
                        self.opened.set()
                    elif "sequence" in data:
                        events.append(as_event(name, data))
        return events


async def test_live_resuming_polling_and_lagging_readers_each_get_every_event_once(
    app_url: tuple[SocketIOAdapter, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter, url = app_url
    waits = 0
    wait_resumed = SansIOSocket.wait_resumed

    async def counted(self: SansIOSocket) -> None:
        nonlocal waits
        waits += 1
        await wait_resumed(self)

    monkeypatch.setattr(SansIOSocket, "wait_resumed", counted)
    tokens = 1500
    job = await start(url, tokens, delay_ms=1)
    live = [await UrlClient().connect_url(url) for _ in range(5)]
    polling = await UrlClient().connect_url(url, transports=["polling"])
    try:
        readers = [asyncio.create_task(read_job(c, job)) for c in live]
        readers.append(asyncio.create_task(read_job(polling, job)))
        lagging = RawReader(url)
        slow = asyncio.create_task(lagging.read(job))
        await asyncio.wait_for(lagging.opened.wait(), 10)
        # Its transport above the high-water mark, as a client that stops reading
        # leaves it (uvicorn's flow control): its reader waits, then catches up.
        wire = list(adapter.sio.eio.sockets.values())[-1].wire
        wire._proto.pause_writing()
        await asyncio.sleep(0.5)
        wire._proto.resume_writing()
        # The stream is under way: this one replays from the start, then goes live.
        late = await UrlClient().connect_url(url)
        live.append(late)
        first = await read_job(late, job, after=0)
        got = await asyncio.gather(*readers)
        slow_events = await slow
    finally:
        for c in [*live, polling]:
            await c.close()
    for received in [*got, first]:
        assert received[0][0] == "job:open"
        assert_scripted_exactly_once(job_events(received), tokens)
    assert covered(slow_events) == list(range(1, tokens + 3))
    assert adapter.direct_writes >= 5 * tokens  # the live WebSocket readers went direct
    assert waits >= 1  # the lagging reader waited for its transport
    assert any("from_seq" in e for e in slow_events)  # it caught up with merged frames
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    fanned = re.search(
        r'^tokenwire_broadcast_events_total\{transport="socketio"\} (\S+)$', text, re.M
    )
    if adapter.broadcasts is not None:  # the live sockets got most events in one pass
        assert fanned is not None and float(fanned.group(1)) >= 3 * tokens
    else:
        assert fanned is None


async def test_a_deflate_client_goes_through_engine_io_s_queue(
    app_url: tuple[SocketIOAdapter, str],
) -> None:
    adapter, url = app_url
    tokens = 300
    job = await start(url, tokens, delay_ms=1)
    reader = RawReader(url, compression="deflate")
    task = asyncio.create_task(reader.read(job))
    await asyncio.wait_for(reader.opened.wait(), 10)
    # Compressed frames differ per connection: no shared frames for this one.
    assert list(adapter.sio.eio.sockets.values())[-1].wire is None
    events = await task
    assert covered(events) == list(range(1, tokens + 3))
    assert adapter.direct_writes == 0
