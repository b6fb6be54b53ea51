"""Start a stream on a tokenwire server and read it over SSE, NDJSON or WebSocket.

A deliberately small reader for the examples and the tensor benchmark: no
reconnect, no resume (the Python client does those). It yields what each
transport delivers, ready for :class:`~tokenwire.tensors.TensorAssembler`: the
event objects (``{"seq", "kind", …}``, chunk bytes in base64) and, on
WebSocket, each ``tensor.chunk`` as its raw binary frame (``bytes``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from tokenwire.events import TERMINAL_KINDS, dumps, loads
from tokenwire.ndjson import NDJSONParser
from tokenwire.sse import SSEParser

TRANSPORTS = ("sse", "ndjson", "ws")
# A 16 MiB chunk is about 22 MiB of base64 in one line.
MAX_LINE_BYTES = 32 << 20


async def start_stream(client: httpx.AsyncClient, body: Mapping[str, Any]) -> str:
    """``POST /v1/streams``; the new stream's id."""
    response = await client.post("/v1/streams", json=dict(body))
    if response.status_code != 201:
        raise RuntimeError(f"POST /v1/streams answered {response.status_code}: {response.text}")
    stream_id: str = response.json()["id"]
    return stream_id


async def remote_events(
    base_url: str, body: Mapping[str, Any], transport: str = "sse", *, timeout: float = 60.0
) -> AsyncIterator[Any]:
    """Start ``body`` (a ``POST /v1/streams`` body) and yield its events to the terminal one."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}")
    if transport == "ws":
        async for item in _ws_events(base_url, body, timeout):
            yield item
        return
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout) as client:
        stream_id = await start_stream(client, body)
        path = f"/v1/streams/{stream_id}/{'events' if transport == 'sse' else 'ndjson'}"
        async with client.stream("GET", path) as response:
            response.raise_for_status()
            async for obj in _http_events(response, transport):
                yield obj
                if obj.get("kind") in TERMINAL_KINDS:
                    return


async def _http_events(response: httpx.Response, transport: str) -> AsyncIterator[Any]:
    if transport == "sse":
        sse = SSEParser(max_line_bytes=MAX_LINE_BYTES, max_event_bytes=MAX_LINE_BYTES)
        async for data in response.aiter_raw():
            for message in sse.feed(data):
                if message.event != "open":
                    yield loads(message.data)
        return
    ndjson = NDJSONParser(max_line_bytes=MAX_LINE_BYTES)
    async for data in response.aiter_raw():
        for obj in ndjson.feed(data):
            if obj.get("kind") not in ("open", "heartbeat"):
                yield obj


async def _ws_events(base_url: str, body: Mapping[str, Any], timeout: float) -> AsyncIterator[Any]:
    from websockets.asyncio.client import connect

    url = "ws" + base_url.removeprefix("http") + "/v1/ws"
    # No permessage-deflate: tensor bytes hardly compress, and deflate costs more than
    # the whole transfer (see docs/tensors.md).
    async with connect(url, max_size=None, open_timeout=timeout, compression=None) as ws:
        await ws.send(dumps({"op": "start", "id": "example", "request": dict(body)}).decode())
        async for message in ws:
            if isinstance(message, bytes):
                yield message
                continue
            obj = loads(message)
            kind = obj.get("type")
            if kind == "error":
                raise RuntimeError(f"server error {obj.get('code')}: {obj.get('message')}")
            if kind == "event":
                yield obj
                if obj.get("kind") in TERMINAL_KINDS:
                    return
