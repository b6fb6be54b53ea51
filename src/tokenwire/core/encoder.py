"""The one encoder interface: how a transport writes a subscription.

Every server transport (SSE, NDJSON, WebSocket, Socket.IO, OpenAI chunks, the
AI SDK stream) is an :class:`Encoder` plus a thin adapter that writes what the
:class:`~tokenwire.core.delivery.Delivery` hands it. ``Out`` is what one socket
write takes: bytes for HTTP bodies, a list of messages for WebSocket, a list of
engine.io packets for Socket.IO.

An encoder that keeps no per-connection state (``shared = True``) has its batch
encodings shared by every subscriber reading the same range of a stream
(:class:`SharedBatches`): the catch-up merge and the framing run once per range,
not once per subscriber (docs/protocol.md, "Delivery").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from tokenwire.events import Event, coalesce

Out = TypeVar("Out")
Out_co = TypeVar("Out_co", covariant=True)
T = TypeVar("T")


class Encoder(Protocol[Out_co]):
    """What a transport writes for one subscription."""

    @property
    def transport(self) -> str:
        """The ``transport`` label of the delivery metrics."""
        ...

    @property
    def shared(self) -> bool:
        """No per-connection state: one encoding of a batch serves every subscriber."""
        ...

    @property
    def merge_after(self) -> int | None:
        """A batch longer than this is a catch-up and is coalesced; None: never."""
        ...

    def open(self, stream_id: str, frame: dict[str, Any]) -> Out_co | None:
        """The first write of a subscription: the ``open`` control frame."""
        ...

    def batch(self, stream_id: str, events: list[Event]) -> tuple[Out_co, int]:
        """A batch of events as one write, and its size in bytes."""
        ...

    def heartbeat(self) -> Out_co | None:
        """A heartbeat frame, or None where the transport has its own (engine.io pings)."""
        ...

    def end(self, stream_id: str, code: str, message: str) -> Out_co | None:
        """The last write of a subscription that ends before its terminal event
        (``lagged``, ``not_found``, ``server_shutdown``; docs/protocol.md,
        "Delivery": the lag policy), or None where the end of the response is the signal."""
        ...


class SharedBatches(Generic[T]):
    """``encode(stream_id, frames)`` of a batch, cached per stream for the last range.

    Subscribers woken by the same append read the same range of the shared log
    one after another; the same first and last event objects of an append-only log
    mean the same range. ``frames`` is the batch coalesced when it is longer than
    ``merge_after``. At most ``streams`` entries are kept (the oldest goes first)."""

    __slots__ = ("_encode", "_last", "_streams", "merge_after")

    def __init__(
        self,
        encode: Callable[[str, list[Event]], T],
        merge_after: int | None,
        streams: int = 256,
    ) -> None:
        self._encode = encode
        self.merge_after = merge_after
        self._streams = streams
        self._last: dict[str, tuple[Event, Event, T | None]] = {}

    def __call__(self, stream_id: str, batch: list[Event]) -> T:
        hit = self._last.get(stream_id)
        if hit is not None and hit[0] is batch[0] and hit[1] is batch[-1] and hit[2] is not None:
            return hit[2]
        value = self._encode(stream_id, merged(batch, self.merge_after))
        self._store(stream_id, batch, hit is None, value)
        return value

    def text(self, stream_id: str, batch: list[Event]) -> T | None:
        """As a call, but None for a batch holding a binary event (a tensor chunk),
        which goes one write per event. The scan runs once per range, not once per
        subscriber: the cache answers the others."""
        hit = self._last.get(stream_id)
        if hit is not None and hit[0] is batch[0] and hit[1] is batch[-1]:
            return hit[2]
        value: T | None = None
        for ev in batch:
            if ev.binary is not None:
                break
        else:
            value = self._encode(stream_id, merged(batch, self.merge_after))
        self._store(stream_id, batch, hit is None, value)
        return value

    def _store(self, stream_id: str, batch: list[Event], new: bool, value: T | None) -> None:
        if new and len(self._last) >= self._streams:
            del self._last[next(iter(self._last))]
        self._last[stream_id] = (batch[0], batch[-1], value)


def merged(batch: list[Event], merge_after: int | None) -> list[Event]:
    """The batch as written: coalesced when it is a catch-up (design: nothing lost,
    runs of tokens merged into one frame covering ``from_seq..seq``)."""
    if merge_after is not None and len(batch) > merge_after:
        return coalesce(batch)
    return batch
