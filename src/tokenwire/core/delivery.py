"""``Delivery``: the sans-I/O state machine of one subscription's writes.

It has no task, no clock and no socket. It is given ``now`` and what happened
(the open frame, a batch read from the cursor, a failed read, a heartbeat tick,
a shutdown) and answers with the writes to make, each with what it counts for
the delivery metrics. The driver (:mod:`tokenwire.core.driver`) does the I/O.

What it owns (docs/protocol.md, "Delivery"):

- **heartbeat due-times**, through a :class:`Heartbeat` shared by every
  subscription of a connection: a heartbeat goes out when the connection has
  written nothing for ``interval`` seconds;
- **catch-up batching and merging**: a batch is one write; a batch longer than
  the encoder's ``merge_after`` is coalesced; a batch holding tensor chunks goes
  one write per event, because joining a window's worth of chunks would hold a
  second copy of it while the socket drains;
- **the end of a stream**: finished after the terminal event, or when the
  cursor can give nothing more;
- **the lag policy**, one for every transport: a read that finds its history
  gone (``lagged``) or its log deleted (``not_found``) ends the subscription
  with the encoder's ``end`` frame; the client resumes after its last seq and
  gets ``open {recovered: false}``, never a silent gap;
- **what it counts**: events and bytes written, on every transport.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Generic

from tokenwire.core.encoder import Encoder, Out, SharedBatches

# Timers may fire a hair early; a heartbeat this close to due is due.
_EARLY = 0.005

Write = tuple[Any, int, int]
"""One socket write: what to write, the events it covers, its bytes."""


class Heartbeat:
    """When a connection last wrote, and whether a heartbeat is due.

    One per connection: a WebSocket connection's subscriptions share it, since a
    frame of any stream shows the peer the connection is alive."""

    __slots__ = ("due", "interval", "last_sent")

    def __init__(self, interval: float, now: float) -> None:
        self.interval = interval
        self.last_sent = now
        self.due = False

    @property
    def next_at(self) -> float:
        return self.last_sent + self.interval

    def wrote(self, now: float) -> None:
        self.last_sent = now
        self.due = False

    def check(self, now: float) -> bool:
        """A timer fired: mark a heartbeat due if the connection has been silent."""
        if now >= self.next_at - _EARLY:
            self.due = True
        return self.due


class Delivery(Generic[Out]):
    """The writes of one subscription (see the module docstring)."""

    __slots__ = (
        "_encode",
        "bytes",
        "encoder",
        "end_code",
        "events",
        "finished",
        "heartbeat",
        "last_write",
        "stream_id",
    )

    def __init__(
        self,
        stream_id: str,
        encoder: Encoder[Out],
        heartbeat: Heartbeat,
        shared: SharedBatches[tuple[Out, int]] | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.encoder = encoder
        self.heartbeat = heartbeat
        self._encode: Callable[[str, list[Any]], tuple[Out, int] | None]
        if shared is not None and encoder.shared:
            self._encode = shared.text
        else:
            self._encode = SharedBatches(encoder.batch, encoder.merge_after, streams=1).text
        self.finished = False
        self.end_code: str | None = None
        """Why the subscription ended before its terminal event, if it did."""
        self.events = 0
        self.bytes = 0
        self.last_write = -math.inf
        """When this subscription's events last went out (the coalescing window
        counts from it; a WebSocket's heartbeat is the connection's)."""

    def open(self, frame: dict[str, Any], now: float) -> list[Write]:
        """The subscription opened: its ``open`` frame."""
        out = self.encoder.open(self.stream_id, frame)
        self.heartbeat.wrote(now)
        return [] if out is None else [self._count(out, 0, _size(out))]

    def receive(self, batch: list[Any], now: float, *, ended: bool) -> list[Write]:
        """A read returned ``batch`` (``[]`` when woken); ``ended``: the cursor will
        give nothing more (the terminal event was read, or the log ended)."""
        if ended:
            self.finished = True
        if not batch:
            return []
        encoded = self._encode(self.stream_id, batch)
        if encoded is not None:
            out, nbytes = encoded
            events = len(batch)
            self.sent(events, nbytes, now)
            return [(out, events, nbytes)]
        self.heartbeat.wrote(now)
        self.last_write = now
        writes = []
        for ev in batch:
            out, nbytes = self.encoder.batch(self.stream_id, [ev])
            writes.append(self._count(out, 1, nbytes))
        return writes

    def sent(self, events: int, nbytes: int, now: float) -> None:
        """``events`` of this subscription went out in ``nbytes`` just now."""
        self.events += events
        self.bytes += nbytes
        self.last_write = now
        hb = self.heartbeat  # the hot path: Heartbeat.wrote, inlined
        hb.last_sent = now
        hb.due = False

    def settle(self, events: int, nbytes: int, last_at: float) -> None:
        """A broadcast wrote ``events`` of this subscription in ``nbytes`` while it
        was parked, the last at ``last_at`` (core/broadcast.py). Unlike :meth:`sent`,
        a heartbeat already due stays due: :meth:`tick` decides, from ``last_at``."""
        self.events += events
        self.bytes += nbytes
        self.last_write = max(self.last_write, last_at)
        hb = self.heartbeat
        hb.last_sent = max(hb.last_sent, last_at)

    def tick(self, now: float) -> list[Write]:
        """A heartbeat was due: one, unless something was written since."""
        hb = self.heartbeat
        hb.due = False
        if now < hb.next_at - _EARLY:
            return []
        out = self.encoder.heartbeat()
        hb.wrote(now)
        return [] if out is None else [self._count(out, 0, _size(out))]

    def fail(self, code: str, message: str) -> list[Write]:
        """A read failed (``lagged``, ``not_found``) or the server is shutting down:
        the subscription ends with the encoder's end frame."""
        if self.finished:
            return []
        self.finished = True
        self.end_code = code
        out = self.encoder.end(self.stream_id, code, message)
        return [] if out is None else [self._count(out, 0, _size(out))]

    def _count(self, out: Any, events: int, nbytes: int) -> Write:
        self.events += events
        self.bytes += nbytes
        return (out, events, nbytes)


def _size(out: Any) -> int:
    if isinstance(out, bytes | str):
        return len(out)
    if isinstance(out, list):
        return sum(_size(part) for part in out)
    data = getattr(out, "data", None)  # an engine.io packet
    return len(data) if isinstance(data, bytes | str) else 0
