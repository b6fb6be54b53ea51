"""Connection guards under uvicorn's HTTP protocols, below ASGI.

uvicorn closes an idle keep-alive connection (``timeout_keep_alive``), but a
connection that never completes its request headers has no timer at all: a
socket that sends nothing, or one byte a second (slowloris), is held forever,
and enough of them exhaust the file descriptors. Subclasses of uvicorn's two
protocol classes (httptools, h11) add, per connection:

- a **header deadline**: armed when the connection opens and when a response
  completes, cancelled when a request's headers are complete; on expiry the
  connection gets 408 and is closed;
- a **header size bound** on each request head (httptools has none of its own,
  h11 only while a head is incomplete): 431 and closed;
- a **connection cap** counted over every open HTTP and WebSocket connection: one
  over it gets 503 at once and is closed after a short linger;
- **JSON bodies** for the errors uvicorn answers itself (400 on a malformed
  request), ``{"error": {"code", "message"}}`` like every other error.

- **lean idle state**: CPython allocates an empty ``collections.deque`` with its
  first 64-slot block, 760 bytes, and uvicorn keeps several per connection that
  hold at most a waiter or two (the request pipeline, the flow-control and
  request-body events, a WebSocket's receive queue and writable event): they are
  swapped for :class:`Waiters`, a list (56 bytes empty) with the deque methods
  asyncio and uvicorn call; and a WebSocket's upgrade request and response are
  dropped once the handshake is sent. Per idle connection that is
  about 1 KiB of SSE's and 4-5 KiB of WebSocket's heap (docs/performance.md,
  "Idle connections").

Nothing here runs per byte of a response: the hooks are on connection and request
boundaries only.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import Any

from websockets.protocol import OPEN, Protocol
from websockets.server import ServerProtocol

from tokenwire.events import dumps

log = logging.getLogger("tokenwire")

LINGER_S = 1.0
"""How long a refused connection is kept after its error answer, so the client
reads it before the socket closes."""
_RESERVED_FDS = 64
"""Descriptors kept for files, the model, Redis and the listening sockets."""

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024
    max_connections: int = 10_000

    def effective_max_connections(self) -> int:
        """The cap, lowered to what the process's descriptor limit can hold."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(1, min(self.max_connections, soft - _RESERVED_FDS))


