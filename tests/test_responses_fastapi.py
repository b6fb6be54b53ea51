"""event_stream_response and hub_stream_response returned from FastAPI routes (GET and
POST), served by uvicorn over a real socket, and shown in FastAPI's OpenAPI (issue 13,
deliverables 1 and 2)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import tokenwire
from tests.inprocess_server import serving
from tokenwire.events import loads
from tokenwire.ndjson import NDJSONParser
from tokenwire.sse import OPEN_EVENT, SSEParser

hub = tokenwire.Hub(config=tokenwire.HubConfig(grace_s=30))
api = FastAPI()


async def words(n: int) -> AsyncIterator[str]:
    for i in range(n):
        yield f"w{i} "
        await asyncio.sleep(0)


@api.get("/words", response_class=tokenwire.EventStreamResponse)
async def get_words(n: int = 3) -> tokenwire.EventStreamResponse:
    return tokenwire.event_stream_response(words(n), headers={"x-app": "yes"})


@api.post("/words", response_class=tokenwire.EventStreamResponse)
async def post_words(body: dict[str, int]) -> tokenwire.EventStreamResponse:
    return tokenwire.event_stream_response(words(body["n"]))


@api.get("/answers/{stream_id}", response_class=tokenwire.HubStreamResponse)
async def answer(stream_id: str, format: str = "sse") -> tokenwire.HubStreamResponse:
    return tokenwire.hub_stream_response(hub, stream_id, format=format)


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    async with serving(api) as url:
        yield url


def tokens(body: bytes) -> list[dict[str, Any]]:
    return [loads(m.data) for m in SSEParser().feed(body) if m.event in ("token", "done")]


async def test_fastapi_routes_return_event_stream_response(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        r = await client.get("/words", params={"n": 3})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-app"] == "yes" and r.headers["cache-control"].startswith("no-cache")
        got = tokens(r.content)
        assert [e.get("text") for e in got] == ["w0 ", "w1 ", "w2 ", None]
        assert got[-1]["kind"] == "done" and [e["seq"] for e in got] == [1, 2, 3, 4]
        r = await client.post("/words", json={"n": 2})
        assert r.status_code == 200 and len(tokens(r.content)) == 3
        doc = (await client.get("/openapi.json")).json()
    for path, method in (("/words", "get"), ("/words", "post"), ("/answers/{stream_id}", "get")):
        content = doc["paths"][path][method]["responses"]["200"]["content"]
        assert "text/event-stream" in content, (path, method, content)


async def test_a_hub_stream_from_the_applications_own_route(base_url: str) -> None:
    async def producer() -> AsyncIterator[str]:
        for i in range(5):
            yield f"t{i}"

    stream = await hub.start(producer())
    await stream.wait()
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        r = await client.get(f"/answers/{stream.id}")
        messages = SSEParser().feed(r.content)
        assert r.status_code == 200 and messages[0].event == OPEN_EVENT
        assert loads(messages[0].data)["recovered"] is True
        assert [loads(m.data)["seq"] for m in messages[1:]] == [1, 2, 3, 4, 5, 6]
        resumed = await client.get(f"/answers/{stream.id}", headers={"last-event-id": "3"})
        assert [m.id for m in SSEParser().feed(resumed.content)[1:]] == ["4", "5", "6"]
        nd = await client.get(f"/answers/{stream.id}", params={"format": "ndjson", "after": "5"})
        lines = NDJSONParser().feed(nd.content)
        assert lines[0]["kind"] == "open" and [o["seq"] for o in lines[1:]] == [6]
        at_end = await client.get(f"/answers/{stream.id}", params={"after": "6"})
        assert at_end.status_code == 204 and at_end.content == b""
        unknown = await client.get("/answers/st_nope")  # before anything is streamed
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
        bad = await client.get(f"/answers/{stream.id}", params={"after": "x"})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
    assert hub.subscriber_count == 0
