"""The connection loop shared by the chat-shaped HTTP adapters (OpenAI, AI SDK).

Those routes start a stream and answer the same request with it, in a foreign
wire format. A :class:`ChatFrames` object (one per connection: it keeps state,
such as whether a text part is open) turns tokenwire events into that format;
:func:`serve_sse` writes it the way ``http_stream`` writes SSE: one owned task
waits for ``http.disconnect`` and wakes the cursor, batches of events go out in
one write each, heartbeats fill the silences. A client that goes away only
leaves (the subscription closes and the stream's grace period starts); it never
stops the stream (design.md §2, stop is not leave).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, Protocol

from starlette.types import Message, Receive, Send

from tokenwire.asgi import wait_disconnect
from tokenwire.errors import StreamLagged, StreamNotFound, TokenwireError
from tokenwire.events import Event
from tokenwire.server.config import ServerConfig
from tokenwire.server.services import Services
from tokenwire.stream import Hub, Subscription


class ChatFrames(Protocol):
    """Encodes one connection's events in a chat wire format."""

    heartbeat: bytes

    def prelude(self) -> bytes:
        """Sent right after the headers, before any event."""
        ...

    def events(self, batch: list[Event]) -> bytes:
        """The bytes for a batch; after the terminal event, also the end marker."""
        ...


class _Disconnect:
    """The one task per connection that waits for ``http.disconnect`` and wakes the
    subscription's pending read. Cancelled by :meth:`close`, whoever ends the response."""

    def __init__(self, receive: Receive, sub: Subscription) -> None:
        self.seen = False
        self._sub = sub
        self._task = asyncio.ensure_future(wait_disconnect(receive))
        self._task.add_done_callback(self._on_done)

    def _on_done(self, _: asyncio.Future[Message]) -> None:
        self.seen = True
        self._sub.wake()

    async def close(self) -> None:
        self._task.remove_done_callback(self._on_done)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task


async def serve_sse(
    hub: Hub,
    config: ServerConfig,
    sub: Subscription,
    frames: ChatFrames,
    headers: Sequence[tuple[bytes, bytes]],
    receive: Receive,
    send: Send,
) -> None:
    """Answer with ``frames`` over SSE until the terminal event or a disconnect.
    The caller opened ``sub`` and closes it."""
    await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
    await send({"type": "http.response.body", "body": frames.prelude(), "more_body": True})
    watcher = _Disconnect(receive, sub)
    metrics = hub.metrics
    transport = sub.transport
    try:
        while not watcher.seen and not sub.finished:
            try:
                batch = await sub.read(config.max_batch_events, config.heartbeat_s)
            except (StreamLagged, StreamNotFound):
                break  # history is gone: end the response, the client sees no end marker
            if watcher.seen:
                return
            if not batch:
                if sub.finished:
                    break
                await send(
                    {"type": "http.response.body", "body": frames.heartbeat, "more_body": True}
                )
                continue
            body = frames.events(batch)
            if body:
                await send({"type": "http.response.body", "body": body, "more_body": True})
                metrics.inc("tokenwire_events_delivered_total", len(batch), transport)
                metrics.inc("tokenwire_bytes_delivered_total", len(body), transport)
            if sub.finished:
                break
        if not watcher.seen:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        await watcher.close()


async def read_to_end(
    config: ServerConfig, sub: Subscription, receive: Receive
) -> list[Event] | None:
    """Every event up to the terminal one, or None when the client went away first
    (the caller sends nothing then, and closing ``sub`` is only a leave)."""
    watcher = _Disconnect(receive, sub)
    events: list[Event] = []
    try:
        while not sub.finished:
            batch = await sub.read(config.max_batch_events, config.heartbeat_s)
            if watcher.seen:
                return None
            events.extend(batch)
        return events
    finally:
        await watcher.close()


async def start_and_subscribe(
    services: Services, body: dict[str, Any], transport: str
) -> Subscription:
    """Start a generation and subscribe to it from seq 0. Should the subscription be
    refused (a limit), the stream is stopped at once rather than left to its grace."""
    started = await services.start_generation(body)
    sub = services.hub.subscribe(started["id"], 0, transport=transport)
    try:
        await sub.open()
    except TokenwireError:
        await services.hub.cancel(started["id"], "no_subscribers")
        raise
    return sub
