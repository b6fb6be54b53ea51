"""Graceful shutdown (docs/protocol.md, "Shutdown"): on SIGTERM every open connection
gets its final frame and the process exits within 5 s, even with 10,000 open
subscriptions (10 WebSocket connections x 1,000 streams, beside SSE, NDJSON and
Socket.IO readers): WebSocket close 1001, Socket.IO an error server_shutdown
event and a disconnect, SSE and NDJSON their stream's terminal event
cancelled {reason: shutdown} and the end of the body."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import httpx
import socketio  # type: ignore[import-untyped]
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import ServerFactory
from tokenwire.events import dumps, loads
from tokenwire.ndjson import NDJSONParser
from tokenwire.sse import SSEParser

STREAMS = 1000
CONNECTIONS = 10
EXIT_WITHIN_S = 5.0
# Tokens far apart: the streams stay running, quiet, until the server stops them.
SLOW = {"model": "scripted", "prompt": "x", "max_tokens": 1000, "delay_ms": 60_000}


async def _subscribe_all(ws: ClientConnection, ids: list[str]) -> None:
    for i in range(0, len(ids), 100):
        for sid in ids[i : i + 100]:
            await ws.send(dumps({"op": "subscribe", "stream": sid}).decode())
        for _ in ids[i : i + 100]:
            frame = loads(await asyncio.wait_for(ws.recv(), 30))
            assert frame["type"] == "open", frame


async def _read_ws(ws: ClientConnection) -> tuple[list[dict[str, Any]], int | None]:
    frames: list[dict[str, Any]] = []
    try:
        async for message in ws:
            frames.append(loads(message))
    except ConnectionClosed:
        pass
    return frames, ws.close_code


async def _read_http(client: httpx.AsyncClient, url: str, started: asyncio.Event) -> bytes:
    body = b""
    async with client.stream("GET", url) as r:
        assert r.status_code == 200
        async for chunk in r.aiter_bytes():
            body += chunk
            started.set()
    return body


async def test_sigterm_ends_every_connection_with_its_final_frame(
    start_server: ServerFactory,
) -> None:
    server = start_server(
        TOKENWIRE_MAX_SUBSCRIPTIONS_PER_CONNECTION=str(STREAMS),
        TOKENWIRE_MAX_STREAMS=str(STREAMS + 10),
        TOKENWIRE_GRACE_S="600",
        TOKENWIRE_HEARTBEAT_S="5",
    )
    ws_url = server.url.replace("http", "ws", 1) + "/v1/ws"
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        ids = []
        for _ in range(STREAMS):
            r = await http.post("/v1/streams", json=SLOW)
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        conns = [await connect(ws_url, max_queue=None) for _ in range(CONNECTIONS)]
        await asyncio.gather(*(_subscribe_all(ws, ids) for ws in conns))
        ws_readers = [asyncio.ensure_future(_read_ws(ws)) for ws in conns]

        # One reader per HTTP transport and one Socket.IO socket, on the first stream.
        sse_open, nd_open = asyncio.Event(), asyncio.Event()
        sse = asyncio.ensure_future(_read_http(http, f"/v1/streams/{ids[0]}/events", sse_open))
        nd = asyncio.ensure_future(_read_http(http, f"/v1/streams/{ids[0]}/ndjson", nd_open))
        await asyncio.wait_for(asyncio.gather(sse_open.wait(), nd_open.wait()), 30)
        sio = socketio.AsyncClient(reconnection=False)
        sio_events: list[tuple[str, Any]] = []
        disconnected = asyncio.Event()

        @sio.on("*")
        async def on_any(name: str, payload: Any) -> None:
            sio_events.append((name, payload))

        @sio.event
        async def disconnect(*_: Any) -> None:
            disconnected.set()

        await sio.connect(server.url, transports=["websocket"])
        ack = await sio.call("subscribe", {"jobId": ids[0]}, timeout=30)
        assert ack["ok"], ack
        health = (await http.get("/healthz")).json()
        assert health["subscribers"] == STREAMS * CONNECTIONS + 3

        server.stopping = True  # the freeze detector: no longer a server that must answer
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(server.proc.wait, 30)
        took = time.monotonic() - started
        # uvicorn re-raises the signal it caught once it has shut down
        assert code in (0, -signal.SIGTERM), server.log()[-3000:]
        assert took < EXIT_WITHIN_S, f"exited {took:.1f}s after SIGTERM"
        assert "Traceback" not in server.log()

        for frames, close_code in await asyncio.gather(*ws_readers):
            # one final frame for the connection's 1,000 subscriptions: going away
            assert close_code == 1001
            assert all(f["type"] == "heartbeat" for f in frames), frames[:3]
        sse_body, nd_body = await asyncio.gather(sse, nd)
        last = [m for m in SSEParser().feed(sse_body) if m.event != "tw-open"][-1]
        assert last.event == "cancelled" and loads(last.data)["reason"] == "shutdown"
        lines = NDJSONParser().feed(nd_body)
        assert lines[-1]["kind"] == "cancelled" and lines[-1]["reason"] == "shutdown"
        await asyncio.wait_for(disconnected.wait(), 10)
        final = [p for n, p in sio_events if n == "error"]
        assert final and final[-1]["code"] == "server_shutdown", sio_events
        await sio.disconnect()
