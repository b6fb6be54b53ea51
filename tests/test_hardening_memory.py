"""Retained memory is bounded by the retention settings, counted in encoded bytes
(issue 11, flaw 6; deliverable 2).

A 32,768-token stream read by one live subscriber used to cost about 150 MB,
still held after the stream ended: about 4.6 KB an event, mostly cached orjson
encodings (orjson hands back a 4 KiB buffer whatever the length) that retention
did not count. Now every cached encoding is charged to the log that retains the
event, and ``TOKENWIRE_RETENTION_BYTES`` caps the total.
"""

from __future__ import annotations

import asyncio

import httpx
import psutil
import pytest
import socketio
from websockets.asyncio.client import connect

from tests.conftest import ServerFactory, ServerProcess
from tests.hardening_clients import no_subscribers, start, wait_ended
from tokenwire.events import dumps, loads

MIB = 1024 * 1024
RETENTION = 4 * MIB
STREAMS = 5
TOKENS = 32768
SLACK = 48 * MIB
"""Allocator slack and what is alive while streaming: per-connection buffers, the
last batch of every stream kept for sharing (core.encoder.SharedBatches), one read batch."""
BOUND = STREAMS * RETENTION + SLACK


def rss(server: ServerProcess) -> int:
    return int(psutil.Process(server.pid).memory_info().rss)


async def read_sse(server: ServerProcess, sid: str, route: str) -> int:
    """Events read to the end (merged catch-up frames count for what they cover)."""
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        r = await client.get(f"/v1/streams/{sid}/{route}")
    text = r.text
    # the done event is last (on SSE its id: line comes after its data)
    tail = text.rstrip().rsplit("\n", 1)
    last = tail[0].rsplit("\n", 1)[-1] if tail[-1].startswith("id: ") else tail[-1]
    assert last.endswith("}") and '"kind":"done"' in last, text[-300:]
    return text.count("\n")


async def read_ws(server: ServerProcess, sid: str) -> None:
    url = server.url.replace("http", "ws", 1) + "/v1/ws"
    async with connect(url, max_size=None) as ws:
        await ws.send(dumps({"op": "subscribe", "stream": sid}).decode())
        while True:
            frame = loads(await asyncio.wait_for(ws.recv(), 120))
            if frame.get("kind") == "done":
                return


async def read_socketio(server: ServerProcess, sid: str) -> None:
    sio = socketio.AsyncClient(reconnection=False)
    done = asyncio.Event()
    sio.on("job:completed", lambda data: done.set())
    await sio.connect(server.url, transports=["websocket"], wait_timeout=10)
    try:
        await sio.emit("subscribe", {"jobId": sid, "lastSequence": 0})
        await asyncio.wait_for(done.wait(), 300)
    finally:
        await sio.disconnect()


async def stream_to_live_readers(server: ServerProcess, tokens: int) -> str:
    sid = await start(server, max_tokens=tokens, delay_ms=0.05)
    await asyncio.gather(
        read_sse(server, sid, "events"),
        read_sse(server, sid, "ndjson"),
        read_ws(server, sid),
        read_socketio(server, sid),
    )
    await wait_ended(server, sid)
    return sid


@pytest.fixture(scope="module")
def memory_server(start_server: ServerFactory) -> ServerProcess:
    # The default heartbeat: four busy readers in one test process may answer a ping
    # late, and a 1 s heartbeat would then close their connections.
    return start_server(
        TOKENWIRE_RETENTION_BYTES=str(RETENTION),
        TOKENWIRE_GRACE_S="60",
        TOKENWIRE_HEARTBEAT_S="15",
    )


# 5 x 32,768 tokens to live readers on four transports: about 90 s alone, and
# over 300 s while two other test workers share the two cores.
@pytest.mark.timeout(900)
async def test_five_long_streams_stay_within_the_retention_bound(
    memory_server: ServerProcess,
) -> None:
    await stream_to_live_readers(memory_server, 2000)  # warm every code path first
    before = rss(memory_server)
    peak = before
    sids = []
    for _ in range(STREAMS):
        sids.append(await stream_to_live_readers(memory_server, TOKENS))
        peak = max(peak, rss(memory_server))
    # Every stream is still retained (TTL 300 s) and counted against its bound.
    async with httpx.AsyncClient(base_url=memory_server.url, timeout=10) as client:
        for sid in sids:
            info = (await client.get(f"/v1/streams/{sid}")).json()
            assert info["status"] == "done" and info["last_seq"] == TOKENS + 2
            again = await client.get(f"/v1/streams/{sid}/ndjson", params={"after": TOKENS})
            assert '"kind":"done"' in again.text  # the end is kept
    for sid in sids:
        await no_subscribers(memory_server, sid)
    growth = peak - before
    print(f"RSS {before / MIB:.0f} MiB -> peak {peak / MIB:.0f} MiB (bound +{BOUND / MIB:.0f})")
    assert growth < BOUND, f"RSS grew {growth / MIB:.0f} MiB (bound {BOUND / MIB:.0f} MiB)"
