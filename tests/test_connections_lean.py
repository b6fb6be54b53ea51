"""server/connections.py's lean idle state: asyncio events and queues whose deques
were swapped for ``Waiters`` behave as before."""

from __future__ import annotations

import asyncio
import sys
from collections import deque

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
