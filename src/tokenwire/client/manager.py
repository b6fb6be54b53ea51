"""``TransportManager``: the client's connections, limits, health and metrics.

- **Pooling.** One ``httpx.AsyncClient`` for every HTTP request and stream (its
  pool reuses connections); one :class:`~tokenwire.client.ws.WSPool` whose
  connection carries many streams.
- **Lifecycle.** Every transport is registered while it runs and retired when
  its driver ends; :meth:`close_all` closes them all, then the pools.
- **Health.** Per transport kind: state, live streams by state, last error,
  circuit breaker state (one breaker per kind, shared by its streams).
- **Metrics.** Links, reconnects, events, bytes and duplicates dropped, totals
  over live and retired transports; per stream, time to first token and
  tokens/s from its :class:`~tokenwire.tracker.StreamingTracker`.
- **Limits.** At most ``max_streams`` live streams
  (:exc:`~tokenwire.client.errors.ResourceLimitError` beyond); each stream's
  buffer is bounded (``buffer_events``, ``buffer_bytes``), and so are lines and
  events on the wire (``max_line_bytes``, ``max_event_bytes``). Statistics of
  finished streams are kept for the last ``keep_finished`` only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter as Tally
from collections import deque
from collections.abc import Mapping
from typing import Any

import httpx

from tokenwire.client.auth import BearerAuth, TokenRefresh
from tokenwire.client.buffer import EventBuffer
from tokenwire.client.errors import (
    ClientClosedError,
    ClientError,
    HTTPStatusError,
    ProtocolError,
    ResourceLimitError,
)
from tokenwire.client.http import (
    Endpoint,
    NDJSONTransport,
    SSETransport,
    error_from_response,
    request,
    stop_stream,
    transport_error,
)
from tokenwire.client.machine import TransportState
from tokenwire.client.policy import CircuitBreaker, ReconnectPolicy
from tokenwire.client.transport import Counters, Transport
from tokenwire.client.ws import WSPool, WSRoute, WSTransport

KINDS = ("sse", "ndjson", "ws")


class TransportManager:
    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        refresh_token: TokenRefresh | None = None,
        policy: ReconnectPolicy | None = None,
        heartbeat_s: float | None = 15.0,
        max_streams: int = 256,
        buffer_events: int = 256,
        buffer_bytes: int = 4 << 20,
        max_line_bytes: int = 1 << 20,
        max_event_bytes: int = 8 << 20,
        request_timeout_s: float = 30.0,
        ws_streams_per_connection: int = 64,
        ws_inbox: int = 256,
        keep_finished: int = 64,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        if max_streams < 1:
            raise ValueError("max_streams must be >= 1")
        headers = BearerAuth(api_key, token, refresh_token)
        self.endpoint = Endpoint(
            url.rstrip("/"),
            headers,
            max_line_bytes=max_line_bytes,
            max_event_bytes=max_event_bytes,
        )
        self.policy = policy or ReconnectPolicy()
        self.heartbeat_s = heartbeat_s
        self.max_streams = max_streams
        self.buffer_events = buffer_events
        self.buffer_bytes = buffer_bytes
        self.request_timeout_s = request_timeout_s
        self._http = http
        self._owns_http = http is None
        self.ws = WSPool(
            self.endpoint,
            heartbeat_s=heartbeat_s,
            open_timeout_s=self.policy.connect_timeout_s,
            streams_per_connection=ws_streams_per_connection,
            inbox=ws_inbox,
        )
        self._breakers = {kind: self.policy.breaker() for kind in KINDS}
        self._live: dict[int, Transport] = {}
        self._retired = Counters()
        self._finished: deque[dict[str, Any]] = deque(maxlen=keep_finished)
        self._closing: set[asyncio.Task[None]] = set()
        self._auto: str | None = None
        self._created = 0
        self._closed = False

    # -- pools ----------------------------------------------------------------------------

    @property
    def http(self) -> httpx.AsyncClient:
        """The shared HTTP client (created on first use)."""
        if self._http is None:
            if self._closed:
                raise ClientClosedError("the transport manager is closed")
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(
                    connect=self.policy.connect_timeout_s,
                    read=self.request_timeout_s,
                    write=self.request_timeout_s,
                    pool=self.request_timeout_s,
                ),
                # Every live stream may hold a connection; requests need a few more.
                limits=httpx.Limits(
                    max_connections=self.max_streams + 16, max_keepalive_connections=32
                ),
            )
        return self._http

    def breaker(self, kind: str) -> CircuitBreaker:
        return self._breakers[kind]

    async def resolve(self, kind: str) -> str:
        """The concrete transport for ``kind``: ``auto`` is WebSocket when the server
        accepts it, else SSE (decided once per manager)."""
        if kind in KINDS:
            return kind
        if kind != "auto":
            raise ValueError(f"unknown transport {kind!r}; expected one of {(*KINDS, 'auto')}")
        if self._auto is None:
            try:
                await self.ws.acquire()
            except HTTPStatusError:
                self._auto = "sse"  # the server has no WebSocket endpoint
            except ClientError:
                return "sse"  # unreachable now: decide on a later call
            else:
                self._auto = "ws"
        return self._auto

    # -- streams ------------------------------------------------------------------------

    async def start_stream(self, kind: str, body: Mapping[str, Any]) -> tuple[str, WSRoute | None]:
        """Start a generation. Over WebSocket, ``start`` also subscribes: the route
        it returns is handed to the stream's transport."""
        if kind == "ws":
            conn = await self.ws.acquire()
            stream_id, route = await conn.start(body, self.request_timeout_s)
            return stream_id, route
        try:
            response = await self.http.post(
                f"{self.endpoint.url}/v1/streams", json=dict(body), headers=self.endpoint.headers
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc, connected=False) from None
        if response.status_code != 201:
            raise await error_from_response(response)
        try:
            stream_id = response.json()["id"]
        except (ValueError, KeyError, TypeError):
            raise ProtocolError("the start answer has no stream id") from None
        return str(stream_id), None

    @property
    def auto_choice(self) -> str | None:
        """What ``auto`` resolved to, once decided."""
        return self._auto

    def check_room(self) -> None:
        """Raise :exc:`ResourceLimitError` if no more streams may start."""
        if self._closed:
            raise ClientClosedError("the transport manager is closed")
        if len(self._live) >= self.max_streams:
            raise ResourceLimitError("max_streams", self.max_streams)

    def create_transport(
        self,
        kind: str,
        stream_id: str,
        *,
        after: int = 0,
        route: WSRoute | None = None,
        coalesce_ms: int | None = None,
    ) -> Transport:
        """A running transport for ``stream_id`` (events after ``after``; the server's
        flush window ``coalesce_ms``, None for its default)."""
        self.check_room()
        buffer = EventBuffer(self.buffer_events, self.buffer_bytes)
        common: dict[str, Any] = {
            "after": after,
            "coalesce_ms": coalesce_ms,
            "policy": self.policy,
            "breaker": self._breakers[kind],
            "heartbeat_s": self.heartbeat_s,
            "buffer": buffer,
        }
        transport: Transport
        if kind == "sse":
            transport = SSETransport(self.http, self.endpoint, stream_id, **common)
        elif kind == "ndjson":
            transport = NDJSONTransport(self.http, self.endpoint, stream_id, **common)
        elif kind == "ws":
            transport = WSTransport(self.ws, stream_id, route=route, **common)
        else:
            raise ValueError(f"unknown transport {kind!r}; expected one of {KINDS}")
        self._created += 1
        self._live[id(transport)] = transport
        transport.on_finish = self._retire
        transport.start()
        return transport

    def get_transport(self, stream_id: str) -> Transport | None:
        for transport in self._live.values():
            if transport.stream_id == stream_id:
                return transport
        return None

    @property
    def transports(self) -> list[Transport]:
        """The live transports."""
        return list(self._live.values())

    async def close_transport(self, transport: Transport) -> None:
        await transport.close()

    def release(self, transport: Transport) -> None:
        """Close ``transport`` in the background (the handle's synchronous ``close()``);
        :meth:`close_all` waits for it."""
        if not transport.running:
            return
        task = asyncio.get_running_loop().create_task(transport.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def status(self, stream_id: str) -> dict[str, Any]:
        """``GET /v1/streams/{id}``: the server's view of a stream."""
        response = await request(
            self.http, self.endpoint, "GET", self.endpoint.stream_url(stream_id), stream_id
        )
        result: dict[str, Any] = response.json()
        return result

    async def stop(self, stream_id: str) -> None:
        """``DELETE /v1/streams/{id}``."""
        await stop_stream(self.http, self.endpoint, stream_id)

    async def close_all(self) -> None:
        """Close every transport, then the WebSocket and HTTP pools."""
        self._closed = True
        await asyncio.gather(
            *(t.close() for t in list(self._live.values())), return_exceptions=True
        )
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        await self.ws.aclose()
        if self._http is not None and self._owns_http:
            with contextlib.suppress(Exception):
                await self._http.aclose()

    def _retire(self, transport: Transport) -> None:
        if self._live.pop(id(transport), None) is None:
            return
        self._retired.add(transport.counters)
        self._finished.append(self._stream_stats(transport))

    # -- observability --------------------------------------------------------------------

    def health(self) -> dict[str, dict[str, Any]]:
        """Per transport kind: state, live streams by state, last error, breaker state."""
        out: dict[str, dict[str, Any]] = {}
        for kind in KINDS:
            live = [t for t in self._live.values() if t.kind == kind]
            states = Tally(str(t.state) for t in live)
            errors = [t.last_error for t in live if t.last_error is not None]
            if kind == "ws":
                state = self.ws.state
                last_error = self.ws.last_error or (errors[-1] if errors else None)
            else:
                state = _summary(live, self._closed)
                last_error = errors[-1] if errors else None
            breaker = self._breakers[kind]
            out[kind] = {
                "state": str(state),
                "streams": len(live),
                "states": dict(states),
                "last_error": None if last_error is None else str(last_error),
                "breaker": str(breaker.state),
                "breaker_trips": breaker.trips,
            }
        return out

    def metrics(self) -> dict[str, Any]:
        """Counters over all transports, WebSocket connections, and per-stream figures
        (live streams, and the last ``keep_finished`` finished ones)."""
        totals = Counters()
        totals.add(self._retired)
        for transport in self._live.values():
            totals.add(transport.snapshot_counters())
        streams = [*self._finished, *(self._stream_stats(t) for t in self._live.values())]
        return {
            "streams_active": len(self._live),
            "streams_total": self._created,
            "connections": totals.links + self.ws.opened,
            "links": totals.links,
            "ws_connections": self.ws.opened,
            "ws_connections_open": sum(1 for c in self.ws.connections if not c.closed),
            "reconnects": totals.reconnects,
            "events": totals.events,
            "bytes": totals.bytes,
            "duplicates": totals.duplicates,
            "streams": streams,
        }

    @staticmethod
    def _stream_stats(transport: Transport) -> dict[str, Any]:
        counters = transport.snapshot_counters()
        return {
            "stream_id": transport.stream_id,
            "transport": transport.kind,
            "state": str(transport.state),
            "last_seq": transport.last_seq,
            "reconnects": counters.reconnects,
            "events": counters.events,
            "bytes": counters.bytes,
            **transport.tracker.snapshot().to_dict(),
        }


def _summary(live: list[Transport], closed: bool) -> TransportState:
    """One state for the streams of an HTTP transport: the best one any stream is in."""
    if closed:
        return TransportState.CLOSED
    for state in (
        TransportState.CONNECTED,
        TransportState.CONNECTING,
        TransportState.RECONNECTING,
        TransportState.ERROR,
    ):
        if any(t.state is state for t in live):
            return state
    return TransportState.IDLE
