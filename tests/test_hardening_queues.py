"""A client that never reads cannot grow the server (issue 11, flaw 7; deliverable 3).

engine.io's send queue is unbounded and its WebSocket writer drains it whole, so
a Socket.IO reader's cursor used to advance as fast as packets entered it: a
client that never read a tensor stream grew the server by hundreds of MB. Every
transport's non-reader here subscribes to a large tensor stream and reads
nothing; the server's RSS (psutil, on its pid) stays within the configured
bounds: retention, the byte window and the per-socket queue bound.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import psutil
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import ServerFactory, ServerProcess
from tests.hardening_clients import TIMEOUT, PollingSession, status, until
from tokenwire.events import dumps

MIB = 1024 * 1024
RETENTION = 16 * MIB
WINDOW = 8 * MIB
SOCKETIO_QUEUE = 2 * 4 * MIB  # QUEUE_HIGH_BYTES, once queued and once in the writer
SLACK = 48 * MIB  # kernel socket buffers, allocator slack, one chunk in flight per layer
BOUND = RETENTION + WINDOW + SOCKETIO_QUEUE + SLACK
TENSOR = {"nbytes": 512 * MIB, "chunk_bytes": MIB, "fill": "repeat"}
WATCH_S = 8.0


@pytest.fixture(scope="module")
def queue_server(start_server: ServerFactory) -> ServerProcess:
    # Long heartbeats: the test watches throttling, not engine.io dropping the client.
    return start_server(
        TOKENWIRE_HEARTBEAT_S="60",
        TOKENWIRE_RETENTION_BYTES=str(RETENTION),
        TOKENWIRE_WINDOW_BYTES=str(WINDOW),
        TOKENWIRE_GRACE_S="60",
    )


def rss(server: ServerProcess) -> int:
    return int(psutil.Process(server.pid).memory_info().rss)


async def tensor_stream(server: ServerProcess) -> str:
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
        body = {"pipeline": "tensor", "params": {**TENSOR, "start_delay_ms": 300}}
        r = await client.post("/v1/streams", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def grows_by(server: ServerProcess, sid: str) -> int:
    """RSS growth while a non-reader is attached, and proof the stream is stuck
    behind it (the producer throttled, not finished)."""
    before = rss(server)
    peak = before
    for _ in range(int(WATCH_S / 0.25)):
        await asyncio.sleep(0.25)
        peak = max(peak, rss(server))
    info = await status(server, sid)
    assert info["status"] == "running" and info["subscribers"] == 1, info
    return peak - before


def small_receive_buffer() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    return sock


@pytest.fixture
async def stopper(queue_server: ServerProcess) -> AsyncIterator[list[str]]:
    sids: list[str] = []
    yield sids
    async with httpx.AsyncClient(base_url=queue_server.url, timeout=TIMEOUT) as client:
        for sid in sids:
            await client.delete(f"/v1/streams/{sid}")


async def test_socketio_websocket_client_that_never_reads(
    queue_server: ServerProcess, stopper: list[str]
) -> None:
    sid = await tensor_stream(queue_server)
    stopper.append(sid)
    url = queue_server.url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
    sock = small_receive_buffer()
    sock.connect(("127.0.0.1", int(queue_server.url.rsplit(":", 1)[1])))
    ws: ClientConnection = await connect(url, sock=sock, max_queue=1, max_size=None)
    try:
        await ws.recv()  # engine.io open
        await ws.send("40")
        await ws.recv()  # Socket.IO connect ack
        await ws.send("42" + dumps(["subscribe", {"jobId": sid}]).decode())
        # From here on nothing is read.
        growth = await grows_by(queue_server, sid)
    finally:
        ws.transport.abort()
    assert growth < BOUND, f"RSS grew {growth / MIB:.0f} MiB (bound {BOUND / MIB:.0f} MiB)"


async def test_socketio_polling_client_that_never_gets(
    queue_server: ServerProcess, stopper: list[str]
) -> None:
    sid = await tensor_stream(queue_server)
    stopper.append(sid)
    session = await PollingSession(queue_server).open()
    try:
        await session.post(PollingSession.event("subscribe", {"jobId": sid}))
        growth = await grows_by(queue_server, sid)
    finally:
        await session.close()
    assert growth < BOUND, f"RSS grew {growth / MIB:.0f} MiB (bound {BOUND / MIB:.0f} MiB)"


@pytest.mark.parametrize("route", ["events", "ndjson"])
async def test_http_stream_client_that_never_reads(
    queue_server: ServerProcess, stopper: list[str], route: str
) -> None:
    sid = await tensor_stream(queue_server)
    stopper.append(sid)
    port = int(queue_server.url.rsplit(":", 1)[1])
    _reader, writer = await asyncio.open_connection(sock=_connected(port))
    writer.write(f"GET /v1/streams/{sid}/{route} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    await until(lambda: status(queue_server, sid), lambda s: s["subscribers"] == 1)
    try:
        growth = await grows_by(queue_server, sid)
    finally:
        writer.transport.abort()
    assert growth < BOUND, f"RSS grew {growth / MIB:.0f} MiB (bound {BOUND / MIB:.0f} MiB)"


async def test_websocket_client_that_never_reads(
    queue_server: ServerProcess, stopper: list[str]
) -> None:
    sid = await tensor_stream(queue_server)
    stopper.append(sid)
    url = queue_server.url.replace("http", "ws", 1) + "/v1/ws"
    sock = _connected(int(queue_server.url.rsplit(":", 1)[1]))
    ws = await connect(url, sock=sock, max_queue=1, max_size=None)
    try:
        await ws.send(dumps({"op": "subscribe", "stream": sid}).decode())
        growth = await grows_by(queue_server, sid)
    finally:
        ws.transport.abort()
    assert growth < BOUND, f"RSS grew {growth / MIB:.0f} MiB (bound {BOUND / MIB:.0f} MiB)"


def _connected(port: int) -> socket.socket:
    sock = small_receive_buffer()
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock
