"""The flush window on a multiplexed connection (docs/protocol.md, "Coalescing"):
``coalesce_ms`` in a WebSocket ``subscribe``, ``coalesceMs`` in a Socket.IO one.

The whole table of values through the one validation (core/ops.py), then a real
server: fewer writes than events, each event once and in order, a bad value an
error with the connection going on, and two subscriptions of one connection each
on its own window."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import ServerProcess
from tests.resume_checks import assert_scripted_exactly_once
from tests.test_socketio import Client as SocketIOClient
from tests.test_socketio import http_start, job_events
from tokenwire.client import Client
from tokenwire.core.ops import SOCKETIO, WEBSOCKET, BadOpError, Dialect
from tokenwire.events import dumps, loads

TERMINAL = ("done", "error", "cancelled")

# value class -> the window in seconds, or None: refused
TABLE: list[tuple[str, Any, float | None]] = [
    ("absent", ..., 0.007),  # the server's default (here 7 ms)
    ("null", None, 0.007),
    ("zero", 0, 0.0),
    ("one", 1, 0.001),
    ("the maximum", 1000, 1.0),
    ("negative", -1, None),
    ("past the maximum", 1001, None),
    ("huge", 2**70, None),
    ("a float", 1.5, None),
    ("an integral float", 5.0, None),
    ("a numeric string", "5", None),
    ("an empty string", "", None),
    ("a boolean", True, None),
    ("a list", [5], None),
    ("an object", {"ms": 5}, None),
]


@pytest.mark.parametrize("dialect", [WEBSOCKET, SOCKETIO], ids=["ws", "socketio"])
@pytest.mark.parametrize(("value_class", "value", "window"), TABLE, ids=[t[0] for t in TABLE])
def test_every_value_class_is_a_window_or_the_dialects_bad_op_error(
    dialect: Dialect, value_class: str, value: Any, window: float | None
) -> None:
    data: dict[str, Any] = {dialect.stream: "st_x"}
    if value is not ...:
        data[dialect.coalesce] = value
    if window is not None:
        assert dialect.coalesce_s(data, 7) == pytest.approx(window)
        return
    with pytest.raises(BadOpError) as refused:
        dialect.coalesce_s(data, 7)
    assert refused.value.code == dialect.bad_code and refused.value.status == 422
    assert dialect.coalesce in refused.value.message and "0..1000" in refused.value.message


def assert_window(arrivals: list[float], window_s: float) -> None:
    """Writes (their arrival times) at most one per window: as many as the time they
    span allows, and no more (a little slack for a read split in two)."""
    span = arrivals[-1] - arrivals[0]
    assert len(arrivals) <= span / window_s + 3, (len(arrivals), span)


def ws_url(server: ServerProcess, query: str = "?batch=1") -> str:
    return server.url.replace("http://", "ws://") + "/v1/ws" + query


async def read_ws(
    ws: Any, streams: set[str]
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[float]]]:
    """Every event of ``streams`` on one connection, and when each message with
    events of a stream arrived (with ``?batch=1``, a write is one message)."""
    events: dict[str, list[dict[str, Any]]] = {s: [] for s in streams}
    arrivals: dict[str, list[float]] = {s: [] for s in streams}
    loop = asyncio.get_running_loop()
    ended: set[str] = set()
    while ended != streams:
        message = await asyncio.wait_for(ws.recv(), 20)
        seen: set[str] = set()
        for line in str(message).split("\n"):
            frame = loads(line)
            assert frame["type"] != "error", frame
            if frame["type"] == "event":
                events[frame["stream"]].append(frame)
                seen.add(frame["stream"])
                if frame["kind"] in TERMINAL:
                    ended.add(frame["stream"])
        for stream in seen:
            arrivals[stream].append(loop.time())
    return events, arrivals


@pytest.mark.slow
async def test_websocket_subscriptions_of_one_connection_each_keep_their_own_window(
    server: ServerProcess,
) -> None:
    windowed = await http_start(server, max_tokens=80, delay_ms=2)
    plain = await http_start(server, max_tokens=80, delay_ms=2)
    async with websockets.connect(ws_url(server), compression=None) as ws:
        await ws.send(dumps({"op": "subscribe", "stream": windowed, "coalesce_ms": 50}).decode())
        await ws.send(dumps({"op": "subscribe", "stream": plain, "coalesce_ms": 0}).decode())
        events, arrivals = await read_ws(ws, {windowed, plain})
    for stream in (windowed, plain):
        assert_scripted_exactly_once(events[stream], 80)
    # Writes of the windowed subscription are at least 50 ms apart, however long the
    # stream took on a loaded machine (~160 ms of tokens: a handful, not 80)...
    assert_window(arrivals[windowed], 0.05)
    # ...while the other one, on the same connection and heartbeat, is not held back.
    plain_gaps = [b - a for a, b in itertools.pairwise(arrivals[plain])]
    assert min(plain_gaps) < 0.025, plain_gaps


@pytest.mark.slow
async def test_a_bad_websocket_window_is_an_error_frame_and_the_connection_goes_on(
    server: ServerProcess,
) -> None:
    sid = await http_start(server, max_tokens=5)
    async with websockets.connect(ws_url(server, ""), compression=None) as ws:
        for bad in (-1, 1001, "5", 2.5, True):
            await ws.send(dumps({"op": "subscribe", "stream": sid, "coalesce_ms": bad}).decode())
            frame = loads(await asyncio.wait_for(ws.recv(), 10))
            assert frame["type"] == "error" and frame["code"] == "bad_request", frame
            assert frame["stream"] == sid and "coalesce_ms" in frame["message"]
        await ws.send(dumps({"op": "subscribe", "stream": sid, "coalesce_ms": 20}).decode())
        events, _ = await read_ws(ws, {sid})
    assert_scripted_exactly_once(events[sid], 5)


@pytest.mark.slow
async def test_socketio_subscribe_takes_a_window_and_refuses_a_bad_one(
    server: ServerProcess,
) -> None:
    job = await http_start(server, max_tokens=60, delay_ms=2)
    client = await SocketIOClient().connect(server)
    try:
        ack = await client.call("subscribe", {"jobId": job, "coalesceMs": "20"})
        assert ack["ok"] is False and ack["error"]["code"] == "invalid_request", ack
        assert "coalesceMs" in ack["error"]["message"]
        name, _ = await client.next()
        assert name == "error"
        ack = await client.call("subscribe", {"jobId": job, "coalesceMs": 40})
        assert ack == {"ok": True, "jobId": job}
        received = await client.until("job:completed")
    finally:
        await client.close()
    assert_scripted_exactly_once(job_events(received), 60)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        assert (await http.get(f"/v1/streams/{job}")).status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["sse", "ndjson", "ws"])
async def test_the_python_client_asks_for_a_window_on_every_transport(
    server: ServerProcess, transport: str
) -> None:
    sid = await http_start(server, max_tokens=100, delay_ms=3)
    arrivals: list[float] = []
    events = []
    loop = asyncio.get_running_loop()
    async with Client(server.url, transport=transport) as client:
        async for event in client.subscribe(sid, coalesce_ms=50):
            events.append({"seq": event.seq, "kind": event.kind, **event.fields})
            arrivals.append(loop.time())
    assert_scripted_exactly_once(events, 100)
    # ~300 ms of tokens, 3 ms apart, in writes at least 50 ms apart: a handful of
    # bursts (a gap of 1 ms or more starts one), not one per token (about 100
    # without the window).
    starts = [arrivals[0]] + [b for a, b in itertools.pairwise(arrivals) if b - a >= 0.001]
    assert_window(starts, 0.05)


@pytest.mark.parametrize("bad", [-1, 1001, 2.5, "20", True])
async def test_the_python_client_refuses_a_bad_window_before_it_connects(bad: Any) -> None:
    async with Client("http://127.0.0.1:9", transport="sse") as client:
        with pytest.raises(ValueError, match="coalesce_ms"):
            client.subscribe("st_x", coalesce_ms=bad)