def error_bytes(status: int, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 response with the JSON error body, and ``connection: close``."""
    body = dumps({"error": {"code": code, "message": message}})
    head = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])
    head += b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
    head += b"connection: close\r\n\r\n"
    return head + body


class Waiters(list[Any]):
    """A ``collections.deque`` stand-in for queues that hold a few items at most: the
    methods ``asyncio.Event``/``Queue`` and uvicorn use, over a list."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


def lean_event(event: asyncio.Event) -> None:
    """Swap an unwaited ``asyncio.Event``'s waiter deque for :class:`Waiters`."""
    e: Any = event
    if not e._waiters:
        e._waiters = Waiters()


def lean_queue(queue: asyncio.Queue[Any]) -> None:
    """Swap an idle ``asyncio.Queue``'s four deques (its ``join`` event's too) for
    :class:`Waiters`."""
    q: Any = queue
    if not (q._getters or q._putters):
        q._getters, q._putters = Waiters(), Waiters()
    if type(q._queue) is not Waiters:
        q._queue = Waiters(q._queue)
    lean_event(q._finished)


def _restart_parser(conn: Any) -> None:
    """websockets' server parser is one generator that parsed the upgrade request and
    then parses frames; its suspended frame keeps the request (and its headers) as a
    local for the connection's life. Right after the handshake is sent, before the
    client can have sent a frame (RFC 6455, 4.1), a fresh frame parser replaces it;
    if any bytes already wait, the parser is left as it is."""
    if isinstance(conn, ServerProtocol) and conn.state is OPEN and not conn.reader.buffer:
        conn.parser = Protocol.parse(conn)
        next(conn.parser)


def _lean_websocket(protocol: Any) -> None:
    """uvicorn's WebSocket protocol (any of its implementations) after the upgrade."""
    queue = getattr(protocol, "queue", None)
    if isinstance(queue, asyncio.Queue):
        lean_queue(queue)
    writable = getattr(protocol, "writable", None)
    if isinstance(writable, asyncio.Event):
        lean_event(writable)
    # websockets-sansio keeps the upgrade's request and response (three Headers,
    # about 2 KiB) for the connection's life and reads neither once it has sent the
    # handshake, which it does right before it starts its keepalive.
    start_keepalive = getattr(protocol, "start_keepalive", None)
    if start_keepalive is not None and hasattr(protocol, "response"):

        def started() -> None:
            del protocol.start_keepalive  # the class's again; no cycle left
            protocol.request = protocol.response = None
            _restart_parser(protocol.conn)
            start_keepalive()

        protocol.start_keepalive = started


class _Guard:
    """The mixin; the concrete classes say when a request's headers are complete."""

    limits: ConnectionLimits
    max_connections: int
    # Set by uvicorn's protocol classes, which come after this one in the MRO.
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    connections: set[Any]

    _deadline: asyncio.TimerHandle | None = None
    _header_bytes = 0
    _refused = False
    _last_warning = float("-inf")  # class-wide: one line per interval under a flood

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        if len(self.connections) > self.max_connections:
            self._refuse()
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: read and drop, the answer is already sent
        if self._deadline is not None and self._between_requests():
            end = data.find(b"\r\n\r\n")
            self._count_header_bytes(len(data) if end < 0 else end)
            if self._refused:
                return
        super().data_received(data)  # type: ignore[misc]

    def _between_requests(self) -> bool:
        """Whether the next bytes are a request line and headers (not the rest of a
        body the previous response did not wait for)."""
        return False

    def _count_header_bytes(self, n: int) -> bool:
        """Add ``n`` bytes of request head; False (and 431 sent) past the bound."""
        self._header_bytes += n
        if self._header_bytes <= self.limits.max_header_bytes:
            return True
        limit = self.limits.max_header_bytes
        self._fail(431, "headers_too_large", f"request headers over {limit} bytes")
        return False

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # after a 431 the parser stops with an error too
            self._fail(400, "bad_request", "invalid HTTP request")

    # -- the deadline --------------------------------------------------------------

    def _arm(self) -> None:
        self._disarm()
        self._header_bytes = 0
        self._deadline = self.loop.call_later(self.limits.header_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_complete(self) -> None:
        self._disarm()

    def _expired(self) -> None:
        self._deadline = None
        seconds = self.limits.header_timeout_s
        self._fail(408, "request_timeout", f"request headers not received within {seconds:g} s")

    def _fail(self, status: int, code: str, message: str) -> None:
        self._disarm()
        self._answer_and_close(error_bytes(status, code, message))

    def _refuse(self) -> None:
        self.connections.discard(self)
        now = self.loop.time()
        if now - _Guard._last_warning >= 10.0:
            _Guard._last_warning = now
            log.warning("refusing connections: %d open, the cap", len(self.connections))
        cap = self.max_connections
        self._answer_and_close(
            error_bytes(503, "too_many_connections", f"the server holds {cap} connections")
        )

    def _answer_and_close(self, response: bytes) -> None:
        """Send ``response``, then read and drop whatever else comes for a moment before
        closing: a client still sending its request would otherwise get a reset that
        can destroy the answer before it reads it."""
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self.transport.write(response)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a head over the bound."""


def guarded_protocol(limits: ConnectionLimits, kind: str = "auto") -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class (``httptools`` when installed, else ``h11``)
    with the guards above, for ``uvicorn.run(http=…)``."""
    if kind in ("auto", "httptools"):
        try:
            return _httptools(limits)
        except ImportError:
            if kind == "httptools":
                raise
    return _h11(limits)


def _httptools(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpTools(_Guard, HttpToolsProtocol):  # type: ignore[misc]
        # The parser hands over the request head piece by piece: count those (a body
        # still arriving after its response is not a head).
        def on_message_begin(self) -> None:
            self._header_bytes = 0
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            if not self._count_header_bytes(len(url)):
                raise _HeadTooLarge  # stops the parser; the 431 is already written
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            if not self._count_header_bytes(len(name) + len(value) + 4):
                raise _HeadTooLarge
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._headers_complete()
            super().on_headers_complete()
            cycle = self.cycle
            if cycle is not None:
                lean_event(cycle.message_event)

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.pipeline = Waiters()  # type: ignore[assignment]
            lean_event(self.flow._is_writable_event)

        def handle_websocket_upgrade(self) -> None:
            super().handle_websocket_upgrade()
            _lean_websocket(self.transport.get_protocol())

        def on_response_complete(self) -> None:
            # A pipelined request already has its headers; otherwise wait for the next.
            if not self.pipeline:
                self._arm()
            super().on_response_complete()

    GuardedHttpTools.limits = limits
    GuardedHttpTools.max_connections = limits.effective_max_connections()
    return GuardedHttpTools


def _h11(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11(_Guard, H11Protocol):  # type: ignore[misc]
        def _between_requests(self) -> bool:
            return self.conn.their_state is h11.IDLE

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:
                self._headers_complete()

        def on_response_complete(self) -> None:
            # handle_events (above) disarms again if a pipelined request is waiting.
            self._arm()
            super().on_response_complete()

    GuardedH11.limits = limits
    GuardedH11.max_connections = limits.effective_max_connections()
    return GuardedH11
