"""Fuzzing the op handlers of the multiplexed transports (issue 12, deliverable 5),
through the session core, against a real server: every WebSocket message and
every Socket.IO event a client can send gets a valid reply or a typed error,
never a server error, and the connection stays up.

WebSocket: after each fuzzed message the test sends a sentinel op (an
``unsubscribe`` with its own ``id``) and reads up to its answer; every frame on
the way must be a frame of docs/protocol.md ("WebSocket"), an ``error`` carrying
a ``code`` and a ``message``, echoing the op's ``id`` when the op had a usable one.
Socket.IO: every event is acknowledged ``{ok: true, …}`` or ``{ok: false, error:
{code, message}}``.

Bounded by ``tests/fuzz_settings.py``; ``tokenwire bench fuzz`` runs them longer.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
import socketio
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import ServerProcess
from tests.fuzz_settings import fuzz
from tokenwire.core.ops import MAX_ID_CHARS, OPS
from tokenwire.events import dumps, loads

pytestmark = pytest.mark.slow

T = TypeVar("T")

WS_TYPES = {"open", "event", "heartbeat", "error", "started", "unsubscribed"}
SERVER_ERRORS = {"internal_error", "internal"}

text = st.text(st.characters(exclude_categories=("Cs",)), max_size=24)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
# What a start may ask for: mostly wrong, sometimes a small real generation.
requests = values | st.fixed_dictionaries(
    {"prompt": text},
    optional={
        "model": st.sampled_from(["scripted", "nope"]) | text,
        "max_tokens": st.integers(-2, 4) | values,
        "delay_ms": st.integers(0, 5),
        "stream": values,
    },
)
stream_ids = st.sampled_from(["st_unknown", "", "x" * (MAX_ID_CHARS + 1)]) | text | values
offsets = st.integers(-3, 2**64 - 1) | st.sampled_from(["", "1", " 2"]) | values


def op_messages(op_key: str, stream_key: str, after_key: str) -> st.SearchStrategy[Any]:
    """Op-shaped objects: the op, any of its fields (right or wrong), extra keys."""
    fields = {
        stream_key: stream_ids,
        after_key: offsets,
        "id": st.none() | text | st.integers(-(2**63), 2**64 - 1) | values,
        "token": values,
        "request": requests,
    }
    ops = st.fixed_dictionaries({op_key: st.sampled_from(OPS) | text | values}, optional=fields)
    extra = st.dictionaries(text, values, max_size=2)
    return st.builds(lambda op, more: {**more, **op}, ops, extra)


ws_messages = (
    op_messages("op", "stream", "after").map(lambda m: dumps(m).decode())
    | values.map(lambda v: dumps(v).decode())
    | text
    | st.sampled_from(
        [
            "{",
            "[]",
            "null",
            '{"op":"subscribe"}',
            '{"op":"start","request":1}',
            # JSON a client can write that the encoders here cannot: huge numbers.
            '{"op":"subscribe","stream":"st_x","after":123456789012345678901234567890}',
            '{"op":"subscribe","stream":"st_x","after":1e400}',
            '{"op":"cancel","stream":"st_x","id":-99999999999999999999999}',
        ]
    )
)


def usable_id(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) <= MAX_ID_CHARS
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= 2**63 - 1


class LoopThread:
    """An event loop running in its own thread for the whole test: the connections
    answer the server's pings (every heartbeat, 1 s here) even while hypothesis
    generates or shrinks in the test's thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, awaitable: Awaitable[T], timeout: float = 60) -> T:
        async def wait() -> T:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wait(), self.loop).result(timeout)

    def close(self) -> None:
        self.run(self.loop.shutdown_asyncgens())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


