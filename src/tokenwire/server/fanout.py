"""A batch read from a stream's log, encoded once for every subscriber that reads it.

Subscribers woken by the same append read the same range of the shared log,
one after another, so the encoding of the last range read from each stream is
kept and reused: a catch-up merge and the framing run once per range, not once
per subscriber (the SSE endpoint does the same). The same first and last event
objects of an append-only log mean the same range.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from tokenwire.events import Event, coalesce
from tokenwire.stream import Subscription

log = logging.getLogger("tokenwire")

T = TypeVar("T")


class SharedBatches(Generic[T]):
    """``encode(stream_id, frames)`` of a batch, cached per stream for the last range.

    ``frames`` is the batch coalesced when it is longer than ``merge_after``.
    At most ``streams`` entries are kept (the oldest goes first)."""

    def __init__(
        self,
        encode: Callable[[str, list[Event]], T],
        merge_after: int,
        streams: int = 256,
    ) -> None:
        self._encode = encode
        self.merge_after = merge_after
        self._streams = streams
        self._last: dict[str, tuple[Event, Event, T]] = {}

    def __call__(self, stream_id: str, batch: list[Event]) -> T:
        hit = self._last.get(stream_id)
        if hit is not None and hit[0] is batch[0] and hit[1] is batch[-1]:
            return hit[2]
        frames = coalesce(batch) if len(batch) > self.merge_after else batch
        value = self._encode(stream_id, frames)
        if hit is None and len(self._last) >= self._streams:
            del self._last[next(iter(self._last))]
        self._last[stream_id] = (batch[0], batch[-1], value)
        return value


class Reader:
    """One stream a connection (WebSocket, Socket.IO) is subscribed to: the
    subscription and the task that reads it, owned by the connection.

    The reader, not its task, owns closing the subscription: it is a done callback
    of the task, so it runs however the task ends, also when the task is cancelled
    before its first step (when a ``finally`` in the task body never runs)."""

    __slots__ = ("_on_done", "stopped", "sub", "task")

    def __init__(
        self,
        sub: Subscription,
        run: Callable[[Reader], Coroutine[Any, Any, None]],
        on_done: Callable[[Reader], None],
        name: str,
    ) -> None:
        self.sub = sub
        self.stopped = False
        self._on_done = on_done
        self.task = asyncio.get_running_loop().create_task(run(self), name=name)
        self.task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.sub.close()
        self._on_done(self)
        if not task.cancelled() and task.exception() is not None:
            log.error("reader of %s failed", self.sub.stream_id, exc_info=task.exception())

    def stop(self) -> None:
        # The flag and the wake end the loop even where a cancellation is swallowed
        # (asyncio.wait_for on 3.11); the cancel ends a send blocked on a full buffer.
        self.stopped = True
        self.sub.wake()
        self.task.cancel()

    async def aclose(self) -> None:
        """Stop, and return once the task has ended and the subscription is closed."""
        self.stop()
        await asyncio.gather(self.task, return_exceptions=True)
        self.sub.close()
