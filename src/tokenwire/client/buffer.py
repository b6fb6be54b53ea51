"""The bounded buffer between a transport and the application.

Policy: **backpressure**. The buffer holds at most ``max_events`` events and
about ``max_bytes`` bytes (the event's :attr:`~tokenwire.events.Event.size`;
one event is always admitted, so an event larger than ``max_bytes`` still
passes, alone). When it is full the transport's ``put`` waits, which means the
transport stops reading its socket: TCP flow control then holds the server back
(SSE, NDJSON), or the transport leaves and later resumes the subscription
(WebSocket, see :mod:`tokenwire.client.ws`). Nothing is dropped and nothing
grows: the client's memory is this bound plus the parsers' line bound.

One producer (the transport's task) and one consumer (the handle).
"""

from __future__ import annotations

import asyncio
from collections import deque

from tokenwire.client.errors import ClientError
from tokenwire.events import Event


class EventBuffer:
    __slots__ = (
        "_bytes",
        "_end",
        "_ended",
        "_getter",
        "_items",
        "_putter",
        "high_bytes",
        "high_events",
        "max_bytes",
        "max_events",
    )

    def __init__(self, max_events: int = 256, max_bytes: int = 4 << 20) -> None:
        if max_events < 1 or max_bytes < 1:
            raise ValueError("max_events and max_bytes must be >= 1")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._items: deque[tuple[Event, int]] = deque()
        self._bytes = 0
        self._ended = False
        self._end: ClientError | None = None
        self._getter: asyncio.Future[None] | None = None
        self._putter: asyncio.Future[None] | None = None
        self.high_events = 0
        """The most events ever buffered at once."""
        self.high_bytes = 0
        """The most bytes ever buffered at once."""

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes

    @property
    def ended(self) -> bool:
        """True once the producer finished (and nothing more will be put)."""
        return self._ended

    def full(self) -> bool:
        items = self._items
        return bool(items) and (len(items) >= self.max_events or self._bytes >= self.max_bytes)

    def try_put(self, event: Event) -> bool:
        """Append ``event`` if there is room; ``False`` if the buffer is full."""
        items = self._items
        if items and (len(items) >= self.max_events or self._bytes >= self.max_bytes):
            return False
        size = event.size
        items.append((event, size))
        self._bytes += size
        if len(items) > self.high_events:
            self.high_events = len(items)
        if self._bytes > self.high_bytes:
            self.high_bytes = self._bytes
        getter = self._getter
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)
        return True

    async def put(self, event: Event) -> bool:
        """Append ``event``, waiting for room. Returns whether it had to wait."""
        waited = False
        while not self.try_put(event):
            if self._ended:
                return waited  # the consumer is gone: nothing to wait for
            waited = True
            fut = self._putter = asyncio.get_running_loop().create_future()
            await fut
        return waited

    def finish(self, error: ClientError | None = None) -> None:
        """No more events; the consumer gets ``error`` (if any) after the buffered ones."""
        if self._ended:
            return
        self._ended = True
        self._end = error
        self._wake_getter()
        self._wake_putter()

    def discard(self) -> None:
        """The consumer left: drop what is buffered and release a waiting producer."""
        self._items.clear()
        self._bytes = 0
        self._ended = True
        self._wake_putter()
        self._wake_getter()

    async def get(self) -> Event | None:
        """The next event; ``None`` at the end. Raises the producer's error at the end."""
        items = self._items
        while not items:
            if self._ended:
                if self._end is not None:
                    raise self._end
                return None
            fut = self._getter = asyncio.get_running_loop().create_future()
            await fut
        event, size = items.popleft()
        self._bytes -= size
        if self._putter is not None and not self.full():
            self._wake_putter()
        return event

    def get_nowait(self) -> Event | None:
        """The next event if one is buffered, else ``None`` (never raises the end)."""
        if not self._items:
            return None
        event, size = self._items.popleft()
        self._bytes -= size
        if self._putter is not None and not self.full():
            self._wake_putter()
        return event

    def _wake_getter(self) -> None:
        getter = self._getter
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)

    def _wake_putter(self) -> None:
        putter = self._putter
        if putter is not None:
            self._putter = None
            if not putter.done():
                putter.set_result(None)
