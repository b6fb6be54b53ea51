"""WebSocket transport: many streams multiplexed on one shared connection (``/v1/ws``).

Shape (docs/protocol.md, "WebSocket"):

- :class:`WSPool` holds the connections to one server; streams share one until
  it holds ``streams_per_connection`` subscriptions (the server's limit), then
  another is opened. Concurrent attempts to connect coalesce into one.
- :class:`WSConnection` owns one ``websockets`` connection (``/v1/ws?batch=1``:
  the frames of a server batch arrive as the lines of one message) and one
  reader task that demultiplexes frames by ``stream`` into each stream's
  :class:`WSRoute`.
- :class:`WSTransport` drives one stream's :class:`ResumeMachine`: ``Connect``
  is ``subscribe {stream, after}`` on a live connection (opening one if none),
  and the route's frames are what it feeds the machine.

The reader never blocks on a slow application, because that would stall every
other stream of the connection and the pings with them. Instead a route holds
at most ``inbox`` frames: when it overflows, the stream *leaves*
(``unsubscribe``) and its later frames are dropped; once the application has
caught up, the machine resubscribes after its last seq (:meth:`ResumeMachine.suspend`),
and the server sends the backlog again, merged. Nothing is lost (resume by seq)
and the client's memory stays bounded.

Tokens (docs/client.md, "Tokens"): a stream token goes as ``Authorization:
Bearer`` at connect and as ``"token"`` in each ``subscribe`` and ``cancel``.
When the server says ``token_expired`` (an ``error`` frame answering the
subscribe, or the one frame before it closes a connection it refused), the
transport refreshes the token through the application's callback once and
subscribes again with the new one, on a new connection if the old one is gone.

Liveness: any bytes on the connection (frames of any stream, heartbeats,
pings) count as life for every stream on it; a connection silent for two
heartbeat intervals is aborted, and all its streams resume elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Mapping
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from tokenwire.client.auth import EXPIRED, current_token, refresh_after
from tokenwire.client.errors import (
    ClientError,
    ConnectError,
    ConnectionLostError,
    HTTPStatusError,
    ProtocolError,
    code_error,
    status_error,
)
from tokenwire.client.http import Endpoint
from tokenwire.client.machine import TransportState
from tokenwire.client.transport import Transport
from tokenwire.client.wire import ws_message
from tokenwire.events import dumps
from tokenwire.tensors.errors import TensorFrameError
from tokenwire.tensors.wire import decode_chunk_frame

log = logging.getLogger("tokenwire.client")

JOINING, JOINED, LEAVING, LEFT = range(4)

_LOST_CODES = frozenset({"lagged"})
"""Error codes after which the server's subscription is gone but resuming may work."""


class _Suspended(Exception):
    """Internal: the route left for flow control; resubscribe when caught up."""


class _Connection(ClientConnection):
    """A websockets client connection that remembers when bytes last arrived."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_rx = self.loop.time()
        self.rx_bytes = 0

    def data_received(self, data: bytes) -> None:
        self.last_rx = self.loop.time()
        self.rx_bytes += len(data)
        super().data_received(data)


class WSRoute:
    """One stream's place on a connection: its bounded inbox and subscription phase."""

    __slots__ = ("bytes", "conn", "inbox", "lost", "max_pending", "phase", "stream_id", "waiter")

    def __init__(self, conn: WSConnection, stream_id: str | None, max_pending: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.max_pending = max_pending
        self.inbox: deque[dict[str, Any]] = deque()
        self.phase = JOINING
        self.lost: ClientError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.bytes = 0

    def push(self, msg: dict[str, Any], size: int) -> bool:
        """A frame for this stream, from the reader. Returns True when the route just
        overflowed and must leave (the reader sends the ``unsubscribe``)."""
        phase = self.phase
        kind = msg.get("type")
        if phase == JOINING:
            # Until our `open`, frames belong to a former subscription: drop them.
            if kind == "open":
                self.phase = JOINED
            elif kind != "error":
                return False
        elif phase == JOINED:
            if kind == "error":
                self.phase = LEFT  # the server ended this subscription
        else:
            if kind == "unsubscribed":
                self.phase = LEFT
            return False
        self.bytes += size
        self.inbox.append(msg)
        self._wake()
        if self.phase == JOINED and len(self.inbox) >= self.max_pending:
            self.phase = LEAVING
            return True
        return False

    def lose(self, error: ClientError) -> None:
        if self.lost is None:
            self.lost = error
        self._wake()

    async def next(self) -> dict[str, Any]:
        """The next frame; at the end of the inbox, the loss or the suspension."""
        while True:
            if self.inbox:
                return self.inbox.popleft()
            if self.lost is not None:
                raise self.lost
            if self.phase == LEAVING or (self.phase == LEFT and self.stream_id is not None):
                raise _Suspended
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)


