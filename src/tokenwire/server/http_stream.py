"""Resumable HTTP event streams: SSE and NDJSON, as raw ASGI endpoints.

A thin adapter around the session core: the resume offset is parsed
(docs/protocol.md, "Limits and timeouts": resume offsets), the subscription opened, and
:func:`~tokenwire.core.http_response.stream_response` drives it with the
transport's encoder (:mod:`tokenwire.core.http_encoders`). Each write carries
every event the subscriber has not read yet, up to ``max_batch_events``; a long
catch-up merges consecutive tokens, encoded once for every subscriber reading the
same range.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from starlette.types import Receive, Scope, Send

from tokenwire.core.encoder import SharedBatches
from tokenwire.core.http_encoders import NDJSONEncoder, SSEEncoder, stream_headers
from tokenwire.core.http_response import stream_response
from tokenwire.core.shutdown import Connections
from tokenwire.errors import TokenwireError
from tokenwire.server.config import ServerConfig
from tokenwire.server.offsets import seq_from_text
from tokenwire.stream import Hub

HTTPEncoder = SSEEncoder | NDJSONEncoder


def sse_encoder(config: ServerConfig) -> SSEEncoder:
    return SSEEncoder(config.retry_ms, config.merge_after)


def ndjson_encoder(config: ServerConfig) -> NDJSONEncoder:
    return NDJSONEncoder(config.merge_after)


# The names before the session core (bench/endpoint_cost.py, embedding code).
SSECodec = sse_encoder
NDJSONCodec = ndjson_encoder


def parse_after(scope: Scope, headers: dict[bytes, bytes]) -> int:
    """``?after=N`` (URL-decoded) wins over the ``Last-Event-ID`` header; both absent
    means 0 (docs/protocol.md, "Limits and timeouts": resume offsets)."""
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
        codec: HTTPEncoder,
        on_error: Callable[[TokenwireError], Any],
        connections: Connections | None = None,
    ) -> None:
        self.hub = hub
        self.config = config
        self.encoder = codec
        self.on_error = on_error
        self.connections = connections
        self.shared: SharedBatches[tuple[bytes, int]] = SharedBatches(
            codec.batch, codec.merge_after
        )
        m = hub.metrics
        m.describe("tokenwire_events_delivered_total", "events written to subscribers")
        m.describe("tokenwire_bytes_delivered_total", "bytes written to subscribers")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        stream_id = scope["path_params"]["stream_id"]
        try:
            after = parse_after(scope, headers)
            sub = self.hub.subscribe(stream_id, after, transport=self.encoder.transport)
            open_frame = await sub.open()
        except TokenwireError as exc:
            await self.on_error(exc)(scope, receive, send)
            return
        try:
            if sub.finished:
                await no_content(sub.stream_id, send)
                return
            cfg = self.config
            await stream_response(
                sub,
                self.encoder,
                open_frame,
                stream_headers(self.encoder.media_type, sub.stream_id),
                receive,
                send,
                heartbeat_s=cfg.heartbeat_s,
                max_batch_events=cfg.max_batch_events,
                metrics=self.hub.metrics,
                shared=self.shared,
                connections=self.connections,
            )
        finally:
            sub.close()


async def no_content(stream_id: str, send: Send) -> None:
    """Resumed at or past the terminal event: nothing will ever come. 204 per WHATWG
    HTML ("a client can be told to stop reconnecting using the HTTP 204 No Content
    response code"), on NDJSON and the chat views too, so clients need one rule
    (docs/protocol.md, "Resume edges")."""
    headers = [(b"cache-control", b"no-cache"), (b"x-tokenwire-stream", stream_id.encode())]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
