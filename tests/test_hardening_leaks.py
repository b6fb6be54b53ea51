"""Every way of leaving releases the subscription (issue 11, flaws 2 and 4).

A reader task cancelled before its first step never ran its ``finally:
sub.close()``: a WebSocket ``subscribe`` then ``unsubscribe`` (or a Socket.IO
subscribe then disconnect in one polling POST) left the subscription counted
forever, a leaked stream was never cancelled after its grace period, and a
leaked cursor pinned a tensor stream's byte window. The counts here are the
server's own: ``GET /v1/streams/{id}`` ``subscribers`` and the hub-wide
``tokenwire_subscribers`` on ``/metrics``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import socketio
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import ServerFactory, ServerProcess
from tests.hardening_clients import (
    TIMEOUT,
    PollingSession,
    no_subscribers,
    start,
    wait_ended,
)
from tokenwire.events import dumps, loads

PAIRS = 50
LONG = {"max_tokens": 32768, "delay_ms": 20}


@pytest.fixture(scope="module")
def leak_server(start_server: ServerFactory) -> ServerProcess:
    # A long grace: any stream cancelled during a test was cancelled by a stop.
    return start_server(TOKENWIRE_GRACE_S="60")


def ws_url(server: ServerProcess) -> str:
    return server.url.replace("http", "ws", 1) + "/v1/ws"


async def ws_send(ws: ClientConnection, **msg: Any) -> None:
    await ws.send(dumps(msg).decode())


async def ws_until(ws: ClientConnection, kind: str, count: int = 1) -> None:
    seen = 0
    while seen < count:
        message = await asyncio.wait_for(ws.recv(), TIMEOUT)
        if isinstance(message, bytes):
            continue  # a tensor chunk that went out before the op was handled
        if loads(message).get("type") == kind:
            seen += 1


async def test_ws_subscribe_then_unsubscribe_back_to_back(leak_server: ServerProcess) -> None:
    sid = await start(leak_server, **LONG)
    async with connect(ws_url(leak_server)) as ws:
        for _ in range(PAIRS):  # sent without waiting: the reader has not started yet
            await ws_send(ws, op="subscribe", stream=sid)
            await ws_send(ws, op="unsubscribe", stream=sid)
        await ws_until(ws, "unsubscribed", PAIRS)
        await no_subscribers(leak_server, sid)
    await no_subscribers(leak_server, sid)


@pytest.mark.parametrize("how", ["close", "abort"])
async def test_ws_connection_closed_with_subscriptions(
    leak_server: ServerProcess, how: str
) -> None:
    sids = [await start(leak_server, **LONG) for _ in range(3)]
    ws = await connect(ws_url(leak_server))
    for sid in sids:
        await ws_send(ws, op="subscribe", stream=sid)
    if how == "close":
        await ws.close()
    else:
        await ws_until(ws, "open", len(sids))
        ws.transport.abort()
    for sid in sids:
        await no_subscribers(leak_server, sid)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest.mark.parametrize("leave", ["unsubscribe", "disconnect"])
async def test_socketio_leaves(leak_server: ServerProcess, transport: str, leave: str) -> None:
    sid = await start(leak_server, **LONG)
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(leak_server.url, transports=[transport], wait_timeout=TIMEOUT)
    acks = []
    for _ in range(10):
        await sio.emit("subscribe", {"jobId": sid, "lastSequence": 0})
        if leave == "unsubscribe":
            acks.append(await sio.call("unsubscribe", {"jobId": sid}, timeout=TIMEOUT))
    if leave == "disconnect":
        await sio.disconnect()
    else:
        assert all(ack["ok"] for ack in acks), acks
        await no_subscribers(leak_server, sid)
        await sio.disconnect()
    await no_subscribers(leak_server, sid)


@pytest.mark.parametrize("close", ["41", "1"])
async def test_socketio_polling_subscribe_and_disconnect_in_one_post(
    leak_server: ServerProcess, close: str
) -> None:
    """The probe's packet: subscribes and the disconnect (Socket.IO ``41`` or
    engine.io ``1``) in one POST, with no GET in between."""
    sid = await start(leak_server, **LONG)
    for _ in range(5):
        session = await PollingSession(leak_server).open()
        subscribe = PollingSession.event("subscribe", {"jobId": sid, "lastSequence": 0})
        await session.post(*([subscribe] * 10), close)
        await session.close()
    await no_subscribers(leak_server, sid)


@pytest.mark.parametrize("route", ["events", "ndjson"])
async def test_http_stream_client_disconnects(leak_server: ServerProcess, route: str) -> None:
    sid = await start(leak_server, **LONG)
    async with httpx.AsyncClient(base_url=leak_server.url, timeout=TIMEOUT) as client:
        for _ in range(5):
            async with client.stream("GET", f"/v1/streams/{sid}/{route}") as r:
                async for _chunk in r.aiter_bytes():
                    break
    await no_subscribers(leak_server, sid)


CHAT = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/ai-sdk/chat"])
async def test_chat_routes_client_disconnects(leak_server: ServerProcess, route: str) -> None:
    body = {"model": "scripted", "stream": True, "messages": CHAT, **LONG}
    if route == "/v1/ai-sdk/chat":
        body = {"model": "scripted", "messages": [_ui_message("hi")], **LONG}
    sids = []
    async with httpx.AsyncClient(base_url=leak_server.url, timeout=TIMEOUT) as client:
        for _ in range(3):
            async with client.stream("POST", route, json=body) as r:
                assert r.status_code == 200
                sids.append(r.headers["x-tokenwire-stream"])
                async for _chunk in r.aiter_bytes():
                    break
    for sid in sids:
        await no_subscribers(leak_server, sid)


def _ui_message(text: str) -> dict[str, Any]:
    return {"id": "m1", "role": "user", "parts": [{"type": "text", "text": text}]}


async def test_a_left_stream_is_cancelled_after_the_grace_period(
    start_server: ServerFactory,
) -> None:
    server = start_server(TOKENWIRE_GRACE_S="1")
    sid = await start(server, **LONG)
    async with connect(ws_url(server)) as ws:
        for _ in range(20):
            await ws_send(ws, op="subscribe", stream=sid)
            await ws_send(ws, op="unsubscribe", stream=sid)
        await ws_until(ws, "unsubscribed", 20)
        ended = await wait_ended(server, sid)
    assert ended["status"] == "cancelled" and ended["subscribers"] == 0
    assert f"event=grace_expired stream={sid}" in server.log()


@pytest.mark.parametrize("transport", ["ws", "socketio-polling"])
async def test_a_left_cursor_does_not_pin_the_tensor_byte_window(
    start_server: ServerFactory, transport: str
) -> None:
    """Flaw 4: one subscribe+unsubscribe pair used to stall a tensor producer."""
    server = start_server(TOKENWIRE_WINDOW_BYTES=str(256 * 1024))
    nbytes = 8 * 1024 * 1024
    params = {"nbytes": nbytes, "chunk_bytes": 64 * 1024, "fill": "repeat"}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        r = await client.post("/v1/streams", json={"pipeline": "tensor", "params": params})
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        if transport == "ws":
            async with connect(ws_url(server), max_size=None) as ws:
                await ws_send(ws, op="subscribe", stream=sid)
                await ws_send(ws, op="unsubscribe", stream=sid)
                await ws_until(ws, "unsubscribed")
        else:
            session = await PollingSession(server).open()
            await session.post(
                PollingSession.event("subscribe", {"jobId": sid}),
                PollingSession.event("unsubscribe", {"jobId": sid}),
            )
            await session.close()  # and never polls again
        # A real viewer reads it to the end, past many windows.
        events = await client.get(f"/v1/streams/{sid}/ndjson")
    kinds = [loads(line)["kind"] for line in events.text.splitlines()]
    assert kinds[-1] == "done" and kinds.count("tensor.chunk") == nbytes // (64 * 1024)
    await no_subscribers(server, sid)
