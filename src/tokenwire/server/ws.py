"""WebSocket at ``/v1/ws``: several streams multiplexed on one connection.

The protocol is in docs/protocol.md ("WebSocket"). This module is a thin
adapter around the session core (:mod:`tokenwire.core`):

- one coroutine (the ASGI call) receives the client's messages and handles
  them one at a time, in order, through the connection's
  :class:`~tokenwire.core.session.Session`: ``start``, ``subscribe``,
  ``unsubscribe``, ``cancel``. A bad message gets an ``error`` frame and the
  loop goes on;
- each subscribed stream is driven by the one driver with the
  :class:`~tokenwire.core.ws_encoder.WebSocketEncoder`: each frame one
  WebSocket message (or, with ``?batch=1``, the text frames of a batch in one
  message, one frame a line); the messages of a write go back to back under the
  connection's send lock, so frames of different streams never interleave
  inside a batch.

uvicorn's ``ws_max_size`` refuses over-size messages with close code 1009, and
so does this module when run under a server with a larger limit; ping/pong is
uvicorn's ``ws_ping_interval``. On shutdown the connection ends with close code
1001 (going away): one frame for all its subscriptions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.types import Message, Receive, Scope, Send

from tokenwire.core.broadcast import Broadcasts, FramedBatches, Frames
from tokenwire.core.encoder import SharedBatches
from tokenwire.core.ops import WEBSOCKET, AlreadySubscribed, BadOp, request_id
from tokenwire.core.session import Session
from tokenwire.core.ws_direct import direct_socket, text_frames
from tokenwire.core.ws_encoder import (
    TRANSPORT,
    WebSocketEncoder,
    control,
    event_frame,
    one_message_a_batch,
    one_message_a_frame,
)
from tokenwire.errors import TokenwireError
from tokenwire.events import loads
from tokenwire.server.access import credentials_of
from tokenwire.server.services import Services

__all__ = [
    "TRANSPORT",
    "AlreadySubscribed",
    "BadMessage",
    "WebSocketEndpoint",
    "event_frame",
    "routes",
]

CLOSE_TOO_BIG = 1009  # RFC 6455 §7.4.1: "Message Too Big"
CLOSE_GOING_AWAY = 1001  # RFC 6455 §7.4.1: "going away", e.g. a server going down

BadMessage = BadOp
"""A client message that is not a well-formed op (``bad_request``)."""


class Connection:
    """One WebSocket connection: the session's port (its send lock) and the op handlers."""

    def __init__(self, endpoint: WebSocketEndpoint, send: Send, scope: Scope) -> None:
        batch = _batch_requested(scope)
        self.endpoint = endpoint
        self.encoder = endpoint.batched_encoder if batch else endpoint.framed_encoder
        self.shared: SharedBatches[Any] | None = endpoint.batched if batch else endpoint.framed
        self._send = send
        self._lock = asyncio.Lock()
        broadcasts = endpoint.batched_broadcasts if batch else endpoint.framed_broadcasts
        self._direct = direct_socket(send) if broadcasts is not None else None
        self.session = Session(
            endpoint.services,
            self,
            credentials_of(scope),
            endpoint.services.config.max_subscriptions_per_connection,
            broadcasts=broadcasts if self._direct is not None else None,
        )
        self._ops: dict[str, Callable[[dict[str, Any], str | int | None], Awaitable[None]]] = {
            "start": self.op_start,
            "subscribe": self.op_subscribe,
            "unsubscribe": self.op_unsubscribe,
            "cancel": self.op_cancel,
        }
        self.closing = False

    # -- the session's port ----------------------------------------------------------

    async def write(self, messages: list[str | bytes]) -> None:
        send = self._send
        async with self._lock:
            for message in messages:
                if isinstance(message, str):
                    await send({"type": "websocket.send", "text": message})
                else:
                    await send({"type": "websocket.send", "bytes": message})

    control = write

    # -- the broadcast's DirectWrite (core/broadcast.py) -------------------------------

    def writable(self) -> bool:
        # Not while a write of another stream's batch is under way: its messages
        # go back to back.
        direct = self._direct
        return (
            direct is not None
            and not self._lock.locked()
            and not self.closing
            and direct.writable()
        )

    def try_write(self, frames: Frames) -> bool:
        if not self.writable():
            return False
        assert self._direct is not None
        self._direct.write(frames.body)
        return True

    async def ready(self) -> None:
        return None

    async def joined(self, stream_id: str) -> None:
        return None

    async def send_text(self, text: str) -> None:
        await self.write([text])
        self.session.wrote()

    async def send_error(
        self, code: str, message: str, *, id: str | int | None = None, stream: str | None = None
    ) -> None:
        await self.send_text(control("error", code=code, message=message, id=id, stream=stream))

    # -- receiving -----------------------------------------------------------------

    async def run(self, receive: Receive) -> None:
        """Handle messages until the client goes away (or sends an over-size one)."""
        limit = self.endpoint.services.config.max_ws_message_bytes
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                return
            if kind != "websocket.receive" or self.closing:
                continue
            if _too_big(message, limit):
                await self._send(
                    {"type": "websocket.close", "code": CLOSE_TOO_BIG, "reason": "message too big"}
                )
                return
            text = message.get("text")
            if text is None:
                await self.send_error("bad_request", "send ops as JSON text frames, not binary")
                continue
            await self.handle(text)
            # Ops a client sent back to back are all queued already, and handling one
            # need not wait: without a yield a flood of ops would hold the loop.
            await asyncio.sleep(0)

    async def handle(self, text: str) -> None:
        req_id: str | int | None = None
        stream: str | None = None
        try:
            try:
                msg = loads(text)
            except ValueError:
                raise WEBSOCKET.bad("the message is not valid JSON") from None
            if not isinstance(msg, dict):
                raise WEBSOCKET.bad("a message must be a JSON object with an 'op'")
            req_id = request_id(msg, WEBSOCKET)
            op = msg.get("op")
            handler = self._ops.get(op) if isinstance(op, str) else None
            if handler is None:
                raise WEBSOCKET.unknown(op)
            if op != "start":
                stream = msg["stream"] = WEBSOCKET.stream_id(msg)
            await handler(msg, req_id)
        except TokenwireError as exc:
            await self.send_error(exc.code, exc.message, id=req_id, stream=stream)

    # -- ops -----------------------------------------------------------------------

    async def op_start(self, msg: dict[str, Any], req_id: str | int | None) -> None:
        started = await self.session.start(msg.get("request"))
        stream_id = started["id"]
        await self.send_text(
            control("started", id=req_id, stream=stream_id, status=started["status"])
        )
        try:
            await self.session.attach(stream_id, 0, self.session.config.coalesce_ms / 1000)
        except TokenwireError as exc:
            await self.send_error(exc.code, exc.message, id=req_id, stream=stream_id)

    async def op_subscribe(self, msg: dict[str, Any], req_id: str | int | None) -> None:
        after = WEBSOCKET.after_seq(msg)
        coalesce_s = WEBSOCKET.coalesce_s(msg, self.session.config.coalesce_ms)
        await self.session.subscribe(msg["stream"], after, msg.get("token"), coalesce_s)

    async def op_unsubscribe(self, msg: dict[str, Any], req_id: str | int | None) -> None:
        await self.session.unsubscribe(msg["stream"])
        await self.send_text(control("unsubscribed", id=req_id, stream=msg["stream"]))

    async def op_cancel(self, msg: dict[str, Any], req_id: str | int | None) -> None:
        await self.session.cancel(msg["stream"], msg.get("token"))

    # -- the end -----------------------------------------------------------------------

    multiplexed = True

    async def shutdown(self, timeout: float) -> None:
        """The server is stopping: close code 1001, the connection's final frame
        (core/shutdown.py), then its subscriptions end."""
        self.closing = True
        with contextlib.suppress(OSError, RuntimeError):  # already closed
            await asyncio.wait_for(
                self._send(
                    {
                        "type": "websocket.close",
                        "code": CLOSE_GOING_AWAY,
                        "reason": "server shutdown",
                    }
                ),
                timeout,
            )
        await self.session.aclose()


