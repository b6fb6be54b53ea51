"""Live fan-out in one pass: a stream's new events written to every subscriber that
is at the head of the log, without waking one task per subscriber.

A :class:`Broadcast` serves one stream for one wire format (and one coalescing
window). It reads the log through its own cursor, in one task; when events arrive
it encodes them once (the endpoint's shared batches), frames them once, and writes
the same bytes straight to each *member*'s transport. A member is a subscription
whose driver parked (:meth:`Broadcasts.follow`) because it had read everything the
broadcast had: its task sleeps while the broadcast writes for it and advances its
cursor. What went out is told to its :class:`~tokenwire.core.delivery.Delivery`
(:meth:`~tokenwire.core.delivery.Delivery.settle`: its counts and heartbeat) once,
when it leaves: the broadcast keeps running totals (a :class:`Receipt` per write)
and a member only notes the last one it got, so a write to a member touches the
member, its future, its cursor and its transport, nothing else (the loop is the
hot path of live fan-out: per member, every object touched is a likely cache miss).

A member goes back to its own driver (its task is woken, nothing is lost: its
cursor is where the last write it got ended) when (docs/protocol.md, "Delivery"):

- its transport cannot take a write now (the server paused writing: the write
  buffer is past its high-water mark): the driver reads its backlog in batches,
  merged, with the server's flow control, and parks again once caught up;
- the broadcast reads a terminal event, a tensor chunk, or fails (lagged, the log
  deleted): the driver writes those as it always does;
- anything wakes its subscription: a heartbeat due, the client gone, a shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from tokenwire.core.delivery import Delivery
from tokenwire.core.encoder import SharedBatches
from tokenwire.errors import StreamLagged, StreamNotFound
from tokenwire.events import Event
from tokenwire.metrics import Metrics

log = logging.getLogger("tokenwire")

T = TypeVar("T")

MAX_COALESCE_MS = 1000
SLICE = 256
"""Members written in one step of the loop."""


class DirectWrite(Protocol):
    """A transport a broadcast writes to without the ASGI ``send`` (http_direct.py)."""

    def writable(self) -> bool:
        """True when a write now would neither block nor overfill the buffer."""
        ...

    def try_write(self, frames: Frames) -> bool:
        """Write ``frames`` if :meth:`writable`; whether it did."""
        ...


class BatchBytes(Protocol):
    """What a broadcast encodes a batch with: its bytes once for every member (an
    endpoint's :class:`~tokenwire.core.encoder.SharedBatches`, or the WebSocket
    frames of them), or None for a batch its members must write themselves."""

    def text(self, stream_id: str, batch: list[Event]) -> tuple[bytes, int] | None: ...


class FramedBatches(Generic[T]):
    """A :class:`BatchBytes` over an endpoint's shared batches: the shared encoding
    of a batch, as the bytes ``frame`` makes of it (WebSocket frames, engine.io
    packets), or None for a batch holding a tensor chunk (``SharedBatches.text``)."""

    __slots__ = ("_frame", "_shared")

    def __init__(self, shared: SharedBatches[tuple[T, int]], frame: Callable[[T], bytes]) -> None:
        self._shared = shared
        self._frame = frame

    def text(self, stream_id: str, batch: list[Event]) -> tuple[bytes, int] | None:
        encoded = self._shared.text(stream_id, batch)
        if encoded is None:
            return None
        return self._frame(encoded[0]), encoded[1]


class Frames:
    """One flush's bytes: the encoded body, and its HTTP/1.1 chunk (RFC 9112 §7.1)
    built once, by the first member that asks."""

    __slots__ = ("_chunked", "body")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self._chunked: bytes | None = None

    @property
    def chunked(self) -> bytes:
        if self._chunked is None:
            self._chunked = b"%x\r\n%b\r\n" % (len(self.body), self.body)
        return self._chunked


class Receipt:
    """A broadcast's running totals after one of its writes: events and bytes
    written to each member since the broadcast began, and when."""

    __slots__ = ("at", "bytes", "events")

    def __init__(self, events: int, nbytes: int, at: float) -> None:
        self.events = events
        self.bytes = nbytes
        self.at = at


class Member:
    """A subscription's place in broadcasts: ``joined`` and ``got`` are the receipts
    when it parked and of the last write it got; their difference is what the
    broadcast wrote for it (:meth:`settle`)."""

    __slots__ = ("cursor", "delivery", "got", "joined", "out", "parked", "sub")

    def __init__(self, sub: Any, delivery: Delivery[Any], out: DirectWrite) -> None:
        self.sub = sub
        self.delivery = delivery
        self.out = out
        self.parked: asyncio.Future[None] | None = None
        self.cursor: Any = None
        self.joined = self.got = _NONE

    def settle(self) -> None:
        """Tell the delivery what the broadcast wrote for it since it parked."""
        got, joined = self.got, self.joined
        if got is not joined:
            self.delivery.settle(got.events - joined.events, got.bytes - joined.bytes, got.at)
        self.joined = self.got = _NONE


_NONE = Receipt(0, 0, 0.0)


class Broadcast:
    """One stream's live members for one format and window (module docstring)."""

    def __init__(
        self,
        registry: Broadcasts,
        stream_id: str,
        position: int,
        coalesce_s: float,
    ) -> None:
        self.registry = registry
        self.stream_id = stream_id
        self.position = position
        self.coalesce_s = coalesce_s
        self.members: dict[int, Member] = {}
        self.receipt = Receipt(0, 0, 0.0)
        """The totals after the latest write (begun: its members may still be written)."""
        self._cursor: Any = None
        self._loop = asyncio.get_running_loop()
        self.task = self._loop.create_task(self._run(), name=f"broadcast {stream_id}")

    def wake(self) -> None:
        if self._cursor is not None:
            self._cursor.wake()

    async def _run(self) -> None:
        reg = self.registry
        try:
            self._cursor = await reg.hub.broker.cursor(self.stream_id, self.position)
            last_flush = 0.0
            while self.members:
                if self.coalesce_s:
                    wait = last_flush + self.coalesce_s - self._loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                        if not self.members:
                            break
                try:
                    batch = await self._cursor.read(reg.max_batch_events)
                except (StreamLagged, StreamNotFound):
                    break
                if not batch:
                    if self._cursor.ended:
                        break
                    continue
                if not await self._deliver(batch):
                    break
                last_flush = self._loop.time()
        except Exception:  # the members read for themselves; the server goes on
            log.exception("broadcast of %s failed", self.stream_id)
        finally:
            if self._cursor is not None:
                self._cursor.close()
            reg.ended(self)
            self.release_all()

    async def _deliver(self, batch: list[Event]) -> bool:
        """Write ``batch`` to every member that can take it; False when the rest of
        the stream is the drivers' (a terminal event)."""
        start = self.position
        last = self.position = batch[-1].seq
        if batch[-1].terminal:
            return False
        encoded = self.registry.shared.text(self.stream_id, batch)
        if encoded is None:
            self.release_all()  # tensor chunks: one write each, by the drivers
            return True
        frames = Frames(encoded[0])
        prev = self.receipt
        receipt = self.receipt = Receipt(
            prev.events + len(batch), prev.bytes + encoded[1], self._loop.time()
        )
        members = list(self.members.values())
        for i in range(0, len(members), SLICE):
            if i:
                # Thousands of writes in one callback would hold the loop (accepts,
                # other streams) for all of them.
                await asyncio.sleep(0)
            written = self._write(members[i : i + SLICE], frames, start, last, receipt)
            if written:
                inc, transport = self.registry.inc, self.registry.transport
                inc("tokenwire_events_delivered_total", len(batch) * written, transport)
                inc("tokenwire_bytes_delivered_total", encoded[1] * written, transport)
                inc("tokenwire_broadcast_events_total", len(batch) * written, transport)
        return True

    def _write(
        self, members: list[Member], frames: Frames, start: int, last: int, receipt: Receipt
    ) -> int:
        """Write ``frames`` (the events after seq ``start``, up to ``last``) to each
        member still at ``start`` whose transport takes them now, and hand the others
        back to their drivers; how many were written."""
        written = 0
        behind: list[Member] = []
        for member in members:
            parked = member.parked
            if parked is None or parked.done():
                continue  # woken, or gone
            cursor = member.cursor
            if cursor.position != start or not member.out.try_write(frames):
                behind.append(member)
                continue
            cursor.position = last  # every broker's cursor holds it as a plain attribute
            member.got = receipt
            written += 1
        if behind:
            for member in behind:
                self.release(member)
            registry = self.registry
            registry.inc("tokenwire_broadcast_fallbacks_total", len(behind), registry.transport)
        return written

    def release(self, member: Member) -> None:
        """Hand ``member`` back to its driver."""
        self.members.pop(id(member), None)
        fut = member.parked
        if fut is not None and not fut.done():
            fut.set_result(None)

    def release_all(self) -> None:
        for member in list(self.members.values()):
            self.release(member)


