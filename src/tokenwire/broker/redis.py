"""The Redis broker: one Redis stream per tokenwire stream, shared by every gateway.

``RedisBroker(url)`` passes the same conformance suite as the memory broker
(tests/test_broker_conformance.py). What differs is where things live:

- the appends of the node that writes a log go through its
  :class:`~.redis_writer.LogWriter`: the seq is claimed at once, and batches of
  appends are one ``EVALSHA`` each (redis_log.APPEND: seq, retention, the byte
  window and the TTL after the terminal event in one atomic step). A batch names
  the seq of its first entry, so one retried after a lost reply is not stored
  twice; the queue per log is bounded, so a slow Redis slows the producer;
- live events reach each gateway once, through its :class:`~.redis_mirror.Reader`,
  and its cursors read them from the local :class:`~.redis_mirror.Mirror`; a cursor
  further behind than the mirror reads its backlog from Redis (``XRANGE``);
- the byte window counts the slowest cursor of every gateway: each reports the
  position of its slowest cursor on a tensor stream into ``tw:{S}:r``.

Redis unreachable: calls raise :class:`BrokerUnavailable` (HTTP 503) after a short
retry; appends retry for ``append_retry_s`` first, so a Redis restart only pauses
a producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from typing import Any

from tokenwire.broker.base import LogInfo, Retention
from tokenwire.broker.redis_control import ControlPlane
from tokenwire.broker.redis_log import (
    APPEND,
    CREATE,
    HISTORY,
    BrokerUnavailable,
    decode_entry,
    entry_fields,
    keys_of,
    meta_key,
    readers_key,
)
from tokenwire.broker.redis_mirror import BLOCK_MS, Mirror, Reader
from tokenwire.broker.redis_writer import LogWriter
from tokenwire.errors import StreamLagged, StreamNotFound
from tokenwire.events import TENSOR_CHUNK, Event

DEFAULT_WINDOW_BYTES = 8 * 1024 * 1024
LIVE_TTL_S = 24 * 3600.0  # a log whose writer vanished without a terminal event


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis.exceptions as rx

    return (rx.ConnectionError, rx.TimeoutError, ConnectionError, OSError)


def _expire(fut: asyncio.Future[bool | None]) -> None:
    if not fut.done():
        fut.set_result(True)


class RedisCursor:
    __slots__ = (
        "_broker",
        "_closed",
        "_known_closed",
        "_known_last",
        "_mirror",
        "_woken",
        "position",
        "sid",
    )

    def __init__(self, broker: RedisBroker, sid: str, after: int, mirror: Mirror | None) -> None:
        self._broker = broker
        self.sid = sid
        self.position = after
        self._mirror = mirror
        self._closed = False
        self._woken = False
        self._known_last = after
        self._known_closed = mirror is None
        if mirror is not None:
            mirror.cursors.add(self)

    async def read(self, max_events: int, timeout: float | None = None) -> list[Event]:
        if self._closed:
            return []
        mirror = self._mirror
        if mirror is None or self.position < mirror.base:
            return await self._history(max_events)
        if self.position >= mirror.last:
            if not await self._wait(mirror, timeout):
                return []
        if self.position + 1 < mirror.first:
            # Behind what the mirror holds: Redis has the backlog, or says how far
            # retention has moved on (StreamLagged).
            return await self._history(max_events)
        batch = mirror.slice(self.position, max_events)
        self._advance(batch)
        return batch

    async def _wait(self, mirror: Mirror, timeout: float | None) -> bool:
        """Wait until the mirror holds an event after :attr:`position`; False when
        the wait timed out or :meth:`wake` ended it. The mirror wakes every cursor
        on each batch, also those that asked for a seq further on (opened after a
        later ``info``), so a wake-up alone is not an answer."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        self._woken = False
        while self.position >= mirror.last:
            if mirror.deleted:
                raise StreamNotFound(self.sid)
            if mirror.closed or self._woken or self._closed:
                return False
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return False
            fut: asyncio.Future[bool | None] = loop.create_future()
            mirror.waiters.append(fut)
            # A timer, not asyncio.wait_for: this runs once per cursor per batch, and
            # wait_for's extra wrapping costs more than the read itself.
            timer = loop.call_later(left, _expire, fut) if left is not None else None
            try:
                await fut
            finally:
                if timer is not None:
                    timer.cancel()
            if fut.result():
                return False  # timed out
        return True

    async def _history(self, max_events: int) -> list[Event]:
        broker = self._broker
        reply = await broker._call(
            broker._history, keys_of(self.sid)[:2], [self.position, max_events]
        )
        if reply[0] == -1:
            raise StreamNotFound(self.sid)
        first, last, closed, entries = reply
        self._known_last, self._known_closed = int(last), bool(closed)
        if self.position + 1 < first:
            raise StreamLagged(self.sid, self.position, int(first))
        batch = [decode_entry(entry_id, values)[0] for entry_id, values in entries]
        self._advance(batch, from_redis=True)
        return batch

    def _advance(self, batch: list[Event], *, from_redis: bool = False) -> None:
        if not batch:
            return
        self.position = batch[-1].seq
        mirror = self._mirror
        if mirror is not None:
            # Mirror.push marks its own tensor chunks; older ones come from Redis.
            if from_redis and any(e.kind == TENSOR_CHUNK for e in batch):
                mirror.windowed = True
            if mirror.windowed:
                self._broker._report(mirror)

    @property
    def ended(self) -> bool:
        if self._closed:
            return True
        mirror = self._mirror
        if mirror is not None and self.position >= mirror.base:
            return mirror.deleted or (mirror.closed and self.position >= mirror.last)
        return self._known_closed and self.position >= self._known_last

    def wake(self) -> None:
        mirror = self._mirror
        if mirror is not None:
            self._woken = True
            mirror.wake_all()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        mirror = self._mirror
        if mirror is not None:
            mirror.cursors.discard(self)
            if mirror.windowed:
                self._broker._report(mirror, idle=self.position)
            if not mirror.cursors:
                self._broker._drop(mirror)


