"""Any stream read as OpenAI chunks (``/v1/streams/{id}/openai``) and as the AI SDK
stream (``/ai-sdk``), resumable, beside every other transport (issue 13.8)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import socketio  # type: ignore[import-untyped]
from websockets.asyncio.client import connect

from tests.conftest import ServerProcess
from tokenwire.events import dumps, loads
from tokenwire.ndjson import NDJSONParser
from tokenwire.sse import SSEParser


def openai_text(body: bytes) -> tuple[str, list[str], str | None]:
    """(text, ids, finish_reason) of a chat.completion.chunk stream ending in [DONE]."""
    messages = SSEParser().feed(body)
    assert messages[-1].data == "[DONE]"
    text, finish = "", None
    for m in messages[:-1]:
        choice = loads(m.data)["choices"][0]
        text += choice["delta"].get("content") or ""
        finish = choice["finish_reason"] or finish
    return text, [m.id or "" for m in messages], finish


def ai_sdk_text(body: bytes) -> tuple[str, list[dict[str, Any]]]:
    messages = SSEParser().feed(body)
    assert messages[-1].data == "[DONE]"
    parts = [loads(m.data) for m in messages[:-1]]
    return "".join(p.get("delta", "") for p in parts if p["type"] == "text-delta"), parts


async def sse_text(http: httpx.AsyncClient, stream_id: str) -> str:
    body = (await http.get(f"/v1/streams/{stream_id}/events")).content
    events = [loads(m.data) for m in SSEParser().feed(body) if m.event == "token"]
    return "".join(e["text"] for e in events)


async def test_one_stream_reads_alike_on_every_transport(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        body = {"model": "scripted", "prompt": "x", "max_tokens": 40, "delay_ms": 20}
        stream_id = (await http.post("/v1/streams", json=body)).json()["id"]

        async def ndjson() -> str:
            r = await http.get(f"/v1/streams/{stream_id}/ndjson")
            lines = NDJSONParser().feed(r.content)
            assert lines[-1]["kind"] == "done"
            return "".join(o.get("text", "") for o in lines if o.get("kind") == "token")

        async def openai() -> str:
            text, _, finish = openai_text(
                (await http.get(f"/v1/streams/{stream_id}/openai")).content
            )
            assert finish == "length"
            return text

        async def ai_sdk() -> str:
            r = await http.get(f"/v1/streams/{stream_id}/ai-sdk")
            assert r.headers["x-vercel-ai-ui-message-stream"] == "v1"
            text, parts = ai_sdk_text(r.content)
            assert parts[-1]["type"] == "finish"
            return text

        async def ws() -> str:
            async with connect(server.url.replace("http", "ws", 1) + "/v1/ws") as conn:
                await conn.send(dumps({"op": "subscribe", "stream": stream_id}).decode())
                text = ""
                while True:
                    frame = loads(await asyncio.wait_for(conn.recv(), 30))
                    if frame.get("kind") == "token":
                        text += frame["text"]
                    if frame.get("kind") == "done":
                        return text

        async def sio() -> str:
            client = socketio.AsyncClient()
            chunks: list[str] = []
            done = asyncio.Event()
            client.on("model:chunk", lambda p: chunks.append(p["chunk"]))
            client.on("job:completed", lambda p: done.set())
            await client.connect(server.url, transports=["websocket"])
            try:
                await client.call("subscribe", {"jobId": stream_id}, timeout=30)
                await asyncio.wait_for(done.wait(), 30)
            finally:
                await client.disconnect()
            return "".join(chunks)

        texts = await asyncio.gather(ndjson(), openai(), ai_sdk(), ws(), sio())
        reference = await sse_text(http, stream_id)
        assert reference and all(text == reference for text in texts), texts


async def test_the_views_resume_like_events(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        body = {"model": "scripted", "prompt": "x", "max_tokens": 12}
        stream_id = (await http.post("/v1/streams", json=body)).json()["id"]
        full, ids, _ = openai_text((await http.get(f"/v1/streams/{stream_id}/openai")).content)
        status = (await http.get(f"/v1/streams/{stream_id}")).json()
        last = status["last_seq"]
        # every chunk made from an event carries its seq: resume from the 6th token
        r = await http.get(f"/v1/streams/{stream_id}/openai", headers={"last-event-id": "6"})
        rest, _, finish = openai_text(r.content)
        head = await _tokens(http, stream_id, upto=6)
        assert head + rest == full and finish == "length"
        assert "6" in ids
        r = await http.get(f"/v1/streams/{stream_id}/ai-sdk", params={"after": "6"})
        assert ai_sdk_text(r.content)[0] == rest
        for view in ("openai", "ai-sdk"):
            at_end = await http.get(f"/v1/streams/{stream_id}/{view}", params={"after": str(last)})
            assert at_end.status_code == 204 and at_end.content == b""
            bad = await http.get(f"/v1/streams/{stream_id}/{view}", params={"after": "-1"})
            assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
            unknown = await http.get(f"/v1/streams/st_nope/{view}")
            assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
        assert (await http.get("/healthz")).json()["subscribers"] == 0


async def _tokens(http: httpx.AsyncClient, stream_id: str, upto: int) -> str:
    body = (await http.get(f"/v1/streams/{stream_id}/ndjson")).content
    lines = NDJSONParser().feed(body)
    return "".join(o["text"] for o in lines if o.get("kind") == "token" and o["seq"] <= upto)
