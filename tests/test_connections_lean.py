"""server/connections.py's lean idle state: asyncio events and queues whose deques
were swapped for ``Waiters`` behave as before."""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from typing import Any

import pytest

from tokenwire.server.connections import Waiters, lean_event, lean_queue


def test_waiters_are_smaller_than_an_empty_deque() -> None:
    assert sys.getsizeof(Waiters()) * 4 < sys.getsizeof(deque())


async def test_a_lean_event_wakes_every_waiter_and_forgets_cancelled_ones() -> None:
    event = asyncio.Event()
    lean_event(event)
    waiting = [asyncio.create_task(event.wait()) for _ in range(3)]
    cancelled = asyncio.create_task(event.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    event.set()
    assert await asyncio.gather(*waiting) == [True, True, True]
    assert cancelled.cancelled()
    event.clear()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(event.wait(), 0.01)


async def test_a_lean_queue_is_fifo_for_items_getters_and_putters() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=2)
    queue.put_nowait(1)
    lean_queue(queue)  # an item already queued is kept
    getters = [asyncio.create_task(queue.get()) for _ in range(3)]
    await asyncio.sleep(0)
    for i in (2, 3):
        queue.put_nowait(i)
    assert await asyncio.gather(*getters) == [1, 2, 3]
    queue.put_nowait(4)
    queue.put_nowait(5)
    putter = asyncio.create_task(queue.put(6))  # full: it waits its turn
    await asyncio.sleep(0)
    assert not putter.done()
    assert [await queue.get() for _ in range(3)] == [4, 5, 6]
    await putter
    stuck = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    stuck.cancel()
    await asyncio.sleep(0)
    queue.put_nowait(7)  # the cancelled getter does not swallow it
    assert queue.get_nowait() == 7
    for _ in range(7):
        queue.task_done()
    await asyncio.wait_for(queue.join(), 1)


async def test_an_accepted_websocket_keeps_no_handshake_and_no_deques() -> None:
    import uvicorn
    import websockets

    from tests.conftest import free_port
    from tokenwire.server.connections import ConnectionLimits, guarded_protocol

    seen: list[object] = []

    async def app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        if scope["type"] != "websocket":
            return
        await receive()  # type: ignore[operator]
        await send({"type": "websocket.accept"})  # type: ignore[operator]
        seen.append(send.__self__)  # type: ignore[attr-defined]
        await send({"type": "websocket.send", "text": "hi"})  # type: ignore[operator]
        while (message := await receive())["type"] == "websocket.receive":  # type: ignore[operator]
            await send({"type": "websocket.send", "text": message["text"] * 2})  # type: ignore[operator]

    port = free_port()
    config = uvicorn.Config(
        app, port=port, log_level="error", ws="websockets-sansio",
        http=guarded_protocol(ConnectionLimits()),
    )  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
            assert await ws.recv() == "hi"
            proto: Any = seen[0]
            assert proto.request is None and proto.response is None
            # The frame parser that replaced the handshake's still parses frames.
            for text in ("a", "b" * 200, "c" * 70_000):
                await ws.send(text)
                assert await ws.recv() == text * 2
            assert "request" not in proto.conn.parser.gi_frame.f_locals
            assert type(proto.queue._getters) is Waiters
            assert type(proto.queue._finished._waiters) is Waiters
            assert type(proto.writable._waiters) is Waiters
    finally:
        server.should_exit = True
        await task
