"""The appends of one node to one Redis log: claimed in call order, sent in batches.

A :class:`LogWriter` claims each event's seq as it is appended and queues it; one
task sends the queue to Redis as batches (one ``EVALSHA`` of redis_log.APPEND per
batch, up to ``BATCH_EVENTS``), one batch in flight at a time, so a producer never
waits for a round trip per event and a batch grows with the round trip. Each batch
names the seq of its first entry, so a batch resent after a lost reply (a Redis
restart) stores nothing twice.

Bounds: at most ``MAX_PENDING_EVENTS`` events or ``MAX_PENDING_BYTES`` payload bytes
wait per log; an append past either waits for room (a slow Redis slows the producer
down instead of growing memory). A terminal event and a byte-window append wait until
Redis has them, so a stream's end is acknowledged and the window throttles exactly as
before. A failure (the log gone or closed by another node, Redis unreachable past
the retry time) is raised to the next append, and the writer goes on from the last seq
Redis acknowledged: a producer that publishes its error event after it lands right
after what was stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from tokenwire.broker.redis_log import BrokerUnavailable, entry_fields, keys_of
from tokenwire.errors import StreamNotFound
from tokenwire.events import Event

MAX_PENDING_EVENTS = 256
MAX_PENDING_BYTES = 1024 * 1024
BATCH_EVENTS = 64
BATCH_BYTES = 256 * 1024


class LogWriter:
    __slots__ = (
        "_acked",
        "_errors",
        "_failure",
        "_on_acked",
        "_pending",
        "_pending_bytes",
        "_room",
        "_send",
        "_settings",
        "_stalled",
        "_task",
        "_waiters",
        "next_seq",
        "retry_s",
        "stream_id",
    )

    def __init__(
        self,
        stream_id: str,
        next_seq: int,
        send: Callable[[list[str], list[Any]], Awaitable[Any]],
        settings: Callable[[], list[Any]],
        *,
        retry_s: float,
        errors: tuple[type[BaseException], ...],
        on_acked: Callable[[str, list[Event], int], None] | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.next_seq = next_seq
        self.retry_s = retry_s
        self._send = send  # the APPEND script: keys, args -> {last, how}
        self._settings = settings  # retention, window and TTL arguments
        self._errors = errors
        self._on_acked = on_acked  # events Redis now holds (seq order), the last's offset
        self._pending: deque[tuple[Event, list[Any]]] = deque()  # claimed, not in Redis yet
        self._pending_bytes = 0
        self._acked = next_seq - 1
        self._failure: BaseException | None = None  # for the next append to hear
        # until acked >= seq; a loud one hears a failure
        self._waiters: list[tuple[int, asyncio.Future[None], bool]] = []
        self._room: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None
        self._stalled = False  # the byte window holds the next entry back

    @property
    def idle(self) -> bool:
        return not self._pending

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def append(self, event: Event, window: bool) -> int:
        while self._full():
            fut = asyncio.get_running_loop().create_future()
            self._room.append(fut)
            await fut
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure
        seq = event.seq = self.next_seq
        self.next_seq += 1
        self._pending.append((event, entry_fields(event, windowed=window)))
        self._pending_bytes += event.size
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush())
        if event.terminal or window:
            await self._until(seq)
        return seq

    async def settled(self) -> None:
        """Wait until every append claimed so far has landed or failed (read your
        own writes: ``info`` and new cursors see what this node appended). Not
        while the byte window holds the writer back: only a reader can release it,
        and a reader opening waits for this."""
        if not self._stalled:
            await self._until(self.next_seq - 1, loud=False)

    async def _until(self, seq: int, *, loud: bool = True) -> None:
        if self._acked >= seq:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, fut, loud))
        await fut

    def _full(self) -> bool:
        return bool(self._pending) and (
            len(self._pending) >= MAX_PENDING_EVENTS or self._pending_bytes >= MAX_PENDING_BYTES
        )

    async def _flush(self) -> None:
        delay = 0.002
        try:
            while self._pending:
                last, how, end = await self._send_batch(self._batch())
                self._settle(last, end)
                if how == 0:  # the byte window is full: the rest waits for readers
                    self._stall()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.02)
                    continue
                self._stalled = False
                delay = 0.002
                if how == -1:
                    self._fail(StreamNotFound(self.stream_id))
                elif how == -2:
                    self._fail(RuntimeError(f"stream {self.stream_id!r} already ended"))
                elif how == 3:  # Redis lost what it acknowledged (no AOF?)
                    self._fail(RuntimeError(f"the log of {self.stream_id!r} lost events"))
        except asyncio.CancelledError:
            self._fail(RuntimeError(f"the writer of {self.stream_id!r} was closed"))
            raise
        except Exception as exc:  # handed to the producer
            self._fail(exc)
        finally:
            self._task = None
            self._stalled = False

    def _batch(self) -> list[Any]:
        args: list[Any] = [self._pending[0][0].seq, *self._settings()]
        nbytes = 0
        for n, (event, fields) in enumerate(self._pending):
            if n == BATCH_EVENTS or (n and nbytes + event.size > BATCH_BYTES):
                break
            args += fields
            nbytes += event.size
        return args

    async def _send_batch(self, args: list[Any]) -> tuple[int, int, int]:
        keys = keys_of(self.stream_id)
        delay = 0.05
        deadline = time.monotonic() + self.retry_s
        while True:
            try:
                reply = await self._send(keys, args)
                return int(reply[0]), int(reply[1]), int(reply[2]) if len(reply) > 2 else -1
            except self._errors as exc:
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(str(exc) or type(exc).__name__) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _settle(self, last: int, end: int) -> None:
        """Redis holds everything up to ``last``: those events are no longer pending."""
        pending = self._pending
        landed = []
        while pending and pending[0][0].seq <= last:
            event, _ = pending.popleft()
            self._pending_bytes -= event.size
            landed.append(event)
        if landed and landed[-1].seq == last and end >= 0 and self._on_acked is not None:
            self._on_acked(self.stream_id, landed, end)
        self._acked = max(self._acked, min(last, self.next_seq - 1))
        if self._waiters:
            keep = []
            for waiter in self._waiters:
                if self._acked >= waiter[0]:
                    if not waiter[1].done():
                        waiter[1].set_result(None)
                else:
                    keep.append(waiter)
            self._waiters = keep
        self._make_room()

    def _stall(self) -> None:
        self._stalled = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if waiter[2]:
                self._waiters.append(waiter)
            elif not waiter[1].done():
                waiter[1].set_result(None)

    def _fail(self, exc: BaseException) -> None:
        """Drop what Redis did not take. Whoever waits for a dropped event hears
        ``exc``, or else the next append does; that one claims the seq after the
        last acknowledged one."""
        self._pending.clear()
        self._pending_bytes = 0
        self.next_seq = self._acked + 1
        waiters, self._waiters = self._waiters, []
        heard = False
        for _target, fut, loud in waiters:
            if fut.done():
                continue
            if loud:
                fut.set_exception(exc)
                heard = True
            else:
                fut.set_result(None)
        if not heard:
            self._failure = exc
        self._make_room()

    def _make_room(self) -> None:
        if self._room and not self._full():
            room, self._room = self._room, []
            for fut in room:
                if not fut.done():
                    fut.set_result(None)

    async def aclose(self, timeout: float) -> None:
        """Give pending appends ``timeout`` to land, then stop."""
        task = self._task
        if task is None:
            return
        await asyncio.wait({task}, timeout=timeout)
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
