"""``Client``: the front door of the Python client.

::

    async with Client("http://127.0.0.1:8000", transport="sse") as client:
        handle = await client.start(model="scripted", prompt="hello", max_tokens=32)
        async for event in handle:
            ...

``start`` starts a generation and subscribes to it; ``subscribe`` follows an
existing stream from a seq. Both return a
:class:`~tokenwire.client.handle.StreamHandle`. The client owns a
:class:`~tokenwire.client.manager.TransportManager` (``client.manager``) with
the pools, limits, health and metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict, Unpack

import httpx

from tokenwire.client.auth import TokenRefresh
from tokenwire.client.handle import Callback, StreamHandle
from tokenwire.client.manager import KINDS, TransportManager
from tokenwire.client.policy import ReconnectPolicy
from tokenwire.client.transport import StateEvent

TRANSPORTS = (*KINDS, "auto")


class GenerationParams(TypedDict, total=False):
    """The request parameters :meth:`Client.start` sends (docs/protocol.md), typed so
    that a checker catches a typo (``max_tokenz``); the server refuses unknown ones."""

    max_tokens: int
    temperature: float
    top_p: float
    stop: str | Sequence[str]
    seed: int
    delay_ms: float
    """Pace of the ``scripted`` model, per token."""
    top_logprobs: int


class StartOptions(GenerationParams, total=False):
    """Everything :meth:`Client.start` takes by keyword (the sync facade forwards it)."""

    messages: Sequence[Mapping[str, str]]
    prompt: str
    transport: str
    on_chunk: Callback
    on_done: Callback
    on_error: Callback
    on_state: Callable[[StateEvent], Any]


class Client:
    """A client of one tokenwire server.

    - ``transport``: ``sse``, ``ndjson``, ``ws`` (one multiplexed connection) or
      ``auto`` (WebSocket when the server accepts it, else SSE).
    - ``api_key``: sent as ``Authorization: Bearer <key>`` on every request.
    - ``token``: a stream's ``read_token`` or ``control_token`` instead (it reads,
      or also stops, that one stream); ``refresh_token``: called (sync or async) for
      a new one when the server says it expired, and the request is sent again.
    - ``reconnect``: the :class:`ReconnectPolicy` (backoff, attempts, breaker).
    - ``heartbeat_s``: the server's heartbeat interval; no bytes for twice that
      means the link is dead and the stream resumes on a new one.
    - ``max_streams``, ``buffer_events``, ``buffer_bytes``, ``max_line_bytes``,
      ``max_event_bytes``: the bounds on what the client holds (see
      :class:`TransportManager`).
    """

    def __init__(
        self,
        url: str,
        transport: str = "sse",
        api_key: str | None = None,
        *,
        token: str | None = None,
        refresh_token: TokenRefresh | None = None,
        reconnect: ReconnectPolicy | None = None,
        heartbeat_s: float | None = 15.0,
        max_streams: int = 256,
        buffer_events: int = 256,
        buffer_bytes: int = 4 << 20,
        max_line_bytes: int = 1 << 20,
        max_event_bytes: int = 8 << 20,
        request_timeout_s: float = 30.0,
        ws_inbox: int = 256,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"unknown transport {transport!r}; expected one of {TRANSPORTS}")
        self.url = url.rstrip("/")
        self.transport = transport
        self.manager = TransportManager(
            url,
            api_key=api_key,
            token=token,
            refresh_token=refresh_token,
            policy=reconnect,
            heartbeat_s=heartbeat_s,
            max_streams=max_streams,
            buffer_events=buffer_events,
            buffer_bytes=buffer_bytes,
            max_line_bytes=max_line_bytes,
            max_event_bytes=max_event_bytes,
            request_timeout_s=request_timeout_s,
            ws_inbox=ws_inbox,
            http=http,
        )

    async def start(
        self,
        model: str | None = None,
        messages: Sequence[Mapping[str, str]] | None = None,
        prompt: str | None = None,
        *,
        transport: str | None = None,
        on_chunk: Callback | None = None,
        on_done: Callback | None = None,
        on_error: Callback | None = None,
        on_state: Callable[[StateEvent], Any] | None = None,
        **params: Unpack[GenerationParams],
    ) -> StreamHandle:
        """Start a generation (``messages`` or ``prompt``, and any request parameters:
        ``max_tokens``, ``temperature``, ``stop``…) and return its handle, subscribed
        from the first event."""
        if (messages is None) == (prompt is None):
            raise ValueError("pass exactly one of messages= or prompt=")
        body: dict[str, Any] = dict(params)
        if isinstance(body.get("stop"), tuple):
            body["stop"] = list(body["stop"])
        if model is not None:
            body["model"] = model
        if messages is not None:
            body["messages"] = [dict(m) for m in messages]
        else:
            body["prompt"] = prompt
        manager = self.manager
        kind = await manager.resolve(transport or self.transport)
        manager.check_room()
        t0 = time.perf_counter()  # time to first token counts from the request
        stream_id, route = await manager.start_stream(kind, body)
        t = manager.create_transport(kind, stream_id, route=route)
        t.tracker.restart(t0)
        return StreamHandle(
            t,
            on_chunk=on_chunk,
            on_done=on_done,
            on_error=on_error,
            on_state=on_state,
            release=manager.release,
        )

    def subscribe(
        self,
        stream_id: str,
        after: int = 0,
        *,
        transport: str | None = None,
        coalesce_ms: int | None = None,
        on_chunk: Callback | None = None,
        on_done: Callback | None = None,
        on_error: Callback | None = None,
        on_state: Callable[[StateEvent], Any] | None = None,
    ) -> StreamHandle:
        """Follow an existing stream from the event after ``after``. Call it from a
        running event loop. ``auto`` uses what an earlier ``start`` chose, else SSE.
        ``coalesce_ms``: ask the server for at most one write of events per that many
        ms, 0..1000 (fewer, larger reads for a dashboard that repaints at 50 Hz, say;
        docs/protocol.md, "Coalescing"); None: the server's default."""
        kind = transport or self.transport
        if kind == "auto":
            kind = self.manager.auto_choice or "sse"
        t = self.manager.create_transport(kind, stream_id, after=after, coalesce_ms=coalesce_ms)
        return StreamHandle(
            t,
            on_chunk=on_chunk,
            on_done=on_done,
            on_error=on_error,
            on_state=on_state,
            release=self.manager.release,
        )

    async def status(self, stream_id: str) -> dict[str, Any]:
        """The server's status of a stream (``GET /v1/streams/{id}``)."""
        return await self.manager.status(stream_id)

    async def stop(self, stream_id: str) -> None:
        """Stop a stream by id (``DELETE /v1/streams/{id}``)."""
        await self.manager.stop(stream_id)

    def health(self) -> dict[str, dict[str, Any]]:
        return self.manager.health()

    def metrics(self) -> dict[str, Any]:
        return self.manager.metrics()

    async def aclose(self) -> None:
        """Close every stream and connection."""
        await self.manager.close_all()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"Client({self.url!r}, transport={self.transport!r})"
