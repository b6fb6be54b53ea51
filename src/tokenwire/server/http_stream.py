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

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tokenwire.core.broadcast import MAX_COALESCE_MS, Broadcasts
from tokenwire.core.encoder import SharedBatches
from tokenwire.core.http_encoders import NDJSONEncoder, SSEEncoder, stream_headers
from tokenwire.core.http_response import stream_response
from tokenwire.core.shutdown import Connections
from tokenwire.errors import InvalidRequestError, TokenwireError
from tokenwire.server.config import ServerConfig
from tokenwire.server.errors import error_response
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


def _query(scope: Scope) -> dict[str, list[str]]:
    return parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)


def parse_coalesce_ms(scope: Scope, default: int) -> int:
    """``?coalesce_ms=N``: the flush window, 0..MAX_COALESCE_MS ms (docs/protocol.md,
    "Coalescing"); absent: the server's default."""
    values = _query(scope).get("coalesce_ms")
    if values is None:
        return max(0, min(default, MAX_COALESCE_MS))
    raw = values[-1]
    if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_COALESCE_MS:
        raise InvalidRequestError(
            f"'coalesce_ms' must be an integer number of milliseconds, 0..{MAX_COALESCE_MS}"
        )
    return int(raw)


def parse_after(scope: Scope, headers: dict[bytes, bytes]) -> int:
    """``?after=N`` (URL-decoded) wins over the ``Last-Event-ID`` header; both absent
    means 0 (docs/protocol.md, "Limits and timeouts": resume offsets)."""
    values = _query(scope).get("after")
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
        *,
        broadcast: bool = True,
    ) -> None:
        self.hub = hub
        self.config = config
        self.encoder = codec
        self.on_error = on_error
        self.connections = connections
        self.shared: SharedBatches[tuple[bytes, int]] = SharedBatches(
            codec.batch, codec.merge_after
        )
        self.broadcasts: Broadcasts | None = None
        if broadcast and config.broadcast:
            self.broadcasts = Broadcasts(
                hub, self.shared, codec.transport, config.max_batch_events, hub.metrics
            )
        m = hub.metrics
        m.describe("tokenwire_events_delivered_total", "events written to subscribers")
        m.describe("tokenwire_bytes_delivered_total", "bytes written to subscribers")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.serve(scope["path_params"]["stream_id"], scope, receive, send)

    async def serve(self, stream_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer ``stream_id`` resumed from the request's offset: an error (404 for
        an unknown stream) before anything is streamed, 204 at the end, else 200."""
        headers = dict(scope["headers"])
        try:
            after = parse_after(scope, headers)
            coalesce_ms = parse_coalesce_ms(scope, self.config.coalesce_ms)
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
                broadcasts=self.broadcasts,
                coalesce_s=coalesce_ms / 1000,
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


class HubStreamResponse(Response):
    """One stream of a :class:`~tokenwire.stream.Hub` as the answer of the
    application's own route, exactly as ``/v1/streams/{id}/events`` (or
    ``/ndjson``) answers it: the open frame, resume from ``?after=`` or
    ``Last-Event-ID``, heartbeats, 204 at the end, and a JSON error (404
    ``not_found`` for an unknown id, 422 for a bad offset) before anything is
    streamed::

        @app.get("/answers/{stream_id}")
        async def answer(stream_id: str) -> HubStreamResponse:
            return tokenwire.hub_stream_response(hub, stream_id)
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        hub: Hub,
        stream_id: str,
        *,
        format: str = "sse",
        config: ServerConfig | None = None,
        status_code: int = 200,  # FastAPI's OpenAPI reads the default from here
    ) -> None:
        config = config or ServerConfig()
        if format not in ("sse", "ndjson"):
            raise ValueError(f"format must be 'sse' or 'ndjson', not {format!r}")
        encoder = sse_encoder(config) if format == "sse" else ndjson_encoder(config)
        # One endpoint a response: a broadcast of its own would serve one reader.
        self._endpoint = EventStreamEndpoint(hub, config, encoder, _json_error, broadcast=False)
        self.stream_id = stream_id
        self.status_code = status_code  # 200 once streaming; errors and 204 say theirs
        self.background = None
        self.raw_headers = stream_headers(encoder.media_type, stream_id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._endpoint.serve(self.stream_id, scope, receive, send)


def _json_error(exc: TokenwireError) -> Response:
    return error_response(exc.status, exc.code, exc.message)


def hub_stream_response(
    hub: Hub, stream_id: str, *, format: str = "sse", config: ServerConfig | None = None
) -> HubStreamResponse:
    """Serve ``stream_id`` of ``hub`` from your own Starlette or FastAPI route, SSE or
    NDJSON (see :class:`HubStreamResponse`); ``config`` gives the heartbeat, the
    ``retry:`` and the batching (``ServerConfig()``'s defaults)."""
    return HubStreamResponse(hub, stream_id, format=format, config=config)
