"""Hub and Stream: lifecycle, sequencing, cancellation, grace and watchdog.

A :class:`Hub` runs producers as streams. Each stream's events go through the
broker's log; subscribers read the log through cursors. The rules (design.md §2):

- a stream always ends with exactly one terminal event (``done``, ``error`` or
  ``cancelled``), stored in the log like any other;
- a watchdog turns a producer that raises, stalls past ``idle_timeout_s`` or
  runs past ``deadline_s`` into ``error``;
- stop is not leave: :meth:`Hub.cancel` stops at once; when the last subscriber
  leaves, the stream keeps running for ``grace_s`` and is cancelled only if
  nobody returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from tokenwire.broker import Broker, Cursor, MemoryBroker, Retention
from tokenwire.errors import LimitExceededError, StreamNotFoundError
from tokenwire.events import TENSOR_CHUNK, Event, open_frame, to_event
from tokenwire.metrics import Metrics
from tokenwire.tensors import is_tensor, tensor_to_frames, tensors_to_frame_stream

log = logging.getLogger("tokenwire")


def log_event(name: str, **fields: Any) -> None:
    """A structured lifecycle line: ``event=<name> key=value …``."""
    if log.isEnabledFor(logging.INFO):
        parts = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        log.info("event=%s %s", name, parts)


class Control(Protocol):
    """Stops and viewer presence across the nodes of a shared broker (its ``control``
    attribute; tokenwire.broker.redis_control): what the hub asks of it."""

    def watch(self, stream: Stream) -> None:
        """Stop ``stream`` (run by this hub) when any node asks, until its task ends."""

    def viewing(self, stream_id: str, count: int) -> None:
        """This hub has ``count`` viewers of ``stream_id``, which another node runs."""

    def confirm_idle(self, stream: Stream) -> None:
        """The grace ran out with no viewer here: :meth:`Hub._idle_stop` unless other
        nodes have viewers (then :meth:`Hub._viewers_elsewhere`)."""

    async def stop(self, stream_id: str, reason: str) -> dict[str, Any] | None:
        """Stop a stream another node runs; its state once ended, None if unknown."""


class StreamStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    ERROR = "error"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        return self in (StreamStatus.DONE, StreamStatus.ERROR, StreamStatus.CANCELLED)


@dataclass(frozen=True, slots=True)
class HubConfig:
    grace_s: float = 10.0
    """How long a stream with no subscribers keeps running (also before the first one)."""
    idle_timeout_s: float = 120.0
    """Watchdog: the longest a producer may go without emitting."""
    deadline_s: float = 3600.0
    """Watchdog: the longest a stream may run."""
    max_streams: int = 1000
    """Streams that may run at once."""
    max_subscribers_per_stream: int = 10_000
    max_subscribers: int = 100_000
    max_ended_streams: int = 10_000
    """Ended streams kept for late resumers (each for ``retention.ttl_s``); past this
    many, the oldest is forgotten early, so memory stays bounded under churn."""
    retention: Retention = field(default_factory=Retention)
    window_bytes: int = 8 * 1024 * 1024
    """Byte window for tensor chunks: publish waits while the slowest subscriber is
    further behind than this."""


UNREAD_S = 30.0
"""How long a stream another node runs stays known here without a reader."""

Producer = AsyncIterable[Any] | Callable[["Emitter"], Awaitable[Any] | AsyncIterable[Any]]


def new_stream_id() -> str:
    """``st_`` and 128 random bits, URL-safe."""
    return "st_" + secrets.token_urlsafe(16)


class Stream:
    """One run of a producer: its id, status, timings and subscribers."""

    def __init__(self, hub: Hub, stream_id: str, model: str | None, meta: Mapping[str, Any]):
        self.hub = hub
        self.id = stream_id
        self.model = model
        self.meta = dict(meta)
        self.status = StreamStatus.PENDING
        self.epoch = ""
        self.created_at = time.time()
        self.started_at: float | None = None
        self.first_event_at: float | None = None
        self.ended_at: float | None = None
        self.last_seq = 0
        self.subscribers = 0
        self.ever_subscribed = False
        self.cancelled = threading.Event()
        """Set when the stream is stopped; producers running in a thread can poll it."""
        self.terminal: Event | None = None
        self.remote = False
        """Started by another node (Redis broker): read here, run there."""
        self._last_activity = time.monotonic()
        self._stop_reason: Event | None = None  # the terminal event a stop will publish
        self._task: asyncio.Task[None] | None = None
        self._grace: asyncio.TimerHandle | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._ended = asyncio.Event()

    async def wait(self) -> Event:
        """Wait until the stream has ended; return its terminal event."""
        await self._ended.wait()
        assert self.terminal is not None
        return self.terminal

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": str(self.status),
            "model": self.model,
            "epoch": self.epoch,
            "last_seq": self.last_seq,
            "subscribers": self.subscribers,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "first_event_at": self.first_event_at,
            "ended_at": self.ended_at,
        }


class Emitter:
    """Handed to callback-style producers: ``await emit(token_or_event)``."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self.cancelled = stream.cancelled
        self._loop = asyncio.get_running_loop()

    @property
    def stream_id(self) -> str:
        return self._stream.id

    async def __call__(self, item: Any) -> int:
        """Publish ``item`` (see :func:`~tokenwire.events.to_event`; an array is
        framed as its tensor events); the seq of the last event published."""
        if is_tensor(item):
            seq = 0
            for event in tensor_to_frames(item):
                seq = await self._stream.hub._publish(self._stream, event)
            return seq
        return await self._stream.hub._publish(self._stream, to_event(item))

    def from_thread(self, item: Any, timeout: float | None = None) -> int:
        """Publish from a worker thread (blocks that thread, never the loop)."""
        fut = asyncio.run_coroutine_threadsafe(self(item), self._loop)
        return fut.result(timeout)


