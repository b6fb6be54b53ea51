"""In-process broker: one list-backed log per stream, shared by every cursor.

Subscribers are cursors (an index into the shared log), never private queues:
memory is bounded by retention, not by the number of subscribers. A waiting
cursor parks one future on the log; an append wakes all parked futures at once.
"""

from __future__ import annotations

import asyncio
import secrets
import weakref
from collections.abc import Callable

from tokenwire.broker.base import LogInfo, Retention
from tokenwire.errors import StreamLaggedError, StreamNotFoundError
from tokenwire.events import OBJECT_BYTES, Event

DEFAULT_WINDOW_BYTES = 8 * 1024 * 1024


class _Account:
    """What a retained event charges its encodings to (events.Account). It holds
    its log weakly: event -> log -> events would be a reference cycle, and every
    expired log would then wait for the cyclic collector instead of going at once."""

    __slots__ = ("_log",)

    def __init__(self, log: _Log) -> None:
        self._log = weakref.ref(log)

    def charge(self, nbytes: int) -> None:
        log = self._log()
        if log is not None:
            log.charge(nbytes)


class _Log:
    __slots__ = (
        "__weakref__",
        "_ends",
        "_events",
        "_head",
        "account",
        "closed",
        "cursors",
        "deleted",
        "dropped_bytes",
        "epoch",
        "expiry",
        "first_seq",
        "idle_position",
        "last_seq",
        "retained_bytes",
        "retention",
        "stream_id",
        "total_bytes",
        "waiters",
        "window_waiter",
    )

    def __init__(self, stream_id: str, retention: Retention) -> None:
        self.stream_id = stream_id
        self.retention = retention
        self.account = _Account(self)
        self.epoch = secrets.token_hex(6)
        self._events: list[Event] = []
        self._ends: list[int] = []  # cumulative byte offset at the end of each event
        self._head = 0  # index of the oldest retained event in _events
        self.first_seq = 1
        self.last_seq = 0
        self.total_bytes = 0  # event sizes appended so far: the byte window's offsets
        self.dropped_bytes = 0  # of which trimmed out of retention
        self.retained_bytes = 0  # what the retained events hold, encodings included
        self.closed = False
        self.deleted = False
        self.idle_position = 0  # where the last reader stopped, while none is attached
        self.cursors: set[MemoryCursor] = set()
        self.waiters: list[asyncio.Future[None]] = []
        self.window_waiter: asyncio.Future[None] | None = None
        self.expiry: asyncio.TimerHandle | None = None

    def append(self, event: Event) -> int:
        self.last_seq += 1
        event.seq = self.last_seq
        size = event.size
        self.total_bytes += size
        self.retained_bytes += OBJECT_BYTES + size + event.encoded_bytes
        event.account = self.account
        self._events.append(event)
        self._ends.append(self.total_bytes)
        if event.terminal:
            self.closed = True
        self._trim()
        waiters, self.waiters = self.waiters, []
        for fut in waiters:
            _resolve(fut)
        return event.seq

    def charge(self, nbytes: int) -> None:
        """An encoding was cached on a retained event (events.Account)."""
        self.retained_bytes += nbytes
        if self.retained_bytes > self.retention.max_bytes:
            self._trim()

    def _trim(self) -> None:
        retention = self.retention
        # Keep at least the newest event: a terminal event must stay readable.
        while self.last_seq - self.first_seq + 1 > 1 and (
            self.last_seq - self.first_seq + 1 > retention.max_events
            or self.retained_bytes > retention.max_bytes
        ):
            i = self._head
            dropped = self._events[i]
            size = self._ends[i] - self.dropped_bytes  # the previous event's end
            self.retained_bytes -= OBJECT_BYTES + size + dropped.encoded_bytes
            self.dropped_bytes += size
            dropped.account = None  # what readers still encode from it is theirs
            self._events[i] = _DROPPED
            self._head += 1
            self.first_seq += 1
        if self._head > 1024 and self._head * 2 > len(self._events):
            del self._events[: self._head]
            del self._ends[: self._head]
            self._head = 0

    def slice(self, after: int, max_events: int) -> list[Event]:
        start = self._head + (after + 1 - self.first_seq)
        return self._events[start : start + max_events]

    def offset_of(self, seq: int) -> int:
        """Cumulative bytes up to and including ``seq`` (0 for seq 0)."""
        if seq < self.first_seq:
            # Older than retention: count it as read up to the oldest retained event.
            return self.dropped_bytes
        return self._ends[self._head + (seq - self.first_seq)]

    def info(self) -> LogInfo:
        return LogInfo(self.epoch, self.first_seq, self.last_seq, self.closed)