def _too_big(message: Message, limit: int) -> bool:
    text = message.get("text")
    if text is not None:
        # A str's UTF-8 size is at most 4 bytes a character: encode only when it matters.
        return len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit)
    data = message.get("bytes")
    return data is not None and len(data) > limit


def _batch_requested(scope: Scope) -> bool:
    query = scope.get("query_string", b"").decode("latin-1")
    return any(part in ("batch=1", "batch=true") for part in query.split("&"))


class WebSocketEndpoint:
    """The ASGI app of ``/v1/ws``."""

    def __init__(self, services: Services) -> None:
        self.services = services
        merge_after = services.config.merge_after
        self.framed_encoder = WebSocketEncoder(merge_after)
        self.batched_encoder = WebSocketEncoder(merge_after, batch=True)
        # Shared by every connection: a batch is encoded once per range and mode.
        self.framed = SharedBatches(one_message_a_frame, self.framed_encoder.merge_after)
        self.batched = SharedBatches(one_message_a_batch, self.batched_encoder.merge_after)
        # Live connections of a stream get each batch's frames in one pass.
        self.framed_broadcasts: Broadcasts | None = None
        self.batched_broadcasts: Broadcasts | None = None
        config = services.config
        if config.broadcast:
            hub = services.hub
            self.framed_broadcasts = Broadcasts(
                hub,
                FramedBatches(self.framed, text_frames),
                TRANSPORT,
                config.max_batch_events,
                hub.metrics,
            )
            self.batched_broadcasts = Broadcasts(
                hub,
                FramedBatches(self.batched, text_frames),
                TRANSPORT,
                config.max_batch_events,
                hub.metrics,
            )
        services.hub.metrics.describe(
            "tokenwire_events_delivered_total", "events written to subscribers"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        conn = Connection(self, send, scope)
        links = self.services.connections
        links.add(conn)
        try:
            await conn.run(receive)
        except OSError:
            pass  # a send found the client gone
        finally:
            links.discard(conn)
            await conn.session.aclose()


def routes(services: Services) -> list[BaseRoute]:
    return [WebSocketRoute("/v1/ws", WebSocketEndpoint(services))]