class Subscription:
    """One reader of a stream. Use as an async iterator of events (it ends after the
    terminal event), or call :meth:`open`, :meth:`read` and :meth:`close` directly."""

    def __init__(self, hub: Hub, stream_id: str, after: int, transport: str) -> None:
        self.hub = hub
        self.stream_id = stream_id
        self.after = after
        self.transport = transport
        self.open_frame: dict[str, Any] | None = None
        self._stream: Stream | None = None
        self._cursor: Cursor | None = None
        self._finished = False
        self._closed = False
        self._parked: asyncio.Future[None] | None = None

    @property
    def position(self) -> int:
        return self._cursor.position if self._cursor is not None else self.after

    @property
    def cursor(self) -> Cursor:
        """The open subscription's cursor. A broadcast writing for it (core/broadcast.py)
        moves its ``position`` on, a plain attribute on every broker's cursor."""
        assert self._cursor is not None
        return self._cursor

    def park(self, fut: asyncio.Future[None]) -> None:
        """While a broadcast writes for this subscription, :meth:`wake` resolves
        ``fut`` (the parked driver's) instead of a pending read."""
        self._parked = fut

    def unpark(self) -> None:
        self._parked = None

    async def open(self) -> dict[str, Any]:
        """Attach to the stream; return the ``open`` frame."""
        hub = self.hub
        stream = await hub.resolve(self.stream_id)
        if stream.subscribers >= hub.config.max_subscribers_per_stream:
            raise LimitExceededError("too_many_subscribers", "this stream has too many subscribers")
        if hub.subscriber_count >= hub.config.max_subscribers:
            raise LimitExceededError("too_many_subscribers", "the server has too many subscribers")
        info = await hub.broker.info(self.stream_id)
        after = self.after
        # Recovered means every event after `after` is still retained.
        recovered = info.first_seq <= after + 1 <= info.last_seq + 1
        if not recovered:
            after = max(info.first_seq - 1, min(after, info.last_seq))
        cursor = await hub.broker.cursor(self.stream_id, after)
        if self._closed:  # closed while the broker answered: nothing to attach
            cursor.close()
            raise RuntimeError("the subscription was closed while it opened")
        self._cursor = cursor
        self._stream = stream
        hub._attach(stream, self.transport)
        # Opened at or past the end of an ended stream: nothing will ever come, and
        # the cursor would answer every read at once. Finished now, so no delivery
        # loop goes round on it.
        if info.closed and after >= info.last_seq:
            self._finished = True
        self.open_frame = open_frame(
            self.stream_id,
            info.epoch,
            recovered=recovered,
            first_seq=info.first_seq,
            last_seq=info.last_seq,
            status=str(stream.status),
        )
        log_event(
            "subscribe",
            stream=self.stream_id,
            transport=self.transport,
            after=self.after,
            recovered=recovered,
        )
        return self.open_frame

    async def read(self, max_events: int = 256, timeout: float | None = None) -> list[Event]:
        """The next batch: ``[]`` when a wait timed out or was woken (:meth:`wake`).

        Once :attr:`finished` is true (the terminal event was read, the stream had
        ended when this subscription opened at its end, or the subscription was
        closed), a read raises :class:`RuntimeError` rather than answer ``[]`` at
        once: a loop that forgot to check :attr:`finished` fails loudly instead of
        spinning without awaiting and freezing the event loop."""
        if self._finished:
            raise RuntimeError(f"read past the end of subscription to {self.stream_id}")
        if self._cursor is None:
            await self.open()
            if self._finished:  # opened at the end of an ended stream
                return []
        assert self._cursor is not None
        batch = await self._cursor.read(max_events, timeout)
        if batch:
            if batch[-1].terminal:
                self._finished = True
                stream = self._stream
                if stream is not None and stream.remote and stream.terminal is None:
                    stream.terminal = batch[-1]
                    stream.status = StreamStatus(batch[-1].kind)
                    stream.last_seq = batch[-1].seq
        elif self._cursor.ended:
            # The cursor answered without waiting and never will again.
            self._finished = True
        return batch

    def wake(self) -> None:
        """Make a pending :meth:`read` return ``[]`` now (e.g. the client went away),
        or hand a parked subscription back to its driver."""
        parked = self._parked
        if parked is not None and not parked.done():
            parked.set_result(None)
        if self._cursor is not None:
            self._cursor.wake()

    @property
    def finished(self) -> bool:
        """True once nothing more will come: the terminal event has been read, or the
        subscription opened at the end of an ended stream, or it was closed."""
        return self._finished

    def close(self) -> None:
        """Detach (idempotent). Whoever opened the subscription owns this call."""
        if self._closed:
            return
        self._closed = True
        self._finished = True
        parked = self._parked
        if parked is not None and not parked.done():
            parked.set_result(None)
        if self._cursor is not None:
            self._cursor.close()
        if self._stream is not None:
            self.hub._detach(self._stream, self.transport)
            log_event("unsubscribe", stream=self.stream_id, transport=self.transport)

    async def __aenter__(self) -> Subscription:
        if self._cursor is None:
            await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        try:
            while not self._finished:
                for event in await self.read():
                    yield event
        finally:
            self.close()