class WSConnection:
    """One shared WebSocket connection and its reader task."""

    def __init__(self, pool: WSPool, ws: _Connection) -> None:
        self.pool = pool
        self.ws = ws
        self.routes: dict[str, WSRoute] = {}
        self._starts: dict[str, tuple[asyncio.Future[str], WSRoute]] = {}
        self._ids = itertools.count(1)
        self.closed = False
        self.error: ClientError | None = None
        self.token = current_token(pool.endpoint.headers)
        """The token this connection was opened with."""
        self.refused: ClientError | None = None
        """Why the server refused the connection, from the error frame it sent before closing."""
        self.reader = asyncio.get_running_loop().create_task(self._read(), name="tokenwire-ws")

    @property
    def last_rx(self) -> float:
        return self.ws.last_rx

    @property
    def load(self) -> int:
        return len(self.routes) + len(self._starts)

    async def send(self, message: Mapping[str, Any]) -> None:
        """Send one op. On a closed connection, raises why the server refused it
        (``refused``), if it did, rather than the bare loss: a refusal (an expired
        token) can arrive with the handshake's answer, before the first op goes."""
        if self.closed:
            raise self.refused or ConnectionLostError("the WebSocket connection is closed")
        try:
            await self.ws.send(dumps(message).decode())
        except (ConnectionClosed, OSError) as exc:
            await self._drained()
            raise self.refused or ConnectionLostError(f"WebSocket send failed: {exc}") from None

    async def _drained(self) -> None:
        """Let the reader take the frames that arrived before the close (the refusal's
        error frame is one). It ends at once: the connection is closed."""
        reader = self.reader
        if reader is asyncio.current_task() or reader.done():
            return
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(reader), self.pool.open_timeout_s)

    def add_route(self, stream_id: str) -> WSRoute:
        route = WSRoute(self, stream_id, self.pool.inbox)
        old = self.routes.get(stream_id)
        if old is not None:
            old.lose(ConnectionLostError("replaced by a new subscription"))
        self.routes[stream_id] = route
        return route

    def remove_route(self, route: WSRoute) -> None:
        if route.stream_id is not None and self.routes.get(route.stream_id) is route:
            del self.routes[route.stream_id]

    async def start(self, request: Mapping[str, Any], timeout: float) -> tuple[str, WSRoute]:
        """``start``: the server starts the stream and subscribes this connection to it."""
        rid = f"r{next(self._ids)}"
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        route = WSRoute(self, None, self.pool.inbox)
        self._starts[rid] = (fut, route)
        try:
            await self.send({"op": "start", "id": rid, "request": dict(request)})
            async with asyncio.timeout(timeout):
                stream_id = await fut
        except TimeoutError:
            raise ConnectError(f"no answer to start within {timeout:g}s") from None
        finally:
            self._starts.pop(rid, None)
        return stream_id, route

    def abort(self) -> None:
        """Drop the connection at once (it went silent): no close handshake to wait for."""
        transport = self.ws.transport
        if transport is not None:
            transport.abort()

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.reader
        self._lose(ConnectionLostError("the client closed the connection"))

    async def _read(self) -> None:
        error: ClientError = ConnectionLostError("the WebSocket connection closed")
        try:
            async for message in self.ws:
                leaving: WSRoute | None
                if isinstance(message, bytes):
                    leaving = self._binary(message)
                elif "\n" not in message:
                    leaving = self._text(message)
                else:
                    # ?batch=1: one message holds a batch of one stream, a frame a line.
                    leaving = None
                    for line in message.split("\n"):
                        leaving = self._text(line) or leaving
                if leaving is not None and leaving.stream_id is not None:
                    op = {"op": "unsubscribe", "stream": leaving.stream_id}
                    with contextlib.suppress(ClientError):
                        await self.send(op)
        except ConnectionClosed as exc:
            error = ConnectionLostError(f"WebSocket closed: {exc}")
        except ProtocolError as exc:
            error = exc
            self.abort()
        except OSError as exc:
            error = ConnectionLostError(f"WebSocket failed: {exc}")
        finally:
            self._lose(self.refused or error)

    def _text(self, raw: str) -> WSRoute | None:
        msg = ws_message(raw)
        kind = msg.get("type")
        if kind == "heartbeat":
            return None
        if kind == "started":
            pending = self._starts.pop(str(msg.get("id")), None)
            stream = msg.get("stream")
            if pending is not None and isinstance(stream, str):
                fut, route = pending
                route.stream_id = stream
                self.routes[stream] = route
                if not fut.done():
                    fut.set_result(stream)
            return None
        if kind == "error":
            error = code_error(str(msg.get("code")), str(msg.get("message")))
            pending = self._starts.pop(str(msg.get("id")), None)
            if pending is not None and msg.get("stream") is None:
                fut, _ = pending
                if not fut.done():
                    fut.set_exception(error)
                return None
            if msg.get("stream") is None and msg.get("id") is None:
                self.refused = error  # the connection's own error: the server closes it next
                return None
        stream = msg.get("stream")
        target = self.routes.get(stream) if isinstance(stream, str) else None
        if target is None:
            return None
        return target if target.push(msg, len(raw)) else None

    def _binary(self, raw: bytes) -> WSRoute | None:
        try:
            stream, event = decode_chunk_frame(raw)
        except TensorFrameError as exc:
            raise ProtocolError(f"bad binary frame: {exc}") from None
        route = self.routes.get(stream)
        if route is None:
            return None
        event["type"] = "event"
        event["data"] = bytes(event["data"])  # detach from the frame buffer
        return route if route.push(event, len(raw)) else None

    def _lose(self, error: ClientError) -> None:
        if self.closed:
            return
        self.closed = True
        self.error = error
        for route in list(self.routes.values()):
            route.lose(error)
        self.routes.clear()
        for fut, _ in self._starts.values():
            if not fut.done():
                fut.set_exception(error)
        self._starts.clear()
        self.pool._discard(self)