_DROPPED = Event("data", {"dropped": True})


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class MemoryCursor:
    __slots__ = ("_closed", "_log", "_on_advance", "_waiter", "position")

    def __init__(self, log: _Log, after: int, on_advance: Callable[[_Log], None]) -> None:
        self._log = log
        self.position = after
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._on_advance = on_advance
        log.cursors.add(self)

    async def read(self, max_events: int, timeout: float | None = None) -> list[Event]:
        log = self._log
        if self._closed:
            return []
        if self.position >= log.last_seq:
            if log.deleted:
                raise StreamNotFoundError(log.stream_id)
            if log.closed or self._closed:
                return []
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            log.waiters.append(fut)
            self._waiter = fut
            timer = loop.call_later(timeout, _resolve, fut) if timeout is not None else None
            try:
                await fut
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
            if self.position >= log.last_seq:
                if log.deleted:
                    raise StreamNotFoundError(log.stream_id)
                return []  # timed out, or woken
        if self.position + 1 < log.first_seq:
            raise StreamLaggedError(log.stream_id, self.position, log.first_seq)
        batch = log.slice(self.position, max_events)
        self.position = batch[-1].seq
        if log.window_waiter is not None:
            self._on_advance(log)
        return batch

    @property
    def ended(self) -> bool:
        log = self._log
        return self._closed or log.deleted or (log.closed and self.position >= log.last_seq)

    def wake(self) -> None:
        """Make a pending :meth:`read` return now (with ``[]`` if nothing is new)."""
        if self._waiter is not None:
            _resolve(self._waiter)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._log.cursors.discard(self)
            if not self._log.cursors:
                self._log.idle_position = self.position
            if self._log.window_waiter is not None:
                self._on_advance(self._log)


class MemoryBroker:
    """The default broker, for one process. Logs live until ``retention.ttl_s``
    after their terminal event (or until :meth:`delete`)."""

    def __init__(
        self,
        retention: Retention | None = None,
        *,
        window_bytes: int = DEFAULT_WINDOW_BYTES,
    ) -> None:
        self.retention = retention or Retention()
        self.window_bytes = window_bytes
        self._logs: dict[str, _Log] = {}

    def _get(self, stream_id: str) -> _Log:
        log = self._logs.get(stream_id)
        if log is None:
            raise StreamNotFoundError(stream_id)
        return log

    async def create(self, stream_id: str) -> str:
        if stream_id in self._logs:
            raise ValueError(f"stream {stream_id!r} already exists")
        log = self._logs[stream_id] = _Log(stream_id, self.retention)
        return log.epoch

    async def append(self, stream_id: str, event: Event, *, window: bool = False) -> int:
        log = self._get(stream_id)
        if log.closed:
            raise RuntimeError(f"stream {stream_id!r} already ended")
        if window:
            await self._wait_window(log)
        seq = log.append(event)
        if log.closed:
            loop = asyncio.get_running_loop()
            log.expiry = loop.call_later(self.retention.ttl_s, self._expire, stream_id)
        return seq

    def _unread_bytes(self, log: _Log) -> int:
        # With nobody reading, the window counts from where the last reader left
        # off (seq 0 before the first): a tensor dump waits for its reader instead
        # of rolling its own header out of retention.
        slowest = min((c.position for c in log.cursors), default=log.idle_position)
        return log.total_bytes - log.offset_of(min(slowest, log.last_seq))

    async def _wait_window(self, log: _Log) -> None:
        while self._unread_bytes(log) > self.window_bytes:
            if log.window_waiter is None:
                log.window_waiter = asyncio.get_running_loop().create_future()
            await log.window_waiter

    def _on_advance(self, log: _Log) -> None:
        waiter = log.window_waiter
        if waiter is not None and self._unread_bytes(log) <= self.window_bytes:
            log.window_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _expire(self, stream_id: str) -> None:
        log = self._logs.pop(stream_id, None)
        if log is not None:
            log.deleted = True
            self._wake(log)

    @staticmethod
    def _wake(log: _Log) -> None:
        waiters, log.waiters = log.waiters, []
        for fut in waiters:
            _resolve(fut)

    async def info(self, stream_id: str) -> LogInfo:
        return self._get(stream_id).info()

    async def cursor(self, stream_id: str, after: int) -> MemoryCursor:
        log = self._get(stream_id)
        return MemoryCursor(log, max(0, after), self._on_advance)

    async def delete(self, stream_id: str) -> None:
        log = self._logs.pop(stream_id, None)
        if log is not None:
            log.deleted = True
            if log.expiry is not None:
                log.expiry.cancel()
            self._wake(log)

    async def aclose(self) -> None:
        for stream_id in list(self._logs):
            await self.delete(stream_id)

    def __len__(self) -> int:
        return len(self._logs)
