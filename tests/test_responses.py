"""event_stream_response() in a plain Starlette app, over a real uvicorn socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
from httpx_sse import aconnect_sse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from tests.inprocess_server import serving
from tokenwire import Event, event_stream_response
from tokenwire.events import loads
from tokenwire.tensors import TensorAssembler, TensorOptions

closed: dict[str, asyncio.Event] = {}


async def gen(request: Request) -> Any:
    async def source() -> AsyncIterator[Any]:
        yield Event.progress("load", 0.5)
        yield "Hello"
        yield {"kind": "token", "text": " world"}
        yield {"answer": 42}

    return event_stream_response(source())


async def boom(request: Request) -> Any:
    async def source() -> AsyncIterator[str]:
        yield "a"
        raise ValueError("exploded")

    return event_stream_response(source())


async def slow(request: Request) -> Any:
    async def source() -> AsyncIterator[str]:
        await asyncio.sleep(0.5)
        yield "late"

    return event_stream_response(source(), heartbeat_s=0.1)


async def forever(request: Request) -> Any:
    flag = closed.setdefault(request.query_params["key"], asyncio.Event())

    async def source() -> AsyncIterator[str]:
        try:
            while True:
                await asyncio.sleep(0.01)
                yield "x"
        finally:
            flag.set()

    return event_stream_response(source())


async def stall(request: Request) -> Any:
    async def source() -> AsyncIterator[str]:
        yield "a"
        await asyncio.sleep(30)
        yield "never"

    return event_stream_response(source(), heartbeat_s=0.1, idle_timeout_s=0.3)


async def array(request: Request) -> Any:
    async def source() -> AsyncIterator[Any]:
        yield "image:"
        yield np.arange(24, dtype=np.float32).reshape(2, 3, 4)

    ids = iter(["img-1", "img-2"])
    tensor = TensorOptions(chunk_bytes=32, id_factory=lambda: next(ids), meta={"step": 1})
    return event_stream_response(source(), tensor=tensor)


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    app = Starlette(
        routes=[
            Route(f"/{f.__name__}", f)
            for f in (gen, boom, slow, forever, stall, array)  # type: ignore[attr-defined]
        ]
    )
    async with serving(app) as url:
        yield url


async def events_of(base_url: str, path: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        async with aconnect_sse(client, "GET", path) as es:
            assert es.response.headers["x-accel-buffering"] == "no"
            return [
                {"id": s.id, "event": s.event, **loads(s.data)}
                async for s in es.aiter_sse()
                if s.data
            ]


async def test_items_are_framed_numbered_and_end_with_done(base_url: str) -> None:
    events = await events_of(base_url, "/gen")
    assert [(e["id"], e["event"]) for e in events] == [
        ("1", "progress"),
        ("2", "token"),
        ("3", "token"),
        ("4", "data"),
        ("5", "done"),
    ]
    assert events[1]["text"] == "Hello" and events[2]["text"] == " world"
    assert events[3]["data"] == {"answer": 42}
    assert all(e["seq"] == int(e["id"]) for e in events)


async def test_an_exception_becomes_the_error_event(base_url: str) -> None:
    events = await events_of(base_url, "/boom")
    assert [e["event"] for e in events] == ["token", "error"]
    assert events[-1]["code"] == "producer_error" and "exploded" in events[-1]["message"]


async def test_heartbeats_while_the_source_is_quiet(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        body = (await client.get("/slow")).text
    assert body.count(": hb\n\n") >= 2
    assert body.index(": hb") < body.index("event: token")
    # the terminal event, with its id: written last (docs/protocol.md, "SSE")
    assert body.rstrip().endswith('"usage":null}\nid: 2')


async def test_client_disconnect_stops_the_generator(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        async with client.stream("GET", "/forever?key=a") as r:
            async for chunk in r.aiter_bytes():
                if b"event: token" in chunk:
                    break
    await asyncio.wait_for(closed["a"].wait(), 5)


async def test_a_stalled_source_never_hangs_the_client(base_url: str) -> None:
    events = await events_of(base_url, "/stall")
    assert [e["event"] for e in events] == ["token", "error"]
    assert events[-1]["code"] == "timeout"


async def test_arrays_are_sent_as_tensor_frames(base_url: str) -> None:
    events = await events_of(base_url, "/array")
    kinds = [e["event"] for e in events]
    assert kinds[:2] == ["token", "tensor.header"] and kinds[-2:] == ["tensor.end", "done"]
    assert kinds.count("tensor.chunk") == 3  # 96 bytes in 32-byte chunks
    assert events[1]["tensor_id"] == "img-1" and events[1]["meta"] == {"step": 1}
    assembler = TensorAssembler()
    result = None
    for e in events[1:-1]:
        e.pop("id"), e.pop("event")
        result = assembler.feed(e) if result is None else result
    assert result is not None
    np.testing.assert_array_equal(result, np.arange(24, dtype=np.float32).reshape(2, 3, 4))
