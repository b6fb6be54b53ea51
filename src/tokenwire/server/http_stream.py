"""Resumable HTTP event streams: SSE and NDJSON, as raw ASGI endpoints.

One coroutine per connection and nothing else but one owned task that waits
for ``http.disconnect`` (cancelled when the response ends). Each write carries
every event the subscriber has not read yet, up to ``max_batch_events``; a
long catch-up merges consecutive tokens (design.md §2, slow consumers).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from starlette.types import Message, Receive, Scope, Send

from tokenwire import sse
from tokenwire.asgi import wait_disconnect
from tokenwire.errors import StreamLagged, StreamNotFound, TokenwireError
from tokenwire.events import Event, dumps
from tokenwire.server.config import ServerConfig
from tokenwire.server.fanout import SharedBatches
from tokenwire.server.offsets import seq_from_text
from tokenwire.stream import Hub, Subscription


class Codec:
    """How one HTTP streaming format frames the open frame, events and heartbeats."""

    transport = ""
    media_type = b""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config

    def prelude(self, open_frame: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def events(self, batch: list[Event]) -> bytes:
        raise NotImplementedError

    def heartbeat(self) -> bytes:
        raise NotImplementedError


class SSECodec(Codec):
    transport = "sse"
    media_type = b"text/event-stream; charset=utf-8"

    def prelude(self, open_frame: dict[str, Any]) -> bytes:
        return sse.frame(dumps(open_frame), event=sse.OPEN_EVENT, retry=self.config.retry_ms)

    def events(self, batch: list[Event]) -> bytes:
        if len(batch) == 1:
            return batch[0].sse()
        return b"".join([ev.sse() for ev in batch])

    def heartbeat(self) -> bytes:
        return sse.HEARTBEAT


class NDJSONCodec(Codec):
    transport = "ndjson"
    media_type = b"application/x-ndjson"

    def prelude(self, open_frame: dict[str, Any]) -> bytes:
        return dumps({"kind": "open", **open_frame}) + b"\n"

    def events(self, batch: list[Event]) -> bytes:
        return b"\n".join([ev.json() for ev in batch]) + b"\n"

    def heartbeat(self) -> bytes:
        return b'{"kind":"heartbeat","ts":%.3f}\n' % time.time()


def parse_after(scope: Scope, headers: dict[bytes, bytes]) -> int:
    """``?after=N`` (URL-decoded) wins over the ``Last-Event-ID`` header; both absent
    means 0."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    values = query.get("after")
    if values is not None:
        return seq_from_text(values[-1], "'after'")
    last_id = headers.get(b"last-event-id")
    return seq_from_text(
        last_id.decode("latin-1").strip() if last_id is not None else None, "Last-Event-ID"
    )


class EventStreamEndpoint:
    """``GET /v1/streams/{id}/events`` (SSE) or ``/ndjson``, resumable."""

    def __init__(
        self,
        hub: Hub,
        config: ServerConfig,
        codec: Codec,
        on_error: Callable[[TokenwireError], Any],
    ) -> None:
        self.hub = hub
        self.config = config
        self.codec = codec
        self.on_error = on_error
        self._encode = SharedBatches(self._body, config.merge_after)
        m = hub.metrics
        m.describe("tokenwire_events_delivered_total", "events written to subscribers")
        m.describe("tokenwire_bytes_delivered_total", "bytes written to subscribers")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        stream_id = scope["path_params"]["stream_id"]
        try:
            after = parse_after(scope, headers)
            sub = self.hub.subscribe(stream_id, after, transport=self.codec.transport)
            open_frame = await sub.open()
        except TokenwireError as exc:
            await self.on_error(exc)(scope, receive, send)
            return
        try:
            if sub.finished:
                await self._ended(sub, send)
            else:
                await self._serve(sub, open_frame, receive, send)
        finally:
            sub.close()

    async def _ended(self, sub: Subscription, send: Send) -> None:
        # Resumed at or past the terminal event: nothing will ever come. 204 per
        # WHATWG HTML ("a client can be told to stop reconnecting using the HTTP
        # 204 No Content response code"), on NDJSON too, so clients need one rule.
        headers = [(b"cache-control", b"no-cache"), (b"x-tokenwire-stream", sub.stream_id.encode())]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _body(self, stream_id: str, frames: list[Event]) -> tuple[bytes, int]:
        return self.codec.events(frames), len(frames)

    async def _serve(
        self, sub: Subscription, open_frame: dict[str, Any], receive: Receive, send: Send
    ) -> None:
        codec = self.codec
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", codec.media_type),
                    (b"cache-control", b"no-cache, no-transform"),
                    (b"x-accel-buffering", b"no"),
                    (b"x-tokenwire-stream", sub.stream_id.encode()),
                ],
            }
        )
        await send(
            {"type": "http.response.body", "body": codec.prelude(open_frame), "more_body": True}
        )

        disconnected = False

        def on_disconnect(_: asyncio.Future[Message]) -> None:
            nonlocal disconnected
            disconnected = True
            sub.wake()

        # The one task per connection: it only waits for http.disconnect, and is
        # cancelled when the response ends, whoever ends it.
        watcher = asyncio.ensure_future(wait_disconnect(receive))
        watcher.add_done_callback(on_disconnect)
        metrics = self.hub.metrics
        transport = codec.transport
        cfg = self.config

        # Heartbeats: one timer per connection that re-arms itself lazily, instead
        # of a timeout on every read. A read per write is the hot path of fan-out,
        # and a timer armed and cancelled per read cost about a third of its CPU.
        loop = asyncio.get_running_loop()
        interval = cfg.heartbeat_s
        last_sent = loop.time()
        heartbeat_due = False
        timer: asyncio.TimerHandle

        def check_heartbeat() -> None:
            nonlocal heartbeat_due, timer
            due = last_sent + interval
            if loop.time() >= due - 0.005:  # timers may fire a hair early
                heartbeat_due = True
                sub.wake()
                due = loop.time() + interval
            timer = loop.call_at(due, check_heartbeat)

        timer = loop.call_at(last_sent + interval, check_heartbeat)
        try:
            while not disconnected and not sub.finished:
                if heartbeat_due:
                    await send(
                        {"type": "http.response.body", "body": codec.heartbeat(), "more_body": True}
                    )
                    heartbeat_due, last_sent = False, loop.time()
                try:
                    batch = await sub.read(cfg.max_batch_events)
                except (StreamLagged, StreamNotFound):
                    break  # the client resubscribes and gets open{recovered:false}
                if disconnected:
                    return
                if not batch:
                    if sub.finished:
                        break
                    continue  # woken for a heartbeat
                if batch[0].binary is None and batch[-1].binary is None:
                    bodies = [self._encode(sub.stream_id, batch)]
                else:
                    # Tensor chunks go one write each: joining a window's worth of
                    # chunks would hold a second copy of it while the socket drains.
                    bodies = [(codec.events([ev]), 1) for ev in batch]
                for body, frames in bodies:
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                    metrics.inc("tokenwire_events_delivered_total", frames, transport)
                    metrics.inc("tokenwire_bytes_delivered_total", len(body), transport)
                heartbeat_due, last_sent = False, loop.time()
                if sub.finished:
                    break
            if not disconnected:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            timer.cancel()
            watcher.remove_done_callback(on_disconnect)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
