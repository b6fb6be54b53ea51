"""The client's API against a real server: iteration, callbacks, text(), cancel(),
close(), errors, the sync facade, pooling, limits, health and metrics."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve

from tests.conftest import ServerFactory, ServerProcess
from tokenwire.client import (
    Client,
    ClientClosedError,
    ReconnectPolicy,
    RequestRejectedError,
    ResourceLimitError,
    StateEvent,
    StreamCancelledError,
    StreamFailedError,
    StreamGapError,
    StreamHandle,
    StreamNotFoundError,
    SyncClient,
    TransportState,
)
from tokenwire.events import Event
from tokenwire.models.scripted import scripted_token

pytestmark = pytest.mark.slow

TRANSPORTS = ["sse", "ndjson", "ws"]


def scripted_text(n: int) -> str:
    return "".join(scripted_token(i) for i in range(n))


def covered(events: list[Event]) -> list[int]:
    out: list[int] = []
    for e in events:
        out.extend(range(e.fields.get("from_seq", e.seq), e.seq + 1))
    return out


async def http_start(server: ServerProcess, **body: Any) -> str:
    body.setdefault("model", "scripted")
    body.setdefault("prompt", "hello")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        r = await client.post("/v1/streams", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def wait_status(client: Client, stream_id: str, want: str) -> str:
    status = ""
    for _ in range(200):
        status = str((await client.status(stream_id))["status"])
        if status == want:
            break
        await asyncio.sleep(0.02)
    return status


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_start_iterate_and_states(server: ServerProcess, transport: str) -> None:
    changes: list[StateEvent] = []
    async with Client(server.url, transport, heartbeat_s=1.0) as client:
        handle = await client.start(
            model="scripted", prompt="hi", max_tokens=30, on_state=changes.append
        )
        assert handle.stream_id is not None and handle.stream_id.startswith("st_")
        events = [event async for event in handle]
        assert covered(events) == list(range(1, 33))  # a fast start may come merged
        assert [e.kind for e in events[-2:]] == ["metrics", "done"]
        assert "".join(e.fields.get("text", "") for e in events) == scripted_text(30)
        assert handle.terminal is events[-1] and handle.last_seq == 32
        await asyncio.sleep(0.05)
        assert [(c.old, c.new) for c in changes] == [
            (TransportState.IDLE, TransportState.CONNECTING),
            (TransportState.CONNECTING, TransportState.CONNECTED),
            (TransportState.CONNECTED, TransportState.CLOSED),
        ]
        assert all(c.stream_id == handle.stream_id and c.transport == transport for c in changes)
        stats = handle.stats
        assert stats.tokens == 30 and stats.ttft_ms is not None and stats.tokens_per_s > 0
        # Iterating again after the end yields nothing.
        assert [e async for e in handle] == []


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_callbacks_and_text(server: ServerProcess, transport: str) -> None:
    chunks: list[Event] = []
    done: list[Event] = []

    async def on_done(event: Event) -> None:  # a coroutine callback
        await asyncio.sleep(0)
        done.append(event)

    async with Client(server.url, transport) as client:
        handle = await client.start(
            model="scripted", prompt="hi", max_tokens=12, on_chunk=chunks.append, on_done=on_done
        )
        terminal = await handle.wait()
        assert terminal.kind == "done" and done == [terminal]
        assert covered([*chunks, terminal]) == list(range(1, 15))
        assert "".join(e.fields.get("text", "") for e in chunks) == scripted_text(12)
        assert chunks[-1].kind == "metrics"
        text = await (await client.start(model="scripted", prompt="hi", max_tokens=40)).text()
        assert text == scripted_text(40)
        messages = [{"role": "user", "content": "hello"}]
        handle = await client.start(model="scripted", messages=messages, max_tokens=3)
        assert await handle.text() == scripted_text(3)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_cancel_is_a_true_stop(server: ServerProcess, transport: str) -> None:
    async with Client(server.url, transport) as client:
        handle = await client.start(model="scripted", prompt="hi", max_tokens=5000, delay_ms=5)
        first = await anext(handle)
        assert first.kind == "token"
        await handle.cancel()
        assert handle.stream_id is not None
        assert await wait_status(client, handle.stream_id, "cancelled") == "cancelled"
        with pytest.raises(StreamCancelledError) as info:
            await handle.text()
        assert info.value.reason == "stopped" and info.value.stream_id == handle.stream_id
        assert handle.terminal is not None and handle.terminal.kind == "cancelled"
        assert handle.last_seq < 5000


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_close_leaves_and_subscribe_resumes(server: ServerProcess, transport: str) -> None:
    async with Client(server.url, transport) as client:
        handle = await client.start(model="scripted", prompt="hi", max_tokens=200, delay_ms=2)
        seen = [await anext(handle) for _ in range(10)]
        await handle.aclose()
        assert handle.state is TransportState.CLOSED
        assert [e async for e in handle] == []  # a closed handle yields nothing
        sid = handle.stream_id
        assert sid is not None
        assert (await client.status(sid))["status"] in ("running", "done")  # leave, not stop
        rest = [e async for e in client.subscribe(sid, after=handle.last_seq)]
        events = seen + rest
        assert covered(events) == list(range(1, 203))
        text = "".join(e.fields.get("text", "") for e in events)
        assert text == scripted_text(200)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_unknown_stream_raises_not_found(server: ServerProcess, transport: str) -> None:
    errors: list[Exception] = []
    async with Client(server.url, transport) as client:
        handle = client.subscribe("st_nope", on_error=errors.append)
        with pytest.raises(StreamNotFoundError) as info:
            async for _ in handle:
                pass
        assert info.value.status_code == 404 and info.value.stream_id == "st_nope"
        assert errors == [info.value]
        assert handle.state is TransportState.ERROR
        health = client.health()[transport]
        assert health["breaker"] == "closed"


async def test_bad_request_raises_from_start(server: ServerProcess) -> None:
    for transport in TRANSPORTS:
        async with Client(server.url, transport) as client:
            with pytest.raises(RequestRejectedError) as info:
                await client.start(model="no-such-model", prompt="hi")
            assert info.value.status_code in (400, 422)
    with pytest.raises(ValueError):
        await Client(server.url).start(model="scripted")


async def test_gap_is_a_typed_exception_on_every_transport(start_server: ServerFactory) -> None:
    small = start_server(TOKENWIRE_RETENTION_EVENTS="10")
    sid = await http_start(small, max_tokens=40)
    async with Client(small.url) as client:
        await client.subscribe(sid, after=40).wait()  # the stream has ended
        for transport in TRANSPORTS:
            errors: list[Exception] = []
            handle = client.subscribe(sid, after=3, transport=transport, on_error=errors.append)
            with pytest.raises(StreamGapError) as info:
                await handle.text()
            gap = info.value
            assert (gap.stream_id, gap.last_seq, gap.first_seq) == (sid, 3, 33)
            assert errors == [gap]
            assert handle.buffered_events == 0


async def test_terminal_error_event(start_server: ServerFactory) -> None:
    strict = start_server(TOKENWIRE_DEADLINE_S="0.3")
    async with Client(strict.url) as client:
        errors: list[Exception] = []
        handle = await client.start(
            model="scripted", prompt="hi", max_tokens=100, delay_ms=50, on_error=errors.append
        )
        with pytest.raises(StreamFailedError) as info:
            await handle.text()
        assert info.value.code == "deadline" and info.value.partial_text
        assert len(errors) == 1 and isinstance(errors[0], StreamFailedError)
        assert handle.terminal is not None and handle.terminal.kind == "error"


def test_sync_facade(server: ServerProcess) -> None:
    with SyncClient(server.url, "sse") as client:
        assert client.start(model="scripted", prompt="hi", max_tokens=8).text() == scripted_text(8)
        handle = client.start(model="scripted", prompt="hi", max_tokens=5)
        kinds = [event.kind for event in handle]
        assert kinds == ["token"] * 5 + ["metrics", "done"]
        assert handle.last_seq == 7 and handle.stats.tokens == 5
        assert handle.stream_id is not None
        again = client.subscribe(handle.stream_id, after=5)
        assert [e.seq for e in again] == [6, 7]
        long = client.start(model="scripted", prompt="hi", max_tokens=5000, delay_ms=5)
        next(iter(long))
        long.cancel()
        with pytest.raises(StreamCancelledError):
            long.text()
        assert client.metrics()["events"] >= 16
    with SyncClient(server.url, "ws") as ws_client:
        assert ws_client.start(model="scripted", prompt="x", max_tokens=4).text() == scripted_text(
            4
        )


async def test_ws_multiplexes_many_streams_on_one_connection(server: ServerProcess) -> None:
    async with Client(server.url, "ws") as client:
        handles = [
            await client.start(model="scripted", prompt="hi", max_tokens=50, delay_ms=1)
            for _ in range(10)
        ]
        texts = await asyncio.gather(*(h.text() for h in handles))
        assert texts == [scripted_text(50)] * 10
        metrics = client.metrics()
        assert metrics["ws_connections"] == 1 and metrics["ws_connections_open"] == 1
        assert metrics["events"] == 10 * 52 and metrics["reconnects"] == 0
        per_stream = metrics["streams"]
        assert len(per_stream) == 10
        assert all(s["tokens"] == 50 and s["ttft_ms"] is not None for s in per_stream)
        health = client.health()["ws"]
        assert health["state"] == "connected" and health["breaker"] == "closed"


async def test_http_transports_reuse_one_pool(server: ServerProcess) -> None:
    async with Client(server.url, "sse") as client:
        for _ in range(5):
            await (await client.start(model="scripted", prompt="hi", max_tokens=3)).wait()
        pool = client.manager.http._transport._pool  # type: ignore[attr-defined]
        assert len(pool.connections) <= 2  # kept alive and reused, not one per stream
        assert client.metrics()["links"] == 5


async def test_auto_prefers_websocket(server: ServerProcess) -> None:
    async with Client(server.url, "auto") as client:
        handle = await client.start(model="scripted", prompt="hi", max_tokens=3)
        assert handle.transport.kind == "ws"
        assert await handle.text() == scripted_text(3)


async def test_max_streams_limit(server: ServerProcess) -> None:
    async with Client(server.url, max_streams=2) as client:
        a = await client.start(model="scripted", prompt="hi", max_tokens=1000, delay_ms=5)
        b = await client.start(model="scripted", prompt="hi", max_tokens=1000, delay_ms=5)
        with pytest.raises(ResourceLimitError) as info:
            await client.start(model="scripted", prompt="hi")
        assert info.value.limit == "max_streams" and info.value.value == 2
        await a.aclose()
        c = client.subscribe(str(b.stream_id), after=0)  # room again
        await b.cancel()
        await c.wait()


async def test_close_all_ends_iteration(server: ServerProcess) -> None:
    client = Client(server.url, "sse")
    handle = await client.start(model="scripted", prompt="hi", max_tokens=5000, delay_ms=5)
    await anext(handle)
    await client.aclose()
    with pytest.raises(ClientClosedError):
        async for _ in handle:
            pass
    assert client.metrics()["streams_active"] == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_quiet_stream_is_kept_alive_by_heartbeats(
    server: ServerProcess, transport: str
) -> None:
    # Tokens 2.5 s apart; the server's heartbeat (1 s) keeps the 2 s silence check happy.
    async with Client(server.url, transport, heartbeat_s=1.0) as client:
        handle = await client.start(model="scripted", prompt="hi", max_tokens=1, delay_ms=2500)
        assert await handle.text() == scripted_text(1)
        assert handle.reconnects == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_buffer_stays_bounded_with_a_slow_reader(
    server: ServerProcess, transport: str
) -> None:
    """The server produces 20k events as fast as it can; the application reads slowly.
    The handle never holds more than its bound; every event still arrives once."""
    tokens = 20_000
    async with Client(
        server.url, transport, buffer_events=16, buffer_bytes=4096, ws_inbox=8
    ) as client:
        handle = await client.start(model="scripted", prompt="hi", max_tokens=tokens)
        events: list[Event] = []
        high = 0
        async for event in handle:
            events.append(event)
            high = max(high, handle.buffered_events)
            if len(events) <= 100:
                # Very slow at first, so that the buffer fills however slowly a
                # loaded machine runs the server.
                await asyncio.sleep(0.03)
            elif len(events) % 10 == 0:
                await asyncio.sleep(0.01)  # the slow application
        buf = handle.transport.buffer
        # The buffer filled up (backpressure engaged) and never went past its bound:
        # 16 events, or 4096 bytes plus the one event that may always enter.
        assert buf.high_events == 16 or buf.high_bytes >= 4096
        assert high <= 16 and buf.high_events <= 16
        largest = max(e.size for e in events)
        assert buf.high_bytes < 4096 + largest
        assert covered(events) == list(range(1, tokens + 3))
        assert "".join(e.fields.get("text", "") for e in events) == scripted_text(tokens)
        assert handle.transport.machine.reconnects == 0


async def test_ws_slow_stream_does_not_block_the_shared_connection(server: ServerProcess) -> None:
    """A slow reader's stream leaves (unsubscribe) when its inbox overflows and resumes
    after its last seq when the application catches up: the fast stream beside it on
    the same connection finishes first, and the slow one still gets every event once."""
    async with Client(server.url, "ws", buffer_events=16, ws_inbox=8) as client:
        slow = await client.start(model="scripted", prompt="hi", max_tokens=1500, delay_ms=1)
        fast = await client.start(model="scripted", prompt="hi", max_tokens=600, delay_ms=1)
        order: list[str] = []

        async def read(handle: StreamHandle, name: str, every: int) -> list[Event]:
            events = []
            async for event in handle:
                events.append(event)
                if every and len(events) % every == 0:
                    await asyncio.sleep(0.02)
            order.append(name)
            return events

        slow_events, fast_events = await asyncio.gather(
            read(slow, "slow", 4), read(fast, "fast", 0)
        )
        assert order == ["fast", "slow"]
        assert covered(slow_events) == list(range(1, 1503))
        assert covered(fast_events) == list(range(1, 603))
        assert "".join(e.fields.get("text", "") for e in slow_events) == scripted_text(1500)
        machine = slow.transport.machine
        assert machine.suspensions > 0 and machine.reconnects == 0
        assert slow.transport.buffer.high_events <= 16
        assert client.metrics()["ws_connections"] == 1


async def test_api_key_is_sent_as_bearer_on_http_and_ws() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "no"}})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    async with Client("http://test", "sse", api_key="sk-123", http=http) as client:
        with pytest.raises(StreamNotFoundError):
            await client.subscribe("st_x").wait()
    await http.aclose()
    assert seen == ["Bearer sk-123"]

    ws_seen: list[str | None] = []

    async def ws_handler(conn: ServerConnection) -> None:
        assert conn.request is not None
        ws_seen.append(conn.request.headers.get("Authorization"))
        async for message in conn:
            assert '"op":"subscribe"' in str(message)
            await conn.send('{"type":"error","stream":"st_x","code":"not_found","message":"no"}')

    async with serve(ws_handler, "127.0.0.1", 0) as ws_server:
        port = next(iter(ws_server.sockets)).getsockname()[1]
        policy = ReconnectPolicy(max_attempts=1, connect_timeout_s=5, rng=random.Random(0))
        async with Client(f"http://127.0.0.1:{port}", "ws", api_key="sk-9", reconnect=policy) as c:
            with pytest.raises(StreamNotFoundError):
                await c.subscribe("st_x").wait()
    assert ws_seen == ["Bearer sk-9"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_transport_interface(server: ServerProcess, transport: str) -> None:
    """Seed 003's interface on each transport: connect(), send(), close(), state."""
    sid = await http_start(server, max_tokens=5000, delay_ms=5)
    async with Client(server.url, transport) as client:
        manager = client.manager
        handle = client.subscribe(sid)
        t = manager.get_transport(sid)
        assert t is handle.transport and t.kind == transport
        await t.connect()
        assert t.state is TransportState.CONNECTED
        await t.send({"op": "cancel"})
        assert (await handle.wait()).kind == "cancelled"
        handle2 = client.subscribe(sid)  # an ended stream replays from retention
        await handle2.transport.connect()
        handle2.close()  # synchronous leave: the manager finishes it in the background
        assert [e async for e in handle2] == []
        await manager.close_transport(handle2.transport)
        assert handle2.state is TransportState.CLOSED
        assert manager.get_transport(sid) is None or manager.get_transport(sid) is t
        if transport == "sse":
            assert t.machine.retry_s == 2.0  # the server's `retry: 2000` sets the backoff


async def test_handle_repr_and_context_manager(server: ServerProcess) -> None:
    async with Client(server.url) as client:
        async with await client.start(model="scripted", prompt="hi", max_tokens=2) as handle:
            assert isinstance(handle, StreamHandle) and "StreamHandle" in repr(handle)
            await handle.wait()
        assert handle.state is TransportState.CLOSED
