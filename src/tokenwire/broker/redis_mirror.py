"""One gateway's local copy of the live Redis logs it serves, and the reader filling it.

A :class:`Mirror` holds the events of one stream that arrived since this gateway
started reading it, trimmed by the same retention rule as the log in Redis. Every
cursor of this gateway reads the same :class:`~tokenwire.events.Event` objects from
it, so an event is decoded and encoded once per gateway, whatever the number of
subscribers.

A :class:`Reader` fills up to ``MAX_STREAMS_PER_READER`` mirrors with one blocking
``XREAD`` over all their streams on a connection of its own: Redis sees one read
per batch of events per gateway, never one per subscriber. Adding a stream writes
to the reader's wake-up stream so the pending ``XREAD`` returns and is issued again
with the new key. A lost connection is retried with a backoff; each mirror goes on
from the last id it got, so a Redis restart loses nothing and repeats nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from tokenwire.broker.base import Retention
from tokenwire.broker.redis_log import decode_entry, log_key
from tokenwire.events import TENSOR_CHUNK, Event

log = logging.getLogger("tokenwire.broker")

MAX_STREAMS_PER_READER = 256
READ_COUNT = 512
BLOCK_MS = 5000
BACKOFF_S = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


def _resolve(fut: asyncio.Future[bool | None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Mirror:
    """Events ``first .. last`` of one stream as this gateway has read them."""

    __slots__ = (
        "base",
        "closed",
        "cursors",
        "deleted",
        "events",
        "first",
        "last",
        "offsets",
        "reader",
        "retention",
        "stream_id",
        "waiters",
        "windowed",
    )

    def __init__(self, stream_id: str, base: int, retention: Retention) -> None:
        self.stream_id = stream_id
        self.retention = retention
        self.base = base  # the last seq before this mirror started: older ones are in Redis
        self.first = base + 1
        self.last = base
        self.events: deque[Event] = deque()
        self.offsets: deque[int] = deque()  # byte offset at the end of each held event
        self.closed = False
        self.deleted = False
        self.windowed = False  # carries tensor chunks: report cursor positions
        self.cursors: set[Any] = set()
        self.waiters: list[asyncio.Future[bool | None]] = []  # True: timed out
        self.reader: Reader | None = None

    def push(self, event: Event, offset: int) -> bool:
        if event.seq <= self.last:
            return False  # read already, by the mirror this one replaced
        self.events.append(event)
        self.offsets.append(offset)
        self.last = event.seq
        if event.kind == TENSOR_CHUNK:
            self.windowed = True
        if event.terminal:
            self.closed = True
        self._trim()
        return True

    def push_local(self, events: list[Event], end: int) -> None:
        """Events this node's writer just had acknowledged (``end``: the byte offset
        at the end of the last): the local cursors need not wait for the reader's
        round trip. Only what continues the mirror is taken; the reader fills any
        gap and skips what is here already."""
        offsets = []
        for event in reversed(events):
            offsets.append(end)
            end -= event.size
        pushed = False
        for event, offset in zip(events, reversed(offsets), strict=True):
            if event.seq == self.last + 1 and not self.closed:
                pushed = self.push(event, offset) or pushed
        if pushed:
            self.wake_all()

    def _trim(self) -> None:
        retention = self.retention
        while len(self.events) > 1 and (
            len(self.events) > retention.max_events
            or self.offsets[-1] - (self.offsets[0] - self.events[0].size) > retention.max_bytes
        ):
            self.events.popleft()
            self.offsets.popleft()
            self.first += 1

    def wake_all(self) -> None:
        waiters, self.waiters = self.waiters, []
        for fut in waiters:
            _resolve(fut)

    def slice(self, after: int, max_events: int) -> list[Event]:
        start = after + 1 - self.first
        events = self.events
        return [events[i] for i in range(start, min(len(events), start + max_events))]


class Reader:
    """One ``XREAD BLOCK`` loop over the live streams of up to ``MAX_STREAMS_PER_READER``
    mirrors."""

    def __init__(self, client: Any, wake_key: str) -> None:
        self.client = client  # a connection of its own: XREAD blocks it
        self.wake_key = wake_key
        self.mirrors: dict[str, Mirror] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake_id = b"0-0"
        self._stopping = False
        self.connected = True

    @property
    def full(self) -> bool:
        return len(self.mirrors) >= MAX_STREAMS_PER_READER

    async def add(self, mirror: Mirror, poke: Any) -> None:
        self.mirrors[mirror.stream_id] = mirror
        mirror.reader = self
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        else:
            # The pending XREAD does not know the new key: make it return.
            await poke.xadd(self.wake_key, {"w": 1}, maxlen=16, approximate=True)

    def remove(self, mirror: Mirror) -> None:
        if self.mirrors.get(mirror.stream_id) is mirror:
            del self.mirrors[mirror.stream_id]

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            streams: dict[Any, Any] = {self.wake_key: self._wake_id}
            for sid, mirror in self.mirrors.items():
                if not mirror.closed and not mirror.deleted:
                    streams[log_key(sid)] = f"{mirror.last}-0"
            try:
                reply = await self.client.xread(streams, count=READ_COUNT, block=BLOCK_MS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._stopping:
                    return
                self.connected = False
                delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
                failures += 1
                if failures == 1:
                    log.warning("redis reader lost its connection (%s); retrying", exc)
                await asyncio.sleep(delay)
                continue
            if failures:
                log.info("redis reader reconnected after %d tries", failures)
            failures = 0
            self.connected = True
            for key, entries in reply or ():
                name = key.decode() if isinstance(key, bytes) else key
                if name == self.wake_key:
                    self._wake_id = entries[-1][0]
                    continue
                sid = name[len("tw:{") : -len("}:l")]
                target = self.mirrors.get(sid)
                if target is None:
                    continue
                pushed = False
                for entry_id, values in entries:
                    event, offset = decode_entry(entry_id, values)
                    pushed = target.push(event, offset) or pushed
                if pushed:  # a wake-up with nothing new would read as a timeout
                    target.wake_all()
            # Hand the loop to the cursors before the next read; this loop always
            # awaits the XREAD, so it cannot spin.
            await asyncio.sleep(0)

    async def aclose(self, poke: Any) -> None:
        # Cancelling a task inside redis-py's blocked XREAD does not end it promptly:
        # the loop is told to stop and the XREAD is made to return instead.
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(Exception):
                await poke.xadd(self.wake_key, {"w": 1}, maxlen=16, approximate=True)
            done, _ = await asyncio.wait({task}, timeout=2.0)
            if not done:
                await self.client.connection_pool.disconnect()
                task.cancel()
                await asyncio.wait({task}, timeout=2.0)
        with contextlib.suppress(Exception):
            await self.client.aclose()