async def exchange(ws: ClientConnection, message: str, sentinel: str) -> list[dict[str, Any]]:
    """Send ``message``, then the sentinel op; the text frames up to its answer."""
    await ws.send(message)
    await ws.send(dumps({"op": "unsubscribe", "stream": "st_sentinel", "id": sentinel}).decode())
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(20):
        while True:
            raw = await ws.recv()
            if isinstance(raw, bytes):
                continue  # a tensor chunk's binary frame
            frame = loads(raw)
            assert isinstance(frame, dict), raw
            if frame.get("id") == sentinel:
                assert frame["type"] == "unsubscribed", frame
                return frames
            frames.append(frame)


def check_ws_frames(message: str, frames: list[dict[str, Any]]) -> None:
    try:
        sent = loads(message)
    except ValueError:
        sent = None
    op_id = sent.get("id") if isinstance(sent, dict) else None
    for frame in frames:
        assert frame.get("type") in WS_TYPES, frame
        if frame["type"] != "error":
            continue
        assert isinstance(frame.get("code"), str) and frame["code"], frame
        assert isinstance(frame.get("message"), str) and frame["message"], frame
        assert frame["code"] not in SERVER_ERRORS, frame
        assert len(frame["message"]) < 1000, frame
        if frame.get("stream") is None and usable_id(op_id):
            assert frame["id"] == op_id, frame


def test_every_websocket_message_gets_a_frame_or_a_typed_error(
    server: ServerProcess, loop: LoopThread
) -> None:
    ws = loop.run(connect(server.url.replace("http", "ws", 1) + "/v1/ws"))
    sentinels = (f"sentinel-{i}" for i in itertools.count())
    try:

        @fuzz(40)
        @given(message=ws_messages)
        def one(message: str) -> None:
            frames = loop.run(exchange(ws, message, next(sentinels)))
            check_ws_frames(message, frames)

        one()
    finally:
        loop.run(ws.close())
    assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200


SIO_RESERVED = {"connect", "connect_error", "disconnect", "message"}
sio_events = (st.sampled_from(OPS) | text).filter(lambda name: name not in SIO_RESERVED)
sio_payloads = (
    op_messages("op", "jobId", "lastSequence").map(
        lambda m: {k: v for k, v in m.items() if k != "op"}
    )
    | values
)


def test_every_socketio_event_is_acknowledged_or_refused_with_a_typed_error(
    server: ServerProcess, loop: LoopThread
) -> None:
    client = socketio.AsyncClient(reconnection=False)
    errors: list[Any] = []
    client.on("error", errors.append)
    loop.run(client.connect(server.url, transports=["websocket"]))
    try:

        @fuzz(40)
        @given(event=sio_events, payload=sio_payloads)
        def one(event: str, payload: Any) -> None:
            ack = loop.run(client.call(event, payload, timeout=20))
            assert isinstance(ack, dict) and isinstance(ack.get("ok"), bool), ack
            if not ack["ok"]:
                error = ack["error"]
                assert isinstance(error.get("code"), str) and error["code"], ack
                assert isinstance(error.get("message"), str) and error["message"], ack
                assert error["code"] not in SERVER_ERRORS, ack
            elif event in ("subscribe", "unsubscribe", "cancel", "start"):
                assert isinstance(ack.get("jobId"), str), ack
            assert client.connected

        one()
    finally:
        loop.run(client.disconnect())
    for error in errors:
        assert isinstance(error, dict) and error.get("code") not in SERVER_ERRORS, error
    assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200


def test_every_start_request_is_started_or_refused_with_a_typed_4xx(
    server: ServerProcess,
) -> None:
    with httpx.Client(base_url=server.url, timeout=20) as http:

        @fuzz(30)
        @given(body=requests)
        def one(body: Any) -> None:
            r = http.post(
                "/v1/streams", content=dumps(body), headers={"content-type": "application/json"}
            )
            if r.status_code == 201:
                assert isinstance(r.json()["id"], str)
                http.delete(f"/v1/streams/{r.json()['id']}")
                return
            assert 400 <= r.status_code < 500, (r.status_code, r.text)
            error = r.json()["error"]
            assert isinstance(error["code"], str) and isinstance(error["message"], str)

        one()
