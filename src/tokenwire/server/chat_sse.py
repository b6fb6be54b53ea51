"""The chat-shaped HTTP adapters' connection (OpenAI, AI SDK), on the session core.

Those routes start a stream and answer the same request with it, in a foreign
wire format: a :class:`~tokenwire.core.http_encoders.ChatFrames` object (one per
connection: it keeps state, such as whether a text part is open) wrapped as an
encoder, driven like every other HTTP stream
(:func:`~tokenwire.core.http_response.stream_response`). A client that goes
away only leaves (the subscription closes and the stream's grace period
starts); it never stops the stream (docs/protocol.md, "WebSocket": stop is not
leave).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.types import Receive, Send

from tokenwire.core.driver import Stop
from tokenwire.core.http_encoders import ChatEncoder, ChatFrames
from tokenwire.core.http_response import Disconnect, stream_response
from tokenwire.core.shutdown import Connections
from tokenwire.errors import TokenwireError
from tokenwire.events import Event
from tokenwire.server.config import ServerConfig
from tokenwire.server.services import Services
from tokenwire.stream import Hub, Subscription

__all__ = ["ChatFrames", "read_to_end", "serve_sse", "start_and_subscribe"]


async def serve_sse(
    hub: Hub,
    config: ServerConfig,
    sub: Subscription,
    frames: ChatFrames,
    headers: Sequence[tuple[bytes, bytes]],
    receive: Receive,
    send: Send,
    connections: Connections | None = None,
) -> None:
    """Answer with ``frames`` over SSE until the terminal event or a disconnect.
    The caller opened ``sub`` and closes it."""
    assert sub.open_frame is not None, "serve_sse takes an opened subscription"
    await stream_response(
        sub,
        ChatEncoder(frames, sub.transport),
        sub.open_frame,
        headers,
        receive,
        send,
        heartbeat_s=config.heartbeat_s,
        max_batch_events=config.max_batch_events,
        metrics=hub.metrics,
        connections=connections,
    )


async def read_to_end(
    config: ServerConfig, sub: Subscription, receive: Receive
) -> list[Event] | None:
    """Every event up to the terminal one, or None when the client went away first
    (the caller sends nothing then, and closing ``sub`` is only a leave)."""
    stop = Stop(sub)
    watcher = Disconnect(receive, stop)
    events: list[Event] = []
    try:
        while not sub.finished:
            batch = await sub.read(config.max_batch_events)
            if stop.stopped:
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
