"""The one async driver: reads a subscription, feeds its :class:`Delivery`, writes.

Every server transport runs its subscriptions through :func:`drive`. The loop
cannot go round without awaiting: each turn awaits a read of the cursor, and a
read that could only answer at once with nothing marks the subscription
finished, which ends the loop (docs/protocol.md, "Delivery").

Heartbeats come from one lazily re-armed timer per connection
(:class:`HeartbeatTimer`), not a timeout on every read: a read per write is the
hot path of fan-out, and a timer armed and cancelled per read cost about a
third of its CPU.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from tokenwire.core.delivery import Delivery, Heartbeat, Write
from tokenwire.errors import StreamLagged, StreamNotFound
from tokenwire.events import Event
from tokenwire.metrics import Metrics

log = logging.getLogger("tokenwire")

SHUTDOWN = "server_shutdown"


class Source(Protocol):
    """What the driver reads: a :class:`~tokenwire.stream.Subscription`, or any
    reader with the same contract (``event_stream_response`` reads its source so)."""

    stream_id: str

    async def read(self, max_events: int = ..., timeout: float | None = ...) -> list[Event]: ...

    def wake(self) -> None: ...

    @property
    def finished(self) -> bool: ...


class Stop:
    """Why a driver should stop: the peer left (``stopped``), or the server is
    shutting down (``shutdown``, which writes the end frame first)."""

    __slots__ = ("_source", "shutdown", "stopped")

    def __init__(self, source: Source) -> None:
        self._source = source
        self.stopped = False
        self.shutdown = False

    def stop(self) -> None:
        self.stopped = True
        self._source.wake()

    def shut_down(self) -> None:
        self.shutdown = True
        self._source.wake()


class HeartbeatTimer:
    """One timer per connection that re-arms itself lazily and wakes a reader when
    the connection has been silent for the heartbeat interval."""

    __slots__ = ("_handle", "_heartbeat", "_loop", "_wake")

    def __init__(self, heartbeat: Heartbeat, wake: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._heartbeat = heartbeat
        self._wake = wake
        self._handle = self._loop.call_at(heartbeat.next_at, self._fire)

    def _fire(self) -> None:
        hb = self._heartbeat
        now = self._loop.time()
        if hb.check(now):
            self._wake()
            due = now + hb.interval
        else:
            due = hb.next_at
        self._handle = self._loop.call_at(due, self._fire)

    def cancel(self) -> None:
        self._handle.cancel()


Write_ = Callable[[Any], Awaitable[None]]


async def drive(
    source: Source,
    delivery: Delivery[Any],
    write: Write_,
    stop: Stop,
    metrics: Metrics | None,
    max_batch_events: int,
    ready: Callable[[], Awaitable[None]] | None = None,
    *,
    follow: Callable[[], asyncio.Future[None] | None] | None = None,
    coalesce_s: float = 0.0,
) -> None:
    """Deliver ``source`` until it ends, the peer leaves or the server shuts down.

    ``write`` makes one socket write; ``ready``, when given, is awaited before each
    read (Socket.IO waits there for room in its bounded send queue). ``follow``,
    when given, parks the subscription in a broadcast while it is at the head of
    its stream (core/broadcast.py): the future it returns resolves when the
    broadcast hands it back, and the driver then reads at least once itself.
    ``coalesce_s``: at most one write of events per that many seconds; what arrives
    meanwhile goes in the next write (docs/protocol.md, "Coalescing")."""
    loop = asyncio.get_running_loop()
    heartbeat = delivery.heartbeat
    transport = delivery.encoder.transport
    inc = metrics.inc if metrics is not None else _no_count
    writes: list[Write]
    may_park = True
    # A source finished when it opened (at the end of an ended stream) is never read.
    while not (delivery.finished or source.finished or stop.stopped or stop.shutdown):
        if heartbeat.due:
            await _write(delivery.tick(loop.time()), write, inc, transport)
        if ready is not None:
            await ready()
        if follow is not None and may_park:
            parked = follow()
            if parked is not None:
                await parked
                may_park = False
                continue
        may_park = True
        if coalesce_s:
            wait = delivery.last_write + coalesce_s - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue  # the loop's checks again: stopped, shut down, heartbeat
        try:
            batch = await source.read(max_batch_events)
        except (StreamLagged, StreamNotFound) as exc:
            # The lag policy (docs/protocol.md): the client resumes after its last
            # seq and gets open {recovered: false}.
            writes = delivery.fail(exc.code, exc.message)
        else:
            if stop.stopped:
                return
            writes = delivery.receive(batch, loop.time(), ended=source.finished)
        for out, events, nbytes in writes:  # _write, inlined: the hot path
            if out:
                await write(out)
            if events:
                inc("tokenwire_events_delivered_total", events, transport)
            inc("tokenwire_bytes_delivered_total", nbytes, transport)
    if stop.shutdown and not stop.stopped:
        await _write(delivery.fail(SHUTDOWN, "the server is shutting down"), write, inc, transport)


def _no_count(name: str, value: float, *labels: str) -> None:
    return None


async def _write(
    writes: list[Write], write: Write_, inc: Callable[..., None], transport: str
) -> None:
    for out, events, nbytes in writes:
        if out:
            await write(out)
        if events:
            inc("tokenwire_events_delivered_total", events, transport)
        inc("tokenwire_bytes_delivered_total", nbytes, transport)


class Reader:
    """One subscription of a multiplexed connection (WebSocket, Socket.IO): its
    stop flag and the task that drives it, owned by the connection.

    The reader, not its task, owns closing the subscription: it is a done callback
    of the task, so it runs however the task ends, also when the task is cancelled
    before its first step (when a ``finally`` in the task body never runs)."""

    __slots__ = ("_on_done", "delivery", "stop_flag", "sub", "task")

    def __init__(
        self,
        sub: Any,
        delivery: Delivery[Any],
        run: Callable[[Reader], Coroutine[Any, Any, None]],
        on_done: Callable[[Reader], None],
        name: str,
    ) -> None:
        self.sub = sub
        self.delivery = delivery
        self.stop_flag = Stop(sub)
        self._on_done = on_done
        self.task = asyncio.get_running_loop().create_task(run(self), name=name)
        self.task.add_done_callback(self._done)

    @property
    def stopped(self) -> bool:
        return self.stop_flag.stopped

    def _done(self, task: asyncio.Task[None]) -> None:
        self.sub.close()
        self._on_done(self)
        if not task.cancelled() and task.exception() is not None:
            log.error("reader of %s failed", self.sub.stream_id, exc_info=task.exception())

    def stop(self) -> None:
        # The flag and the wake end the loop even where a cancellation is swallowed;
        # the cancel ends a send blocked on a full buffer.
        self.stop_flag.stop()
        self.task.cancel()

    async def aclose(self) -> None:
        """Stop, and return once the task has ended and the subscription is closed."""
        self.stop()
        await asyncio.gather(self.task, return_exceptions=True)
        self.sub.close()
