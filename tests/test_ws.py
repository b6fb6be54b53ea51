"""WebSocket ``/v1/ws`` end to end: a real server process, the ``websockets`` client."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import ServerFactory, ServerProcess
from tests.resume_checks import TERMINAL, assert_scripted_exactly_once, covered
from tokenwire.events import dumps, loads
from tokenwire.examples.synthetic import expected_bytes
from tokenwire.tensors import TensorAssembler, decode_chunk_frame

pytestmark = pytest.mark.slow

Frame = dict[str, Any]


def ws_url(server: ServerProcess) -> str:
    return server.url.replace("http://", "ws://") + "/v1/ws"


async def send(ws: ClientConnection, **msg: Any) -> None:
    await ws.send(dumps(msg).decode())


async def next_frame(ws: ClientConnection, timeout: float = 10.0) -> Frame:
    """The next frame; a binary tensor chunk frame is decoded into an ``event`` frame."""
    msg = await asyncio.wait_for(ws.recv(), timeout)
    if isinstance(msg, bytes):
        stream, event = decode_chunk_frame(msg)
        return {"type": "event", "stream": stream, **event, "binary": True}
    frame: Frame = loads(msg)
    return frame


async def frames_until(
    ws: ClientConnection, done: Callable[[Frame], bool], timeout: float = 10.0
) -> list[Frame]:
    """Frames up to and including the first for which ``done`` holds (heartbeats too)."""
    out: list[Frame] = []
    while True:
        frame = await next_frame(ws, timeout)
        out.append(frame)
        if done(frame):
            return out


def is_terminal(stream: str) -> Callable[[Frame], bool]:
    return lambda f: f["type"] == "event" and f["stream"] == stream and f["kind"] in TERMINAL


def events_of(frames: list[Frame], stream: str) -> list[Frame]:
    return [f for f in frames if f["type"] == "event" and f["stream"] == stream]


async def http_start(server: ServerProcess, **body: Any) -> str:
    body.setdefault("model", "scripted")
    body.setdefault("prompt", "hello")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        r = await client.post("/v1/streams", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def status(server: ServerProcess, sid: str) -> str:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        return str((await client.get(f"/v1/streams/{sid}")).json()["status"])


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} missing from /metrics"
    return float(m.group(1))


async def test_start_streams_to_done(server: ServerProcess) -> None:
    async with connect(ws_url(server)) as ws:
        request = {"model": "scripted", "prompt": "hi", "max_tokens": 20}
        await send(ws, op="start", id="r1", request=request)
        started = await next_frame(ws)
        assert started["type"] == "started" and started["id"] == "r1"
        sid = started["stream"]
        assert sid.startswith("st_") and started["status"] == "running"
        opened = await next_frame(ws)
        assert opened == {
            "type": "open",
            "stream": sid,
            "epoch": opened["epoch"],
            "recovered": True,
            "first_seq": 1,
            "last_seq": opened["last_seq"],
            "status": "running",
        }
        frames = await frames_until(ws, is_terminal(sid))
    events = events_of(frames, sid)
    assert all(set(f) >= {"type", "stream", "seq", "kind"} for f in events)
    assert_scripted_exactly_once(events, 20)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        text = (await client.get("/metrics")).text
    assert metric(text, 'tokenwire_events_delivered_total{transport="ws"}') >= len(events)
    assert f"event=subscribe stream={sid} transport=ws" in server.log()


async def test_streams_multiplexed_on_one_connection(server: ServerProcess) -> None:
    third = await http_start(server, max_tokens=30, delay_ms=2)
    async with connect(ws_url(server)) as ws:
        await send(ws, op="start", id=1, request={"prompt": "a", "max_tokens": 40, "delay_ms": 2})
        await send(ws, op="start", id=2, request={"prompt": "b", "max_tokens": 25, "delay_ms": 3})
        await send(ws, op="subscribe", stream=third, after=0)
        frames: list[Frame] = []
        ended: set[str] = set()
        streams: dict[int, str] = {}
        while len(ended) < 3:
            frame = await next_frame(ws)
            frames.append(frame)
            if frame["type"] == "started":
                streams[frame["id"]] = frame["stream"]
            if frame["type"] == "event" and frame["kind"] in TERMINAL:
                ended.add(frame["stream"])
    assert ended == {streams[1], streams[2], third}
    assert [f["type"] for f in frames].count("open") == 3
    for sid, tokens in ((streams[1], 40), (streams[2], 25), (third, 30)):
        opened = [f for f in frames if f["type"] == "open" and f["stream"] == sid]
        first_event = next(i for i, f in enumerate(frames) if f.get("stream") == sid)
        assert frames[first_event] in opened or frames[first_event]["type"] == "started"
        assert_scripted_exactly_once(events_of(frames, sid), tokens)


async def test_resume_after_abrupt_cuts_delivers_each_event_once(server: ServerProcess) -> None:
    rng = random.Random(4)
    sid = await http_start(server, max_tokens=150, delay_ms=5)
    seen: list[Frame] = []
    cuts = 0
    while not seen or seen[-1]["kind"] not in TERMINAL:
        ws = await connect(ws_url(server))
        await send(ws, op="subscribe", stream=sid, after=seen[-1]["seq"] if seen else 0)
        opened = await next_frame(ws)
        assert opened["type"] == "open" and opened["recovered"] is True
        want = rng.randint(1, 25)
        got = 0
        while got < want:
            frame = await next_frame(ws)
            if frame["type"] == "heartbeat":
                continue
            assert frame["type"] == "event" and frame["stream"] == sid
            seen.append(frame)
            got += 1
            if frame["kind"] in TERMINAL:
                break
        # Drop the TCP connection without a closing handshake, mid-stream.
        ws.transport.abort()
        cuts += 1
    assert cuts >= 3
    assert_scripted_exactly_once(seen, 150)


async def test_malformed_messages_get_error_frames_and_streams_go_on(
    server: ServerProcess,
) -> None:
    live = await http_start(server, max_tokens=200, delay_ms=5)
    async with connect(ws_url(server)) as ws:
        await send(ws, op="subscribe", stream=live)
        bad: list[tuple[str | bytes, dict[str, Any]]] = [
            ("{not json", {"code": "bad_request"}),
            ("[1, 2]", {"code": "bad_request"}),
            ('"subscribe"', {"code": "bad_request"}),
            ('{"op": "nope", "id": "x1"}', {"code": "bad_request", "id": "x1"}),
            ('{"stream": "st_x"}', {"code": "bad_request"}),
            ('{"op": "subscribe", "id": 7}', {"code": "bad_request", "id": 7}),
            ('{"op": "subscribe", "stream": 5}', {"code": "bad_request"}),
            (dumps({"op": "subscribe", "stream": live, "after": -1}), {"code": "bad_request"}),
            (dumps({"op": "subscribe", "stream": live, "after": "3"}), {"code": "bad_request"}),
            (dumps({"op": "subscribe", "stream": live, "after": True}), {"code": "bad_request"}),
            ('{"op": "subscribe", "id": {"a": 1}, "stream": "x"}', {"code": "bad_request"}),
            ('{"op": "subscribe", "stream": "st_unknown"}', {"code": "not_found"}),
            ('{"op": "cancel", "stream": "st_unknown"}', {"code": "not_found"}),
            (dumps({"op": "subscribe", "stream": live}), {"code": "already_subscribed"}),
            ('{"op": "start", "id": "s1"}', {"code": "invalid_request", "id": "s1"}),
            ('{"op": "start", "request": {"prompt": 5}}', {"code": "invalid_request"}),
            (
                '{"op": "start", "request": {"prompt": "x", "max_tokens": -1}}',
                {"code": "invalid_request"},
            ),
            (
                '{"op": "start", "request": {"prompt": "x", "model": "nope"}}',
                {"code": "model_not_found"},
            ),
            (b"\x00binary", {"code": "bad_request"}),
        ]
        for message, expected in bad:
            # A JSON op is a text frame; bytes here are a binary frame.
            await ws.send(message.decode() if message[:1] == b"{" else message)
            frames = await frames_until(ws, lambda f: f["type"] == "error")
            error = frames[-1]
            assert error["message"], message
            assert {k: error.get(k) for k in expected} == expected, (message, error)
            if error["code"] == "not_found":
                assert error["stream"] == "st_unknown"
        rest = await frames_until(ws, is_terminal(live), timeout=20)
        # An over-size message closes that connection only, with 1009.
        async with connect(ws_url(server)) as big:
            await big.send("x" * (1024 * 1024 + 16))
            with pytest.raises(ConnectionClosed) as closed:
                await next_frame(big)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        await send(ws, op="start", id="after", request={"prompt": "ok", "max_tokens": 3})
        after = await frames_until(ws, lambda f: f["type"] == "event" and f["kind"] == "done")
    events = [f for f in rest if f["type"] == "event"]
    assert events[-1]["kind"] == "done"
    assert events[-1]["seq"] == 202
    assert [f["type"] for f in after][:2] == ["started", "open"]


async def test_subscribe_after_streams_only_what_follows(server: ServerProcess) -> None:
    sid = await http_start(server, max_tokens=10)
    async with connect(ws_url(server)) as ws:
        await send(ws, op="subscribe", stream=sid, after=0)
        first = events_of(await frames_until(ws, is_terminal(sid)), sid)
        await send(ws, op="subscribe", stream=sid, after=7)
        frames = await frames_until(ws, is_terminal(sid))
    assert frames[0]["type"] == "open" and frames[0]["status"] == "done"
    assert covered(events_of(frames, sid)) == list(range(8, first[-1]["seq"] + 1))


async def test_cancel_stops_the_stream(server: ServerProcess) -> None:
    async with connect(ws_url(server)) as ws:
        request = {"prompt": "long", "max_tokens": 5000, "delay_ms": 5}
        await send(ws, op="start", request=request)
        started = await next_frame(ws)
        sid = started["stream"]
        await frames_until(ws, lambda f: f.get("seq") == 3)
        await send(ws, op="cancel", stream=sid)
        frames = await frames_until(ws, is_terminal(sid))
    last = frames[-1]
    assert last["kind"] == "cancelled" and last["reason"] == "stopped"
    assert last["seq"] < 300
    assert await status(server, sid) == "cancelled"


async def test_heartbeat_frame_on_an_idle_stream(server: ServerProcess) -> None:
    async with connect(ws_url(server)) as ws:
        await send(ws, op="start", request={"prompt": "slow", "max_tokens": 2, "delay_ms": 1500})
        frames = await frames_until(ws, lambda f: f["type"] == "heartbeat", timeout=5)
        assert [f["type"] for f in frames] == ["started", "open", "heartbeat"]
        assert isinstance(frames[-1]["ts"], float)
        await send(ws, op="cancel", stream=frames[0]["stream"])


async def test_tensor_chunks_arrive_as_binary_frames(server: ServerProcess) -> None:
    nbytes, chunk = 200_000, 65_536
    request = {"pipeline": "tensor", "params": {"nbytes": nbytes, "chunk_bytes": chunk}}
    async with connect(ws_url(server)) as ws:
        await send(ws, op="start", request=request)
        sid = (await next_frame(ws))["stream"]
        frames = await frames_until(ws, is_terminal(sid))
    events = events_of(frames, sid)
    assert [e["kind"] for e in events] == ["tensor.header"] + ["tensor.chunk"] * 4 + [
        "tensor.end",
        "done",
    ]
    assert all(e.get("binary") for e in events if e["kind"] == "tensor.chunk")
    assert covered(events) == list(range(1, len(events) + 1))
    assembler = TensorAssembler()
    received = [assembler.feed_tensor(e) for e in events]
    tensor = received[-2]
    assert tensor is not None and tensor.meta is not None
    assert tensor.array.tobytes() == expected_bytes(tensor.meta, nbytes, chunk)


async def test_unsubscribe_and_disconnect_leave_then_grace_cancels(
    start_server: ServerFactory,
) -> None:
    srv = start_server(TOKENWIRE_GRACE_S="1")
    request = {"prompt": "long", "max_tokens": 5000, "delay_ms": 10}
    async with connect(ws_url(srv)) as ws:
        await send(ws, op="start", id="a", request=request)
        await send(ws, op="start", id="b", request=request)
        started = {}
        while len(started) < 2:
            frame = await next_frame(ws)
            if frame["type"] == "started":
                started[frame["id"]] = frame["stream"]
        left, back = started["a"], started["b"]
        await send(ws, op="unsubscribe", stream=left, id="u")
        await frames_until(ws, lambda f: f["type"] == "unsubscribed" and f["stream"] == left)
        await send(ws, op="unsubscribe", stream=back)
        await frames_until(ws, lambda f: f["type"] == "unsubscribed" and f["stream"] == back)
        # A third stream whose only subscriber drops the connection.
        dropped_ws = await connect(ws_url(srv))
        await send(dropped_ws, op="start", request=request)
        dropped = (await next_frame(dropped_ws))["stream"]
        await frames_until(dropped_ws, lambda f: f.get("seq") == 2)
        dropped_ws.transport.abort()
        await asyncio.sleep(0.5)
        await send(ws, op="subscribe", stream=back, after=0)  # back within the grace period
        await frames_until(ws, lambda f: f["type"] == "open" and f["stream"] == back)
        await asyncio.sleep(1.2)
        assert await status(srv, left) == "cancelled"
        assert await status(srv, dropped) == "cancelled"
        assert await status(srv, back) == "running"
        for sid in (left, dropped):
            await send(ws, op="subscribe", stream=sid, after=0)
            frames = await frames_until(ws, is_terminal(sid))
            assert frames[-1]["reason"] == "no_subscribers"
        await send(ws, op="cancel", stream=back)
        frames = await frames_until(ws, is_terminal(back))
        assert frames[-1]["kind"] == "cancelled" and frames[-1]["reason"] == "stopped"
    assert f"event=grace_expired stream={left}" in srv.log()


async def test_subscribe_unsubscribe_cycles_leave_no_tasks(server: ServerProcess) -> None:
    # Idle streams: a reader left behind would sit in its read until the next
    # heartbeat (1 s), well after the count below is taken.
    idle = await http_start(server, max_tokens=2, delay_ms=60_000)
    busy = await http_start(server, max_tokens=30_000, delay_ms=20)

    async def cycles(n: int, abort: bool) -> None:
        ws = await connect(ws_url(server))
        for _ in range(n):
            await send(ws, op="subscribe", stream=busy, after=0)
            await frames_until(ws, lambda f: f["type"] == "open")
            await send(ws, op="subscribe", stream=idle, after=0)
            await frames_until(ws, lambda f: f["type"] == "open")
            await send(ws, op="unsubscribe", stream=busy)
            await frames_until(ws, lambda f: f["type"] == "unsubscribed")
            await send(ws, op="unsubscribe", stream=idle)
            await frames_until(ws, lambda f: f["type"] == "unsubscribed")
        await send(ws, op="subscribe", stream=idle, after=0)
        await frames_until(ws, lambda f: f["type"] == "open")
        if abort:
            ws.transport.abort()
        else:
            await ws.close()

    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        await asyncio.gather(*(cycles(5, i % 2 == 0) for i in range(10)))  # warm up
        await asyncio.sleep(0.3)
        tasks0 = metric((await client.get("/metrics")).text, "tokenwire_asyncio_tasks")
        await asyncio.gather(*(cycles(20, i % 2 == 0) for i in range(20)))
        await asyncio.sleep(0.3)
        text = (await client.get("/metrics")).text
        assert metric(text, 'tokenwire_subscribers{transport="ws"}') == 0
        tasks1 = metric(text, "tokenwire_asyncio_tasks")
        assert tasks1 <= tasks0, (tasks0, tasks1)
        await client.delete(f"/v1/streams/{idle}")
        await client.delete(f"/v1/streams/{busy}")


async def test_too_many_subscriptions_on_one_connection(server: ServerProcess) -> None:
    sid = await http_start(server, max_tokens=3)
    async with connect(ws_url(server)) as ws:
        for _ in range(64):
            await send(ws, op="start", request={"prompt": "x", "max_tokens": 5000, "delay_ms": 50})
        opened = 0
        while opened < 64:
            frame = await next_frame(ws)
            opened += frame["type"] == "open"
        await send(ws, op="subscribe", stream=sid, id="65th")
        frames = await frames_until(ws, lambda f: f["type"] == "error")
        assert frames[-1]["code"] == "too_many_subscriptions" and frames[-1]["id"] == "65th"
    # Closing the connection left them all; the server still answers.
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        assert (await client.get("/healthz")).json()["status"] == "ok"