class WSPool:
    """The WebSocket connections to one server, shared by its streams."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        heartbeat_s: float | None,
        open_timeout_s: float,
        streams_per_connection: int = 64,
        inbox: int = 256,
    ) -> None:
        if streams_per_connection < 1 or inbox < 1:
            raise ValueError("streams_per_connection and inbox must be >= 1")
        base = endpoint.url
        if base.startswith("https://"):
            base = "wss://" + base[len("https://") :]
        elif base.startswith("http://"):
            base = "ws://" + base[len("http://") :]
        # batch=1: the frames of a batch come in one message (fewer, larger messages).
        self.url = base + "/v1/ws?batch=1"
        self.endpoint = endpoint
        self.heartbeat_s = heartbeat_s
        self.open_timeout_s = open_timeout_s
        self.streams_per_connection = streams_per_connection
        self.inbox = inbox
        self.connections: list[WSConnection] = []
        self.opened = 0
        """Connections opened so far."""
        self.last_error: ClientError | None = None
        self._connecting: asyncio.Task[WSConnection] | None = None
        self._closing: set[asyncio.Future[None]] = set()
        self._closed = False

    @property
    def state(self) -> TransportState:
        if self._closed:
            return TransportState.CLOSED
        if any(not c.closed for c in self.connections):
            return TransportState.CONNECTED
        if self._connecting is not None:
            return TransportState.CONNECTING
        if self.last_error is not None:
            return TransportState.RECONNECTING if self.opened else TransportState.ERROR
        return TransportState.IDLE

    async def acquire(self) -> WSConnection:
        """A live connection with room for one more stream (opening one if needed).

        The attempt to connect is the pool's own task, shared by every stream
        that needs it: a stream that gives up waiting (its own deadline) does not
        cancel it for the others.
        """
        while True:
            if self._closed:
                raise ConnectError("the WebSocket pool is closed")
            for conn in self.connections:
                # A refused connection is closing (the server closes it next).
                if not conn.closed and conn.refused is None:
                    if conn.load < self.streams_per_connection:
                        return conn
            attempt = self._connecting
            if attempt is None:
                attempt = self._connecting = asyncio.get_running_loop().create_task(
                    self._open(), name="tokenwire-ws-connect"
                )
                attempt.add_done_callback(self._attempted)
            try:
                conn = await asyncio.shield(attempt)
            finally:
                if attempt.done():
                    self._attempted(attempt)  # now, not in a later callback: loop again
            if conn.refused is not None:
                # Refused with the handshake's answer (and already closed): say why,
                # instead of opening another connection the server refuses too.
                raise conn.refused

    def _attempted(self, attempt: asyncio.Task[WSConnection]) -> None:
        if self._connecting is not attempt:
            return  # already handled
        self._connecting = None
        if attempt.cancelled():
            return
        error = attempt.exception()
        if error is None:
            conn = attempt.result()
            if self._closed:
                self._closing.add(asyncio.ensure_future(conn.aclose()))
            else:
                self.connections.append(conn)
        elif isinstance(error, ClientError):
            self.last_error = error

    async def _open(self) -> WSConnection:
        hb = self.heartbeat_s
        try:
            ws = await connect(
                self.url,
                additional_headers=dict(self.endpoint.headers),
                open_timeout=self.open_timeout_s,
                ping_interval=hb,
                ping_timeout=None if hb is None else 2 * hb,
                close_timeout=1.0,
                max_size=self.endpoint.max_event_bytes,
                compression=None,
                create_connection=_Connection,
            )
        except InvalidStatus as exc:
            raise status_error(
                exc.response.status_code, "", "WebSocket handshake refused"
            ) from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise ConnectError(f"WebSocket connect failed: {type(exc).__name__}: {exc}") from None
        assert isinstance(ws, _Connection)
        self.opened += 1
        return WSConnection(self, ws)

    def _discard(self, conn: WSConnection) -> None:
        with contextlib.suppress(ValueError):
            self.connections.remove(conn)
        if conn.error is not None and not self._closed:
            self.last_error = conn.error

    async def aclose(self) -> None:
        self._closed = True
        attempt = self._connecting
        if attempt is not None:
            attempt.cancel()
            with contextlib.suppress(BaseException):
                await attempt
        for conn in list(self.connections):
            await conn.aclose()
        self.connections.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


class WSTransport(Transport):
    """One stream over the pool's shared WebSocket connection."""

    kind = "ws"

    def __init__(
        self,
        pool: WSPool,
        stream_id: str,
        *,
        route: WSRoute | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(stream_id, **kw)
        self.pool = pool
        self._route: WSRoute | None = None
        self._started = route  # the route a WS `start` already subscribed
        self._token_used: str | None = None
        self._refreshed = False

    def _activity(self) -> float | None:
        route = self._route
        return None if route is None or route.conn.closed else route.conn.last_rx

    async def _open(self, after: int) -> None:
        await self._drop("reopen")
        route, self._started = self._started, None
        if route is not None and not route.conn.closed and after == 0:
            self._route = route
            return
        await self._subscribe(after)

    async def _subscribe(self, after: int) -> None:
        """Subscribe after ``after``; a refusal before the op went (the connection's
        token expired) is refreshed like one that answers it (:meth:`_receive`)."""
        try:
            await self._send_subscribe(after)
        except HTTPStatusError as exc:
            if not await self._refresh(exc):
                raise
            self._forget_route()
            await self._send_subscribe(after)

    async def _send_subscribe(self, after: int) -> None:
        self._token_used = current_token(self.pool.endpoint.headers)
        conn = await self.pool.acquire()
        stream_id = self.stream_id
        if stream_id is None:
            raise ProtocolError("a WebSocket subscription needs a stream id")
        self._route = conn.add_route(stream_id)
        token = self._token_used
        op: dict[str, Any] = {"op": "subscribe", "stream": stream_id, "after": after}
        if self.coalesce_ms is not None:
            op["coalesce_ms"] = self.coalesce_ms
        if token is not None:
            op["token"] = token  # the connection may have opened with an older one
        await conn.send(op)

    def _forget_route(self) -> None:
        route, self._route = self._route, None
        if route is not None:
            route.conn.remove_route(route)

    async def _receive(self) -> None:
        try:
            await self._receive_frames()
        except HTTPStatusError as exc:
            if not await self._refresh(exc):
                raise
            # The refused subscription never opened: subscribe again where the
            # machine is, with the new token (a new connection if this one closed).
            self._forget_route()
            await self._subscribe(self.machine.last_seq)

    async def _refresh(self, exc: HTTPStatusError) -> bool:
        """Whether ``exc`` is an expired token that the application's callback just
        replaced; once until the server admits the stream again, so a new token
        refused too reaches the application."""
        if exc.code != EXPIRED or self._refreshed:
            return False
        route = self._route
        used = route.conn.token if route is not None and route.conn.refused else self._token_used
        if not await refresh_after(self.pool.endpoint.headers, exc.code, used):
            return False
        self._refreshed = True
        return True

    async def _receive_frames(self) -> None:
        route = self._route
        if route is None:
            raise ConnectionLostError("no open link")
        try:
            msg = route.inbox.popleft() if route.inbox else await route.next()
        except _Suspended:
            self.machine.suspend(asyncio.get_running_loop().time())
            return
        now = asyncio.get_running_loop().time()
        machine = self.machine
        machine.bytes_received(now)
        self._feed(msg, now)
        inbox = route.inbox
        while inbox and not machine.state.final and machine.link != "none":
            self._feed(inbox.popleft(), now)
        self.counters.bytes += route.bytes
        route.bytes = 0

    def _feed(self, msg: dict[str, Any], now: float) -> None:
        kind = msg.pop("type", None)
        if kind == "event":
            msg.pop("stream", None)
            self.machine.receive_event(msg, now)
        elif kind == "open":
            self._refreshed = False  # admitted: a later expiry may be refreshed again
            self.machine.receive_open(msg, now)
        elif kind == "error":
            code, message = str(msg.get("code")), str(msg.get("message"))
            if code in _LOST_CODES:
                raise ConnectionLostError(f"{code}: {message}")
            raise code_error(code, message, stream_id=self.stream_id)

    async def _drop(self, reason: str) -> None:
        route = self._route
        if route is None:
            return
        self._route = None
        conn = route.conn
        conn.remove_route(route)
        if conn.closed:
            return
        if reason == "heartbeat":
            hb = self.pool.heartbeat_s
            silent = asyncio.get_running_loop().time() - conn.last_rx
            if hb is not None and silent >= 2 * hb:
                conn.abort()  # the whole connection is silent: every stream resumes
                return
        if reason != "done" and route.phase in (JOINING, JOINED):
            with contextlib.suppress(ClientError):
                await conn.send({"op": "unsubscribe", "stream": route.stream_id})

    async def send(self, message: Mapping[str, Any]) -> None:
        """Send an op about this stream (``{"op": "cancel"}`` stops it)."""
        route = self._route
        conn = route.conn if route is not None and not route.conn.closed else None
        if conn is None:
            conn = await self.pool.acquire()
        token = current_token(self.pool.endpoint.headers)
        extra = {} if token is None or "token" in message else {"token": token}
        await conn.send({**message, **extra, "stream": self.stream_id})
