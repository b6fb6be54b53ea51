"""A batch read from a stream's log, encoded once for every subscriber that reads it.

Subscribers woken by the same append read the same range of the shared log,
one after another, so the encoding of the last range read from each stream is
kept and reused: a catch-up merge and the framing run once per range, not once
per subscriber (the SSE endpoint does the same). The same first and last event
objects of an append-only log mean the same range.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from tokenwire.events import Event, coalesce

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
