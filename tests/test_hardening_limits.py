"""At the hub's subscriber limit every route answers 429 at once (issue 11, flaw 5).

The chat routes start a stream and then subscribe; when the subscription was
refused they stopped the stream with ``hub.cancel()``, which waited for a task
that had been cancelled before its first step and so never ended: no answer,
and a zombie stream (``running``, ``started_at: null``) counted as active.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import socketio
from websockets.asyncio.client import connect

from tests.conftest import ServerFactory, ServerProcess
from tests.hardening_clients import TIMEOUT, gauge, metrics, start, status, until
from tokenwire.events import dumps, loads

LONG = {"max_tokens": 32768, "delay_ms": 20}
CHAT = [{"role": "user", "content": "hi"}]
UI_MESSAGE = {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/ai-sdk/chat"])
async def test_chat_routes_answer_429_at_the_subscriber_limit(
    start_server: ServerFactory, route: str
) -> None:
    server = start_server(TOKENWIRE_MAX_SUBSCRIBERS="1")
    held = await start(server, **LONG)
    body: dict[str, Any] = {"model": "scripted", "stream": True, "messages": CHAT}
    if route == "/v1/ai-sdk/chat":
        body = {"model": "scripted", "messages": [UI_MESSAGE]}
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
        async with client.stream("GET", f"/v1/streams/{held}/events") as viewer:
            chunks = viewer.aiter_bytes()  # kept: closing the iterator closes the response
            await anext(chunks)
            await until(lambda: status(server, held), lambda s: s["subscribers"] == 1)
            for _ in range(3):
                r = await client.post(route, json=body)
                assert r.status_code == 429, r.text
                assert r.json()["error"]["code"] == "too_many_subscribers", r.text
            # The refused streams ended: only the held one is active.
            text = await until(
                lambda: metrics(server), lambda t: gauge(t, "tokenwire_streams_active") == 1
            )
            assert gauge(text, "tokenwire_subscribers") == 1
    assert (await status(server, held))["status"] == "running"


@pytest.mark.parametrize("transport", ["sse", "ndjson", "ws", "socketio"])
async def test_every_transport_refuses_at_once_at_the_subscriber_limit(
    start_server: ServerFactory, transport: str
) -> None:
    server = start_server(TOKENWIRE_MAX_SUBSCRIBERS="1")
    held = await start(server, **LONG)
    other = await start(server, **LONG)
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
        async with client.stream("GET", f"/v1/streams/{held}/events") as viewer:
            chunks = viewer.aiter_bytes()
            await anext(chunks)
            await until(lambda: status(server, held), lambda s: s["subscribers"] == 1)
            code = await asyncio.wait_for(_refused(server, client, transport, other), TIMEOUT)
            assert code == "too_many_subscribers"
    assert (await status(server, other))["subscribers"] == 0


async def _refused(
    server: ServerProcess, client: httpx.AsyncClient, transport: str, sid: str
) -> str:
    if transport in ("sse", "ndjson"):
        route = "events" if transport == "sse" else "ndjson"
        r = await client.get(f"/v1/streams/{sid}/{route}")
        assert r.status_code == 429, r.text
        return str(r.json()["error"]["code"])
    if transport == "ws":
        url = server.url.replace("http", "ws", 1) + "/v1/ws"
        async with connect(url) as ws:
            await ws.send(dumps({"op": "subscribe", "stream": sid}).decode())
            frame = loads(await ws.recv())
            assert frame["type"] == "error", frame
            return str(frame["code"])
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(server.url, transports=["websocket"], wait_timeout=TIMEOUT)
    try:
        ack = await sio.call("subscribe", {"jobId": sid}, timeout=TIMEOUT)
    finally:
        await sio.disconnect()
    assert ack["ok"] is False, ack
    return str(ack["error"]["code"])