class RedisBroker:
    """Logs in Redis >= 7 Streams, for any number of gateways and workers."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        retention: Retention | None = None,
        *,
        window_bytes: int = DEFAULT_WINDOW_BYTES,
        node_id: str | None = None,
        append_retry_s: float = 30.0,
        max_connections: int = 32,
    ) -> None:
        import redis.asyncio as aioredis
        import redis.exceptions as rx
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.url = url
        self.retention = retention or Retention()
        self.window_bytes = window_bytes
        self.node_id = node_id or "n_" + secrets.token_hex(6)
        self.append_retry_s = append_retry_s
        # A bounded pool: a burst of appends waits for a connection instead of opening
        # one each (and Redis sees a steady number of clients per node).
        # One retry on a lost connection: after a Redis restart each pooled connection
        # is dead, and its first command would otherwise be a 503 with Redis back up.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=10,
            socket_connect_timeout=2, socket_timeout=10,
            retry=Retry(NoBackoff(), 1), retry_on_error=[rx.ConnectionError],
        )  # fmt: skip
        self.redis = aioredis.Redis(connection_pool=pool)
        self._append = self.redis.register_script(APPEND)
        self._create = self.redis.register_script(CREATE)
        self._history = self.redis.register_script(HISTORY)
        self._errors = _redis_errors()
        self._readers: list[Reader] = []
        self._mirrors: dict[str, Mirror] = {}
        self._opening: dict[str, asyncio.Future[Mirror | None]] = {}
        self._expected: dict[str, int] = {}  # the next seq of logs this node writes
        self._writers: dict[str, LogWriter] = {}  # ... once it has appended to them
        self._dirty: dict[str, tuple[Mirror, int | None]] = {}
        self._reporter: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._closed = False
        self.control = ControlPlane(self)  # stops and viewer presence across nodes

    # -- plumbing -------------------------------------------------------------

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except self._errors as exc:
            raise BrokerUnavailable(str(exc) or type(exc).__name__) from None

    async def command(self, name: str, *args: Any) -> Any:
        """One Redis command; a lost connection raises :class:`BrokerUnavailable`."""
        try:
            return await self.redis.execute_command(name, *args)  # type: ignore[no-untyped-call]
        except self._errors as exc:
            raise BrokerUnavailable(str(exc) or type(exc).__name__) from None

    # -- the Broker protocol ----------------------------------------------------

    async def create(self, stream_id: str, **registry: Any) -> str:
        epoch = secrets.token_hex(6)
        args: list[Any] = [epoch, int(LIVE_TTL_S * 1000)]
        for key, value in registry.items():
            args += [key, "" if value is None else str(value)]
        if not await self._call(self._create, keys_of(stream_id), args):
            raise ValueError(f"stream {stream_id!r} already exists")
        self._expected[stream_id] = 1
        return epoch

    async def append(self, stream_id: str, event: Event, *, window: bool = False) -> int:
        if self._closed:
            raise BrokerUnavailable("the broker is closed")
        writer = self._writers.get(stream_id)
        if writer is None:
            next_seq = self._expected.pop(stream_id, 0)
            if not next_seq:
                return await self._append_once(stream_id, event, window)
            writer = self._writers[stream_id] = LogWriter(
                stream_id, next_seq, self._send_append, self._append_settings,
                retry_s=self.append_retry_s, errors=self._errors, on_acked=self._landed,
            )  # fmt: skip
        try:
            return await writer.append(event, window)
        finally:
            if event.terminal and writer.idle and self._writers.get(stream_id) is writer:
                del self._writers[stream_id]

    def _landed(self, stream_id: str, events: list[Event], end: int) -> None:
        # The writer's own gateway serves its events as soon as Redis holds them.
        mirror = self._mirrors.get(stream_id)
        if mirror is not None:
            mirror.push_local(events, end)

    def _append_settings(self) -> list[Any]:
        r = self.retention
        return [
            r.max_events,
            r.max_bytes,
            max(1, int(r.ttl_s * 1000)),
            self.window_bytes,
            int(LIVE_TTL_S * 1000),
        ]

    async def _send_append(self, keys: list[str], args: list[Any]) -> Any:
        return await self._append(keys=keys, args=args)

    async def _append_once(self, stream_id: str, event: Event, window: bool) -> int:
        """An append to a log this node does not write (no seq of its own to claim),
        e.g. ``worker_lost`` for a gone writer: at the log's next seq, in call order."""
        lock = self._locks.get(stream_id)
        if lock is None:
            lock = self._locks[stream_id] = asyncio.Lock()
        async with lock:
            args = [0, *self._append_settings(), *entry_fields(event, windowed=window)]
            delay = 0.002
            deadline = time.monotonic() + self.append_retry_s
            while not self._closed:
                try:
                    last, how = (await self._send_append(keys_of(stream_id), args))[:2]
                except self._errors as exc:
                    if time.monotonic() > deadline:
                        raise BrokerUnavailable(str(exc) or type(exc).__name__) from None
                    await asyncio.sleep(min(1.0, delay * 5))
                    delay *= 2
                    continue
                if how == 0:  # the byte window is full
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.02)
                    continue
                break
            else:
                raise BrokerUnavailable("the broker is closed")
        if how == -1:
            raise StreamNotFound(stream_id)
        if how == -2:
            raise RuntimeError(f"stream {stream_id!r} already ended")
        event.seq = int(last)
        if event.terminal:
            self._locks.pop(stream_id, None)
        return event.seq

    async def _settled(self, stream_id: str) -> None:
        writer = self._writers.get(stream_id)
        if writer is not None and not writer.idle:
            await writer.settled()

    async def adopt(self, stream_id: str) -> LogInfo:
        """Become the writer of a log another node created (a worker taking a job)."""
        info = await self.info(stream_id)
        self._expected[stream_id] = info.last_seq + 1
        return info

    async def info(self, stream_id: str) -> LogInfo:
        await self._settled(stream_id)
        epoch, first, last, closed = await self.command(
            "HMGET", meta_key(stream_id), "epoch", "first", "last", "closed"
        )
        if epoch is None:
            raise StreamNotFound(stream_id)
        return LogInfo(epoch.decode(), int(first), int(last), closed == b"1")

    async def describe(self, stream_id: str) -> dict[str, Any] | None:
        """What the hub needs to serve a log another node writes; None if unknown."""
        await self._settled(stream_id)
        values = await self.command(
            "HMGET", meta_key(stream_id), "epoch", "last", "closed", "status", "model"
        )
        epoch, last, closed, status, model = values
        if epoch is None:
            return None
        return {
            "epoch": epoch.decode(),
            "last_seq": int(last),
            "closed": closed == b"1",
            "status": status.decode() if status else "",
            "model": model.decode() if model else "",
        }

    async def cursor(self, stream_id: str, after: int) -> RedisCursor:
        after = max(0, after)
        mirror = self._mirrors.get(stream_id)
        if mirror is None:
            mirror = await self._open_mirror(stream_id)
        return RedisCursor(self, stream_id, after, mirror)

    async def _open_mirror(self, stream_id: str) -> Mirror | None:
        """The mirror of a live log (None for a closed one: it has nothing to wait for).
        Cursors opening at once share one mirror."""
        pending = self._opening.get(stream_id)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Mirror | None] = asyncio.get_running_loop().create_future()
        self._opening[stream_id] = fut
        try:
            info = await self.info(stream_id)
            mirror: Mirror | None = None
            if not info.closed:
                mirror = Mirror(stream_id, info.last_seq, self.retention)
                self._mirrors[stream_id] = mirror
                await self._reader().add(mirror, self.redis)
            fut.set_result(mirror)
            return mirror
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved here; waiters get it too
            raise
        finally:
            del self._opening[stream_id]

    def _reader(self) -> Reader:
        for reader in self._readers:
            if not reader.full:
                return reader
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(
            self.url, socket_connect_timeout=2, socket_timeout=BLOCK_MS / 1000 + 5
        )
        reader = Reader(client, f"tw:wake:{self.node_id}:{len(self._readers)}")
        self._readers.append(reader)
        return reader

    def _drop(self, mirror: Mirror) -> None:
        if self._mirrors.get(mirror.stream_id) is mirror:
            del self._mirrors[mirror.stream_id]
        if mirror.reader is not None:
            mirror.reader.remove(mirror)

    # -- the byte window across gateways ----------------------------------------

    def _report(self, mirror: Mirror, idle: int | None = None) -> None:
        """Tell writers where this gateway's slowest cursor on ``mirror`` is (coalesced:
        one write per stream in flight, whatever the number of cursors)."""
        self._dirty[mirror.stream_id] = (mirror, idle)
        if self._reporter is None or self._reporter.done():
            self._reporter = asyncio.get_running_loop().create_task(self._report_loop())

    async def _report_loop(self) -> None:
        while self._dirty:
            sid, (mirror, idle) = self._dirty.popitem()
            positions = [c.position for c in mirror.cursors]
            slowest = min(positions) if positions else idle
            if slowest is None:
                continue
            with contextlib.suppress(*self._errors):
                await self.redis.hset(readers_key(sid), self.node_id, slowest)

    # -- the rest -----------------------------------------------------------------

    async def delete(self, stream_id: str) -> None:
        self._expected.pop(stream_id, None)
        writer = self._writers.pop(stream_id, None)
        if writer is not None:
            await writer.aclose(0)
        mirror = self._mirrors.pop(stream_id, None)
        if mirror is not None:
            mirror.deleted = True
            mirror.wake_all()
            if mirror.reader is not None:
                mirror.reader.remove(mirror)
        with contextlib.suppress(*self._errors):
            await self.redis.delete(*keys_of(stream_id))

    @property
    def connected(self) -> bool:
        return all(reader.connected for reader in self._readers)

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except self._errors:
            return False

    async def aclose(self) -> None:
        await self.control.aclose()
        self._closed = True
        for reader in self._readers:
            await reader.aclose(self.redis)
        self._readers.clear()
        if self._reporter is not None:
            self._reporter.cancel()
            with contextlib.suppress(BaseException):
                await self._reporter
        for mirror in self._mirrors.values():
            mirror.deleted = True
            mirror.wake_all()
        self._mirrors.clear()
        await self.redis.aclose()
        await self.redis.connection_pool.disconnect()