class Broadcasts:
    """An endpoint's broadcasts, one per stream and window, made when a first member
    parks and ended when the last one leaves."""

    def __init__(
        self,
        hub: Any,
        shared: BatchBytes,
        transport: str,
        max_batch_events: int,
        metrics: Metrics | None,
    ) -> None:
        self.hub = hub
        self.shared = shared
        self.transport = transport
        self.max_batch_events = max_batch_events
        self.inc: Callable[..., None] = _no_count
        if metrics is not None:
            self.inc = metrics.inc
            metrics.describe(
                "tokenwire_broadcast_events_total", "events written to live subscribers in one pass"
            )
            metrics.describe(
                "tokenwire_broadcast_fallbacks_total",
                "live subscribers handed back to their own reads: their socket was full",
            )
        self._all: dict[tuple[str, float], Broadcast] = {}

    def __len__(self) -> int:
        return len(self._all)

    def ended(self, broadcast: Broadcast) -> None:
        key = (broadcast.stream_id, broadcast.coalesce_s)
        if self._all.get(key) is broadcast:
            del self._all[key]

    def follow(self, member: Member, coalesce_s: float) -> asyncio.Future[None] | None:
        """Park ``member`` if it is at the head of its stream's broadcast (made if
        there is none) and its transport can take a write: the future to await,
        resolved when it is handed back. None: the driver reads for itself."""
        sub = member.sub
        if sub.finished or not member.out.writable():
            return None
        key = (sub.stream_id, coalesce_s)
        broadcast = self._all.get(key)
        if broadcast is None or broadcast.task.done():
            broadcast = self._all[key] = Broadcast(self, sub.stream_id, sub.position, coalesce_s)
        elif broadcast.position != sub.position:
            return None
        fut = member.parked = asyncio.get_running_loop().create_future()
        member.cursor = sub.cursor
        member.joined = member.got = broadcast.receipt
        broadcast.members[id(member)] = member
        sub.park(fut)
        fut.add_done_callback(lambda _: self._left(broadcast, member))
        return fut

    @staticmethod
    def _left(broadcast: Broadcast, member: Member) -> None:
        # Before the driver's task resumes (this callback was added first): it reads
        # on from the cursor, and its delivery knows what went out.
        member.parked = None
        member.settle()
        member.sub.unpark()
        if broadcast.members.pop(id(member), None) is not None and not broadcast.members:
            broadcast.wake()  # nobody left: the broadcast ends instead of waiting


def _no_count(name: str, value: float, *labels: str) -> None:
    return None