class Hub:
    """Runs producers as streams and hands out subscriptions.

    >>> hub = Hub()
    >>> stream = await hub.start(producer)            # doctest: +SKIP
    >>> async for event in hub.subscribe(stream.id):  # doctest: +SKIP
    ...     print(event)
    """

    def __init__(
        self,
        broker: Broker | None = None,
        config: HubConfig | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config or HubConfig()
        self.broker: Broker = broker or MemoryBroker(
            self.config.retention, window_bytes=self.config.window_bytes
        )
        self.metrics = metrics or Metrics()
        self.streams: dict[str, Stream] = {}
        self._ended: dict[str, asyncio.TimerHandle] = {}  # ended streams, oldest first
        self._background: set[asyncio.Task[None]] = set()
        self.subscriber_count = 0
        self._closing = False
        m = self.metrics
        m.gauge_fn("tokenwire_streams_active", self.active_count, "streams running now")
        m.describe("tokenwire_streams_started_total", "streams started")
        m.describe("tokenwire_events_published_total", "events appended to stream logs")
        m.describe("tokenwire_bytes_published_total", "payload bytes appended to stream logs")
        m.describe("tokenwire_subscribers", "subscribers attached now, per transport")
        self._ttfe = m.histogram(
            "tokenwire_time_to_first_event_seconds", "stream start to its first event"
        )

    def active_count(self) -> float:
        return sum(1 for s in self.streams.values() if not s.status.ended and not s.remote)

    async def resolve(self, stream_id: str) -> Stream:
        """:meth:`get`, or, over a shared broker, a stream another node started (known
        here while someone reads it)."""
        stream = await self._lookup(stream_id)
        if stream.remote and stream_id not in self.streams:
            self.streams[stream_id] = stream
            # Forgotten when its last reader leaves (_detach), or soon if none attaches
            # (the open failed: a limit, Redis away), so a failed open leaks nothing.
            asyncio.get_running_loop().call_later(UNREAD_S, self._drop_unread, stream)
        return self.streams[stream_id]

    def _drop_unread(self, stream: Stream) -> None:
        if stream.subscribers == 0 and self.streams.get(stream.id) is stream:
            del self.streams[stream.id]

    async def _lookup(self, stream_id: str) -> Stream:
        """The stream known here, or one another node runs as the shared broker describes
        it: a new :class:`Stream`, not registered (a stop must not leave behind a stream
        nobody reads)."""
        stream = self.streams.get(stream_id)
        if stream is not None:
            return stream
        describe = getattr(self.broker, "describe", None)
        found = await describe(stream_id) if describe is not None else None
        stream = self.streams.get(stream_id)
        if stream is not None:  # known while Redis answered
            return stream
        if found is None:
            raise StreamNotFoundError(stream_id)
        stream = Stream(self, stream_id, found.get("model") or None, {})
        stream.remote = True
        stream.epoch = found["epoch"]
        self._update_remote(stream, found)
        return stream

    @staticmethod
    def _update_remote(stream: Stream, found: Mapping[str, Any]) -> None:
        stream.last_seq = max(stream.last_seq, found["last_seq"])
        status = found.get("status", "")
        if found["closed"] and status in ("done", "error", "cancelled"):
            stream.status = StreamStatus(status)
        elif not stream.status.ended:
            stream.status = StreamStatus.RUNNING

    def _control(self) -> Control | None:
        control: Control | None = getattr(self.broker, "control", None)
        return control

    def get(self, stream_id: str) -> Stream:
        stream = self.streams.get(stream_id)
        if stream is None:
            raise StreamNotFoundError(stream_id)
        return stream

    async def start(
        self,
        producer: Producer,
        *,
        model: str | None = None,
        stream_id: str | None = None,
        meta: Mapping[str, Any] | None = None,
        adopt: bool = False,
    ) -> Stream:
        """Start running ``producer`` as a new stream and return it at once. With
        ``adopt``, its log already exists in a shared broker (a job another node queued)
        and this hub becomes its writer."""
        if self._closing:
            raise RuntimeError("the hub is closed")
        if self.active_count() >= self.config.max_streams:
            raise LimitExceededError("too_many_streams", "the server runs too many streams")
        sid = stream_id or new_stream_id()
        stream = self.streams.get(sid)
        if stream is not None and not (adopt and stream.remote and stream.terminal is None):
            raise ValueError(f"stream {sid!r} already exists")
        if stream is None:
            stream = Stream(self, sid, model, meta or {})
        else:  # read here before this hub took its job: its viewers stay attached
            stream.remote, stream.model = False, model
        if adopt:
            stream.epoch = (await self.broker.adopt(sid)).epoch  # type: ignore[attr-defined]
        else:
            stream.epoch = await self.broker.create(sid)
        stream.status = StreamStatus.RUNNING
        self.streams[sid] = stream
        loop = asyncio.get_running_loop()
        stream._task = loop.create_task(self._run(stream, producer), name=f"tokenwire:{sid}")
        stream._task.add_done_callback(lambda _: self._finish(stream))
        if (control := self._control()) is not None:
            control.watch(stream)  # a stop through any node reaches it
        self._arm_watchdog(stream)
        # Nobody watching yet: the same grace as after the last one leaves.
        self._arm_grace(stream)
        self.metrics.inc("tokenwire_streams_started_total")
        log_event("open", stream=sid, transport="producer", model=model)
        return stream

    def subscribe(
        self, stream_id: str, after: int = 0, *, transport: str = "python"
    ) -> Subscription:
        """A subscription to ``stream_id`` for everything after seq ``after``."""
        if after < 0:
            raise ValueError("after must be >= 0")
        return Subscription(self, stream_id, after, transport)

    async def cancel(self, stream_id: str, reason: str = "stopped") -> Stream:
        """Stop a stream at once: the producer is cancelled and the terminal event is
        ``cancelled {reason}``. Stopping an ended stream changes nothing. Over a shared
        broker, a stream another node runs is stopped there (its control plane); this
        returns once its terminal event is in the log."""
        stream = await self._lookup(stream_id)
        if stream.remote:
            control = self._control()
            found = await control.stop(stream_id, reason) if control is not None else None
            if found is None:
                raise StreamNotFoundError(stream_id)
            self._update_remote(stream, found)
            return stream
        self._stop(stream, Event.cancelled(reason))
        await stream._ended.wait()
        return stream

    async def aclose(self) -> None:
        """Stop every stream and close the broker."""
        self._closing = True
        for stream in list(self.streams.values()):
            self._stop(stream, Event.cancelled("shutdown"))
        for stream in list(self.streams.values()):
            if stream._task is not None:
                with contextlib.suppress(BaseException):
                    await stream._task
        await self.broker.aclose()

    # -- internals ---------------------------------------------------------------

    def _stop(self, stream: Stream, terminal: Event) -> None:
        if stream.status.ended or stream._stop_reason is not None:
            return
        stream._stop_reason = terminal
        stream.cancelled.set()
        # A task cancelled before its first step never runs a line of `_run`, so the
        # terminal event would never be published: one that has not started yet
        # finds the stop reason itself when it does.
        if stream._task is not None and stream.started_at is not None:
            stream._task.cancel()

    async def _publish(self, stream: Stream, event: Event) -> int:
        if stream.terminal is not None:
            raise RuntimeError(f"stream {stream.id} already ended")
        seq = await self.broker.append(stream.id, event, window=event.kind == TENSOR_CHUNK)
        stream.last_seq = seq
        stream._last_activity = time.monotonic()
        if stream.first_event_at is None:
            stream.first_event_at = time.time()
            self._ttfe.observe(stream.first_event_at - stream.created_at)
        m = self.metrics
        m.inc("tokenwire_events_published_total")
        m.inc("tokenwire_bytes_published_total", event.size)
        if event.terminal:
            stream.terminal = event
        return seq

    async def _run(self, stream: Stream, producer: Producer) -> None:
        stream.started_at = time.time()
        iterator: Any = None
        try:
            try:
                if stream._stop_reason is not None:  # stopped before it started
                    raise asyncio.CancelledError
                source: Any = producer
                if callable(producer) and not hasattr(producer, "__aiter__"):
                    source = producer(Emitter(stream))
                if inspect.isawaitable(source):
                    await source
                else:
                    iterator = tensors_to_frame_stream(source)
                    async for item in iterator:
                        await self._publish(stream, to_event(item))
                        if stream.terminal is not None:
                            break
            finally:
                if iterator is not None and hasattr(iterator, "aclose"):
                    with contextlib.suppress(Exception):
                        await iterator.aclose()
            if stream.terminal is None:
                await self._publish(stream, Event.done())
        except asyncio.CancelledError:
            if stream._stop_reason is None:
                raise  # cancelled from outside the hub: not ours to swallow
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            if stream.terminal is None:
                await self._publish(stream, stream._stop_reason)
        except Exception as exc:
            if stream.terminal is None:
                log.exception("producer of %s failed", stream.id)
                await self._publish(stream, Event.error("producer_error", f"{exc}"))
        finally:
            self._finish(stream)

    def _finish(self, stream: Stream) -> None:
        """The stream's task is done, however it ended: called at the end of `_run`,
        and as a done callback for a task cancelled from outside before its first
        step (idempotent)."""
        if stream._ended.is_set():
            return
        terminal = stream.terminal
        if terminal is None:  # only when the task was killed from outside
            terminal = stream.terminal = Event.cancelled("shutdown")
        stream.status = StreamStatus(terminal.kind)
        stream.ended_at = time.time()
        for handle in (stream._grace, stream._watchdog):
            if handle is not None:
                handle.cancel()
        stream._ended.set()
        fields = terminal.fields
        name = {"done": "close", "error": "error", "cancelled": "cancel"}[terminal.kind]
        log_event(
            name,
            stream=stream.id,
            transport="producer",
            last_seq=stream.last_seq,
            code=fields.get("code"),
            reason=fields.get("reason") or fields.get("finish_reason"),
            status=terminal.kind,
        )
        # Forget the stream once the broker has let go of its log, or earlier when
        # too many ended streams are kept.
        loop = asyncio.get_running_loop()
        self._ended[stream.id] = loop.call_later(
            self.config.retention.ttl_s, self._forget, stream.id
        )
        while len(self._ended) > self.config.max_ended_streams:
            oldest = next(iter(self._ended))
            self._ended[oldest].cancel()
            self._forget(oldest)
            task = loop.create_task(self.broker.delete(oldest))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def _forget(self, stream_id: str) -> None:
        self._ended.pop(stream_id, None)
        self.streams.pop(stream_id, None)

    def _arm_watchdog(self, stream: Stream) -> None:
        cfg = self.config
        check_every = max(0.05, min(cfg.idle_timeout_s, cfg.deadline_s) / 4)

        def check() -> None:
            if stream.status.ended or stream._stop_reason is not None:
                return
            now = time.monotonic()
            if now - stream._last_activity > cfg.idle_timeout_s:
                self._stop(
                    stream,
                    Event.error("timeout", f"producer emitted nothing for {cfg.idle_timeout_s}s"),
                )
            elif stream.started_at is not None and time.time() - stream.started_at > cfg.deadline_s:
                self._stop(stream, Event.error("deadline", f"stream ran past {cfg.deadline_s}s"))
            else:
                stream._watchdog = asyncio.get_running_loop().call_later(check_every, check)

        stream._watchdog = asyncio.get_running_loop().call_later(check_every, check)

    def _arm_grace(self, stream: Stream) -> None:
        if stream._grace is not None:
            stream._grace.cancel()
            stream._grace = None
        if self.config.grace_s == float("inf"):
            return

        def expire() -> None:
            stream._grace = None
            if stream.subscribers == 0 and not stream.status.ended:
                control = self._control()
                if control is not None:
                    control.confirm_idle(stream)  # viewers on other nodes hold it too
                else:
                    self._idle_stop(stream)

        stream._grace = asyncio.get_running_loop().call_later(self.config.grace_s, expire)

    def _idle_stop(self, stream: Stream) -> None:
        """The grace ran out and nobody, on any node, watches: cancel ``no_subscribers``."""
        if stream.subscribers == 0 and not stream.status.ended:
            log_event("grace_expired", stream=stream.id, transport="hub")
            self._stop(stream, Event.cancelled("no_subscribers"))

    def _viewers_elsewhere(self, stream: Stream, count: int) -> None:
        """Other nodes have ``count`` viewers of ``stream``, which this hub runs: they
        hold it like viewers here; when the last one everywhere leaves, the grace runs."""
        if stream.status.ended:
            return
        if count > 0:
            if stream._grace is not None:
                stream._grace.cancel()
                stream._grace = None
        elif stream.subscribers == 0 and stream._grace is None:
            self._arm_grace(stream)

    def _attach(self, stream: Stream, transport: str) -> None:
        stream.subscribers += 1
        stream.ever_subscribed = True
        self.subscriber_count += 1
        self.metrics.gauge_add("tokenwire_subscribers", 1, transport)
        if stream._grace is not None:
            stream._grace.cancel()
            stream._grace = None
        if stream.remote:
            self.streams.setdefault(stream.id, stream)  # an open slower than UNREAD_S
            self._tell_viewing(stream)

    def _detach(self, stream: Stream, transport: str) -> None:
        stream.subscribers -= 1
        self.subscriber_count -= 1
        self.metrics.gauge_add("tokenwire_subscribers", -1, transport)
        if stream.remote:
            # Its grace period runs on the node that runs it, which counts ours.
            self._tell_viewing(stream)
            if stream.subscribers == 0 and self.streams.get(stream.id) is stream:
                del self.streams[stream.id]
            return
        if stream.subscribers == 0 and not stream.status.ended:
            self._arm_grace(stream)

    def _tell_viewing(self, stream: Stream) -> None:
        control = self._control()
        if control is not None:
            control.viewing(stream.id, stream.subscribers)
