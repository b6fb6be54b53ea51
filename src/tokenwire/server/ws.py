"""WebSocket at ``/v1/ws``: several streams multiplexed on one connection.

The protocol is in docs/protocol.md ("WebSocket"). The shape of a connection:

- one coroutine (the ASGI call) receives the client's messages and handles
  them one at a time, in order: ``start``, ``subscribe``, ``unsubscribe``,
  ``cancel``. A bad message gets an ``error`` frame and the loop goes on;
- each subscribed stream has one reader task, owned by the connection. It reads
  the stream's cursor in batches, like the SSE endpoint, and a ``heartbeat``
  frame goes out when the connection has been silent for ``heartbeat_s``. Each
  frame is one WebSocket message; the frames of a batch are written back to
  back under the connection's send lock, so frames of different streams never
  interleave inside a batch. As every message costs a socket write where SSE
  writes a whole batch at once, a batch longer than :data:`MERGE_AFTER` is
  already a catch-up and is coalesced (design.md §2). A client that connects
  with ``?batch=1`` gets the text frames of a batch in one message, one frame a
  line, and the SSE threshold (``merge_after``);
- ``unsubscribe``, the end of the stream and the end of the connection stop a
  reader and close its subscription: that is *leave* (the stream's grace period
  starts when its last subscriber is gone). Only ``cancel`` *stops* a stream.

An event's frame is encoded once and shared by every WebSocket subscriber
(:meth:`Event.encoded`); ``tensor.chunk`` events go as binary frames
(:mod:`tokenwire.tensors.wire`). uvicorn's ``ws_max_size`` refuses over-size
messages with close code 1009, and so does this module when run under a server
with a larger limit; ping/pong is uvicorn's ``ws_ping_interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.types import Message, Receive, Scope, Send

from tokenwire.errors import (
    InvalidRequest,
    LimitExceeded,
    StreamLagged,
    StreamNotFound,
    TokenwireError,
    excerpt,
)
from tokenwire.events import TENSOR_CHUNK, Event, dumps, loads
from tokenwire.server.access import CREATE, READ, STOP, Credentials, credentials_of
from tokenwire.server.fanout import Reader, SharedBatches
from tokenwire.server.offsets import seq_from_json
from tokenwire.server.services import Services
from tokenwire.tensors.wire import encode_chunk_frame

log = logging.getLogger("tokenwire")

TRANSPORT = "ws"
MAX_SUBSCRIPTIONS = 64
"""Streams one connection may be subscribed to at once."""
MAX_ID_CHARS = 128
MAX_SEQ = 2**63 - 1
MERGE_AFTER = 8
"""Without ``?batch=1``, a batch longer than this is a catch-up (at most ``merge_after``)."""
CLOSE_TOO_BIG = 1009  # RFC 6455 §7.4.1: "Message Too Big"


class BadMessage(InvalidRequest):
    """A client message that is not a well-formed op."""

    code = "bad_request"


class AlreadySubscribed(TokenwireError):
    status = 409
    code = "already_subscribed"

    def __init__(self, stream_id: str) -> None:
        super().__init__(f"this connection is already subscribed to {stream_id!r}")


def event_frame(stream_id: str, event: Event) -> tuple[str | bytes, int]:
    """An event's frame and its size in bytes: ``{"type":"event","stream":…,"seq":…,
    "kind":…,…}`` as text, or the binary chunk frame for ``tensor.chunk``."""
    if event.kind == TENSOR_CHUNK:
        frame = encode_chunk_frame(stream_id, event)
        return frame, len(frame)
    text = b'{"type":"event","stream":' + dumps(stream_id) + b"," + event.json()[1:]
    return text.decode(), len(text)


Encoded = tuple[list[str | bytes], int, int]
"""A batch as WebSocket messages (text or binary), with its frame count and size."""


def _frames(stream_id: str, frames: list[Event]) -> list[tuple[str | bytes, int]]:
    encode = functools.partial(event_frame, stream_id)
    return [event.encoded(TRANSPORT, encode) for event in frames]


def one_message_a_frame(stream_id: str, frames: list[Event]) -> Encoded:
    encoded = _frames(stream_id, frames)
    return [frame for frame, _ in encoded], len(frames), sum(size for _, size in encoded)


def one_message_a_batch(stream_id: str, frames: list[Event]) -> Encoded:
    """``?batch=1``: consecutive text frames joined by newlines; binary ones alone."""
    messages: list[str | bytes] = []
    lines: list[str] = []
    nbytes = 0
    for frame, size in _frames(stream_id, frames):
        nbytes += size
        if isinstance(frame, str):
            lines.append(frame)
            continue
        if lines:
            messages.append("\n".join(lines))
            nbytes += len(lines) - 1
            lines = []
        messages.append(frame)
    if lines:
        messages.append("\n".join(lines))
        nbytes += len(lines) - 1
    return messages, len(frames), nbytes


def control(kind: str, **fields: Any) -> str:
    """A control frame as text: ``{"type": kind, …}``, leaving out fields that are None."""
    return dumps({"type": kind, **{k: v for k, v in fields.items() if v is not None}}).decode()


def _request_id(msg: dict[str, Any]) -> str | int | None:
    value = msg.get("id")
    if value is None:
        return None
    if isinstance(value, str) and len(value) <= MAX_ID_CHARS:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_SEQ:
        return value
    raise BadMessage(f"'id' must be a string of at most {MAX_ID_CHARS} characters or an integer")


def _stream_id(msg: dict[str, Any]) -> str:
    value = msg.get("stream")
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS:
        raise BadMessage("'stream' must be a stream id (a non-empty string)")
    return value


class Connection:
    """One WebSocket connection: its readers, its send lock and its op handlers."""

    def __init__(self, endpoint: WebSocketEndpoint, send: Send, *, batch: bool = False) -> None:
        self.services = endpoint.services
        self.hub = endpoint.services.hub
        self.config = endpoint.services.config
        self.max_subscriptions = endpoint.max_subscriptions
        self._send = send
        self.batch = batch
        self.credentials: Credentials = credentials_of({})
        self.encode = endpoint.batched if batch else endpoint.framed
        self._lock = asyncio.Lock()
        self.readers: dict[str, Reader] = {}
        # Heartbeats: one timer per connection that re-arms itself lazily and wakes
        # a reader to send one, rather than a timeout on every read (the hot path).
        self._loop = asyncio.get_running_loop()
        self.last_sent = self._loop.time()
        self.heartbeat_due = False
        self._timer = self._loop.call_at(self.last_sent + self.config.heartbeat_s, self._tick)
        self._ops: dict[str, Callable[[dict[str, Any], str | int | None], Awaitable[None]]] = {
            "start": self.op_start,
            "subscribe": self.op_subscribe,
            "unsubscribe": self.op_unsubscribe,
            "cancel": self.op_cancel,
        }

    # -- sending -------------------------------------------------------------------

    def _tick(self) -> None:
        interval = self.config.heartbeat_s
        due = self.last_sent + interval
        now = self._loop.time()
        if now >= due - 0.005:  # timers may fire a hair early
            for reader in self.readers.values():
                self.heartbeat_due = True
                reader.sub.wake()
                break
            due = now + interval
        self._timer = self._loop.call_at(due, self._tick)

    async def send_text(self, text: str) -> None:
        async with self._lock:
            await self._send({"type": "websocket.send", "text": text})
            self.last_sent = self._loop.time()

    async def send_heartbeat(self) -> None:
        self.heartbeat_due = False
        if self._loop.time() - self.last_sent >= self.config.heartbeat_s - 0.005:
            await self.send_text(control("heartbeat", ts=round(time.time(), 3)))

    async def send_error(
        self, code: str, message: str, *, id: str | int | None = None, stream: str | None = None
    ) -> None:
        await self.send_text(control("error", code=code, message=message, id=id, stream=stream))

    async def send_messages(self, messages: list[str | bytes]) -> None:
        send = self._send
        async with self._lock:
            for message in messages:
                if isinstance(message, str):
                    await send({"type": "websocket.send", "text": message})
                else:
                    await send({"type": "websocket.send", "bytes": message})
            self.last_sent = self._loop.time()

    # -- receiving -----------------------------------------------------------------

    async def run(self, receive: Receive) -> None:
        """Handle messages until the client goes away (or sends an over-size one)."""
        limit = self.config.max_ws_message_bytes
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                return
            if kind != "websocket.receive":
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

    async def handle(self, text: str) -> None:
        req_id: str | int | None = None
        stream: str | None = None
        try:
            try:
                msg = loads(text)
            except ValueError:
                raise BadMessage("the message is not valid JSON") from None
            if not isinstance(msg, dict):
                raise BadMessage("a message must be a JSON object with an 'op'")
            req_id = _request_id(msg)
            op = msg.get("op")
            handler = self._ops.get(op) if isinstance(op, str) else None
            if handler is None:
                raise BadMessage(
                    f"unknown op {excerpt(op)}; expected one of: start, subscribe, unsubscribe, "
                    "cancel"
                )
            if op != "start":
                stream = msg["stream"] = _stream_id(msg)
            await handler(msg, req_id)
        except TokenwireError as exc:
            await self.send_error(exc.code, exc.message, id=req_id, stream=stream)

    # -- ops -----------------------------------------------------------------------

    async def op_start(self, msg: dict[str, Any], req_id: str | int | None) -> None:
        self.services.access.check(self.credentials, None, CREATE)
        self.services.access.admit_start(self.credentials)
        self._check_room()
        started = await self.services.start_generation(msg.get("request"))
        stream_id = started["id"]
        await self.send_text(
            control("started", id=req_id, stream=stream_id, status=started["status"])
        )
        try:
            await self.subscribe(stream_id, 0)
        except TokenwireError as exc:
            await self.send_error(exc.code, exc.message, id=req_id, stream=stream_id)

    async def op_subscribe(self, msg: dict[str, Any], req_id: str | int | None) -> None:
        try:
            after = seq_from_json(msg.get("after"), "'after'")
        except InvalidRequest as exc:
            raise BadMessage(exc.message) from None
        self.services.access.check(self.credentials, msg["stream"], READ, msg.get("token"))
        await self.subscribe(msg["stream"], after)

    async def op_unsubscribe(self, msg: dict[str, Any], req_id: str | int | None) -> None:
        stream_id = msg["stream"]
        reader = self.readers.pop(stream_id, None)
        if reader is not None:
            await reader.aclose()
        await self.send_text(control("unsubscribed", id=req_id, stream=stream_id))

    async def op_cancel(self, msg: dict[str, Any], req_id: str | int | None) -> None:
        # Subscribers (this connection among them) get the terminal `cancelled` event.
        self.services.access.check(self.credentials, msg["stream"], STOP, msg.get("token"))
        await self.hub.cancel(msg["stream"])

    # -- subscriptions -------------------------------------------------------------

    def _check_room(self) -> None:
        if len(self.readers) >= self.max_subscriptions:
            raise LimitExceeded(
                "too_many_subscriptions",
                f"a connection may hold at most {self.max_subscriptions} subscriptions",
            )

    async def subscribe(self, stream_id: str, after: int) -> None:
        if stream_id in self.readers:
            raise AlreadySubscribed(stream_id)
        self._check_room()
        sub = self.hub.subscribe(stream_id, after, transport=TRANSPORT)
        try:
            opened = await sub.open()
            await self.send_text(control("open", **opened))
        except BaseException:
            sub.close()
            raise
        self.readers[stream_id] = Reader(
            sub, self._pump, self._forget, name=f"tokenwire:ws:{stream_id}"
        )

    def _forget(self, reader: Reader) -> None:
        if self.readers.get(reader.sub.stream_id) is reader:
            del self.readers[reader.sub.stream_id]

    async def _pump(self, reader: Reader) -> None:
        """Read one stream's cursor and write its frames until it ends or is stopped."""
        sub = reader.sub
        cfg = self.config
        metrics = self.hub.metrics
        try:
            while not reader.stopped and not sub.finished:
                if self.heartbeat_due:
                    await self.send_heartbeat()
                try:
                    batch = await sub.read(cfg.max_batch_events)
                except (StreamLagged, StreamNotFound) as exc:
                    # The client resubscribes after its last seq and gets open{recovered:false}.
                    await self.send_error(exc.code, exc.message, stream=sub.stream_id)
                    break
                if reader.stopped:
                    break
                if not batch:
                    if sub.finished:
                        break
                    continue  # woken for a heartbeat
                messages, frames, nbytes = self.encode(sub.stream_id, batch)
                await self.send_messages(messages)
                metrics.inc("tokenwire_events_delivered_total", frames, TRANSPORT)
                metrics.inc("tokenwire_bytes_delivered_total", nbytes, TRANSPORT)
                if sub.finished:
                    break
        except OSError:
            pass  # the client went away; the receive loop sees the disconnect
        except Exception:
            log.exception("WebSocket reader of %s failed", sub.stream_id)
            with contextlib.suppress(OSError):
                await self.send_error("internal_error", "delivery failed", stream=sub.stream_id)

    async def aclose(self) -> None:
        """Stop every reader and wait for them: no task outlives the connection."""
        self._timer.cancel()
        readers = list(self.readers.values())
        self.readers.clear()
        await asyncio.gather(*(reader.aclose() for reader in readers))


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

    def __init__(self, services: Services, max_subscriptions: int = MAX_SUBSCRIPTIONS) -> None:
        self.services = services
        self.max_subscriptions = max_subscriptions
        merge_after = services.config.merge_after
        # One message a frame makes each frame cost a socket write, where SSE writes a
        # batch at once: catch up (merge) sooner, unless the client takes batches.
        self.framed = SharedBatches(one_message_a_frame, min(merge_after, MERGE_AFTER))
        self.batched = SharedBatches(one_message_a_batch, merge_after)
        services.hub.metrics.describe(
            "tokenwire_events_delivered_total", "events written to subscribers"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        conn = Connection(self, send, batch=_batch_requested(scope))
        conn.credentials = credentials_of(scope)
        try:
            await conn.run(receive)
        except OSError:
            pass  # a send found the client gone
        finally:
            await conn.aclose()


def routes(services: Services) -> list[BaseRoute]:
    return [WebSocketRoute("/v1/ws", WebSocketEndpoint(services))]
