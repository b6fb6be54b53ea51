"""Socket.IO at ``/socket.io/`` (seed 004), python-socketio mounted on the ASGI app.

Client events (each may ask for an ack; docs/protocol.md, "Socket.IO"):

- ``subscribe {jobId, lastSequence}``: join the room ``job:{jobId}`` and get
  every event after ``lastSequence``, then the live tail;
- ``start {request}``: start a stream (the ``POST /v1/streams`` body) and
  subscribe to it from the beginning; the ack is ``{ok, jobId}``;
- ``unsubscribe {jobId}``: leave; ``cancel {jobId}``: stop the job.

Server events are the :mod:`~tokenwire.core.socketio_encoder`'s, and ``error``
for a bad client event, after which the socket carries on.

This module is a thin adapter around the session core: each socket is a
:class:`~tokenwire.core.session.Session` (its subscriptions, limits and ops)
whose port queues engine.io packets. Delivery follows each subscription's own
cursor, not python-socketio's room broadcast (which would hand a late joiner the
live tail before its replay had finished, so resume would no longer be exact).
A subscription that has caught up parks in the stream's one-pass broadcast
(core/broadcast.py), which writes each batch's pre-encoded WebSocket frames to
every such socket (server/engineio_wire.py) while its socket can take them;
otherwise, and on polling, its own reader writes through engine.io's queue. The
room is still joined, for applications that ``sio.emit(..., room=f"job:{id}")``
notices of their own (``app.sio``).

Every socket's send queue is bounded (docs/protocol.md, "Slow and silent
clients"). python-engine.io's queue is unbounded and its WebSocket writer drains
it whole into a list of its own, so a packet count is no bound: the queue here
is a :class:`PacketQueue` that counts the bytes it holds, and a socket's readers
wait while it holds more than :data:`QUEUE_HIGH_WATER` packets or
:data:`QUEUE_HIGH_BYTES` bytes. The writer takes the next queueful only once it
has written the last, so a client that does not read holds at most about twice
the bound; its cursors stay behind (catch-up, or ``lagged`` past retention)
instead of memory growing, and engine.io drops it when its pongs stop
(``ping_interval`` + ``ping_timeout``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import socketio  # type: ignore[import-untyped]
from engineio import packet as eio_packet  # type: ignore[import-untyped]
from starlette.types import ASGIApp

from tokenwire.core.broadcast import Broadcasts, FramedBatches, Frames
from tokenwire.core.encoder import SharedBatches
from tokenwire.core.ops import MAX_ID_CHARS, SOCKETIO
from tokenwire.core.session import Session
from tokenwire.core.socketio_encoder import (
    NAMESPACE,
    TRANSPORT,
    Packets,
    SocketIOEncoder,
    job_message,
    packet_bytes,
)
from tokenwire.core.ws_direct import SansIOSocket
from tokenwire.errors import InvalidRequest, TokenwireError
from tokenwire.server.access import Credentials, credentials_of
from tokenwire.server.connections import lean_event, lean_queue
from tokenwire.server.engineio_wire import DirectWebSocket
from tokenwire.server.services import Services

__all__ = ["TRANSPORT", "PacketQueue", "SocketIOAdapter", "job_message", "room", "wrap"]

QUEUE_HIGH_WATER = 256
POLL_BATCH = 16
"""Packets queued to one socket above which its readers wait for the queue to drain."""
QUEUE_HIGH_BYTES = 4 * 1024 * 1024
"""Bytes queued to one socket above which its readers wait for the queue to drain."""


def room(job_id: str) -> str:
    return f"job:{job_id}"


class PacketQueue(asyncio.Queue[Any]):
    """engine.io's send queue of one socket (``create_queue``), counting the bytes
    it holds so its readers can wait for room (:meth:`wait_room`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.nbytes = 0
        self._room = asyncio.Event()
        self._room.set()
        self._taken = 0
        # One a socket, idle most of its life: lists, not 760-byte deques.
        lean_queue(self)
        lean_event(self._room)

    idle = False
    """engine.io's writer is waiting for a packet, and none came since: it holds
    nothing unsent and nothing is queued (so there is room too)."""

    async def get(self) -> Any:
        self._taken = 0
        self.idle = not self.qsize()
        try:
            return await super().get()
        finally:
            self.idle = False

    def get_nowait(self) -> Any:
        # engine.io answers a GET poll with one blocking get() and then get_nowait()
        # until the queue is empty; python-engineio clients refuse a payload of more
        # than 16 packets (Payload.max_decode_packets) and drop the connection, so
        # one take is at most POLL_BATCH packets and the rest wait for the next poll.
        if self._taken >= POLL_BATCH:
            raise asyncio.QueueEmpty
        self._taken += 1
        return super().get_nowait()

    def _put(self, item: Any) -> None:
        self.idle = False
        self.nbytes += packet_bytes(item)
        super()._put(item)  # type: ignore[misc]
        if self.nbytes > QUEUE_HIGH_BYTES or self.qsize() > QUEUE_HIGH_WATER:
            self._room.clear()

    def _get(self) -> Any:
        item = super()._get()  # type: ignore[misc]
        self.nbytes -= packet_bytes(item)
        if self.nbytes <= QUEUE_HIGH_BYTES // 2 and self.qsize() <= QUEUE_HIGH_WATER // 2:
            self._room.set()
        return item

    @property
    def has_room(self) -> bool:
        return self._room.is_set()

    async def wait_room(self) -> None:
        await self._room.wait()


class _Socket:
    """One connected socket: the port of its session, queueing engine.io packets."""

    __slots__ = ("_eio", "adapter", "eio_sid", "lock", "session", "sid")

    def __init__(
        self, adapter: SocketIOAdapter, sid: str, eio_sid: str, credentials: Credentials
    ) -> None:
        self.adapter = adapter
        self.sid = sid
        self.eio_sid = eio_sid
        self._eio: Any = None  # engine.io's socket, once looked up
        self.lock = asyncio.Lock()
        self.session = Session(
            adapter.services,
            self,
            credentials,
            # Room is waited for in write(), after the read: a live socket's
            # direct write checks it there anyway, once per delivery.
            adapter.config.max_subscriptions_per_connection,
            broadcasts=adapter.broadcasts,
        )

    @property
    def encoder(self) -> SocketIOEncoder:
        return self.adapter.encoder

    @property
    def shared(self) -> SharedBatches[Any]:
        return self.adapter.batches

    def queue(self) -> PacketQueue | None:
        socket = self.adapter.sio.eio.sockets.get(self.eio_sid)
        if socket is None or socket.closed or not isinstance(socket.queue, PacketQueue):
            return None
        return socket.queue

    async def ready(self) -> None:
        socket = self.adapter.sio.eio.sockets.get(self.eio_sid)
        if socket is None or socket.closed or not isinstance(socket.queue, PacketQueue):
            raise ConnectionResetError("the socket is gone")
        queue: PacketQueue = socket.queue
        if not queue.has_room:
            await queue.wait_room()
        wire: SansIOSocket | None = getattr(socket, "wire", None)
        if wire is not None and wire.paused:
            await wire.wait_resumed()

    def _direct(self) -> SansIOSocket | None:
        """The socket's WebSocket, if a write straight to it now keeps the order of
        everything engine.io sends (server/engineio_wire.py) and goes out at once.
        Per member per batch of a broadcast: kept to plain attribute checks."""
        socket = self._eio
        if socket is None:
            socket = self._eio = self.adapter.sio.eio.sockets.get(self.eio_sid)
            if socket is None:
                return None
        wire: SansIOSocket | None = getattr(socket, "wire", None)
        if (
            wire is None
            or socket.upgrading
            or socket.closing
            or socket.closed
            or not socket.queue.idle
            or self.lock.locked()
            or not wire.writable()
        ):
            return None
        return wire

    async def write(self, packets: list[Any]) -> None:
        """A delivery write: waits for room first, so a batch of tensor chunks never
        lands in the queue whole. A live WebSocket socket gets the batch's frames
        written straight to its connection (server/engineio_wire.py)."""
        if isinstance(packets, Packets) and (wire := self._direct()) is not None:
            wire.write(packets.frames)
            self.adapter.direct_writes += 1
            return
        await self.ready()
        await self.control(packets)

    # -- the broadcast's DirectWrite (core/broadcast.py) ---------------------------

    def writable(self) -> bool:
        return self._direct() is not None

    def try_write(self, frames: Frames) -> bool:
        wire = self._direct()
        if wire is None:
            return False
        wire.write(frames.body)
        self.adapter.direct_writes += 1
        return True

    async def control(self, packets: list[Any]) -> None:
        """A frame that never waits for room (an open frame, an error)."""
        eio = self.adapter.sio.eio
        async with self.lock:
            for pkt in packets:
                await eio.send_packet(self.eio_sid, pkt)

    async def joined(self, stream_id: str) -> None:
        await self.adapter.sio.enter_room(self.sid, room(stream_id))

    multiplexed = True

    async def shutdown(self, timeout: float) -> None:
        """The server is stopping: an ``error {code: "server_shutdown"}`` event, the
        socket's final frame, then a disconnect (core/shutdown.py)."""
        error = {"code": "server_shutdown", "message": "the server is shutting down"}
        await self.control(self.encoder.packets("error", error))
        await self.adapter.sio.disconnect(self.sid)
        await self.session.aclose()


Handler = Callable[[_Socket, dict[str, Any]], Awaitable[dict[str, Any]]]


class SocketIOAdapter:
    """The python-socketio server and its handlers, over one :class:`Services`."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.hub = services.hub
        self.config = services.config
        hb = self.config.heartbeat_s
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            # Handle one socket's events in order: a subscribe then an unsubscribe
            # must not race.
            async_handlers=False,
            # Origins are checked in one place for every transport (server/access.py);
            # CORS headers come from the CORS middleware in front.
            cors_allowed_origins=[],
            max_http_buffer_size=self.config.max_ws_message_bytes,
            # engine.io's ping is this transport's heartbeat.
            ping_interval=hb,
            ping_timeout=max(2 * hb, 5.0),
        )
        # Every socket's send queue counts its bytes, so readers wait for room.
        self.sio.eio.create_queue = PacketQueue
        # A live WebSocket socket's deliveries skip the queue (server/engineio_wire.py).
        self.sio.eio._async = {**self.sio.eio._async, "websocket": DirectWebSocket}
        self.sockets: dict[str, _Socket] = {}
        self.direct_writes = 0
        """Deliveries written straight to a socket's WebSocket, past engine.io's queue."""
        self.encoder = SocketIOEncoder(self.sio.packet_class, self.config.merge_after)
        self.batches = SharedBatches(self.encoder.batch, self.config.merge_after)
        # Live WebSocket sockets of a stream get each batch's frames in one pass
        # (core/broadcast.py), not one reader task's wake-up each.
        self.broadcasts: Broadcasts | None = None
        if self.config.broadcast:
            frames = FramedBatches(self.batches, lambda packets: packets.frames)
            self.broadcasts = Broadcasts(
                self.hub, frames, TRANSPORT, self.config.max_batch_events, self.hub.metrics
            )
        sio = self.sio
        sio.on("connect", self.on_connect)
        sio.on("disconnect", self.on_disconnect)
        for name, handler in (
            ("subscribe", self._subscribe),
            ("start", self._start),
            ("unsubscribe", self._unsubscribe),
            ("cancel", self._cancel),
        ):
            sio.on(name, self._handler(handler))
        sio.on("*", self.on_unknown)

    # -- connection ----------------------------------------------------------------

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, NAMESPACE)
        credentials = credentials_of(environ.get("asgi.scope") or {})
        token = auth.get("token") if isinstance(auth, dict) else None
        if token is not None and self.services.access.keys_required and credentials.key is None:
            try:
                grant = self.services.access.signer.verify(str(token))
                credentials = Credentials(grant=grant, client=credentials.client)
            except TokenwireError as exc:  # connect_error's data carries the code
                raise socketio.exceptions.ConnectionRefusedError(
                    exc.message, {"code": exc.code, "message": exc.message}
                ) from None
        sock = self.sockets[sid] = _Socket(self, sid, eio_sid, credentials)
        self.services.connections.add(sock)
        return True

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        sock = self.sockets.pop(sid, None)
        if sock is None:
            return
        self.services.connections.discard(sock)
        queue = sock.queue()
        if queue is not None and reason == self.sio.reason.CLIENT_DISCONNECT:
            # engine.io closes a polling socket on the client's close packet without
            # answering the GET poll it holds, which then waits out ping_interval +
            # ping_timeout (15 s by default) and the client's disconnect with it.
            queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))
        await sock.session.aclose()

    # -- client events ---------------------------------------------------------------

    def _handler(self, handle: Handler) -> Callable[..., Awaitable[dict[str, Any]]]:
        """One client event: validate, run the op, ack; a refusal is an ``error`` event
        and the ack ``{ok: false, error}``, and the socket stays connected."""

        async def on_event(sid: str, *args: Any) -> dict[str, Any]:
            data = args[0] if args else None
            job_id = data.get("jobId") if isinstance(data, dict) else None
            try:
                sock = self.sockets.get(sid)
                if sock is None:
                    raise InvalidRequest("this socket is not connected")
                if not isinstance(data, dict):
                    raise SOCKETIO.bad("the event's payload must be an object")
                return await handle(sock, data)
            except TokenwireError as exc:
                named = isinstance(job_id, str) and 0 < len(job_id) <= MAX_ID_CHARS
                return await self._error(sid, exc, job_id if named else None)

        return on_event

    async def _subscribe(self, sock: _Socket, data: dict[str, Any]) -> dict[str, Any]:
        job_id = SOCKETIO.stream_id(data)
        after = SOCKETIO.after_seq(data)
        coalesce_s = SOCKETIO.coalesce_s(data, self.config.coalesce_ms)
        await sock.session.subscribe(job_id, after, data.get("token"), coalesce_s)
        return {"ok": True, "jobId": job_id}

    async def _start(self, sock: _Socket, data: dict[str, Any]) -> dict[str, Any]:
        started = await sock.session.start(data.get("request"))
        job_id = str(started["id"])
        try:
            await sock.session.attach(job_id, 0, self.config.coalesce_ms / 1000)
        except TokenwireError as exc:
            return await self._error(sock.sid, exc, job_id)
        return {"ok": True, "jobId": job_id, "status": started["status"]}

    async def _unsubscribe(self, sock: _Socket, data: dict[str, Any]) -> dict[str, Any]:
        job_id = SOCKETIO.stream_id(data)
        await sock.session.unsubscribe(job_id)
        await self.sio.leave_room(sock.sid, room(job_id))
        return {"ok": True, "jobId": job_id}

    async def _cancel(self, sock: _Socket, data: dict[str, Any]) -> dict[str, Any]:
        job_id = SOCKETIO.stream_id(data)
        stream = await sock.session.cancel(job_id, data.get("token"))
        return {"ok": True, "jobId": job_id, "status": str(stream.status)}

    async def on_unknown(self, event: str, sid: str, *args: Any) -> dict[str, Any]:
        return await self._error(sid, SOCKETIO.unknown(event), None)

    async def _error(self, sid: str, exc: TokenwireError, job_id: str | None) -> dict[str, Any]:
        """Tell the socket (an ``error`` event and the ack); the socket stays connected."""
        error: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if job_id is not None:
            error["jobId"] = job_id
        sock = self.sockets.get(sid)
        if sock is not None:
            await sock.control(self.encoder.packets("error", error))
        return {"ok": False, "error": error}


class SocketIOApp(socketio.ASGIApp):  # type: ignore[misc]
    """python-socketio's ASGI app in front of the tokenwire app. Attributes it does
    not have (``state``, ``router``, …) are the wrapped app's, so ``create_app()``
    still reads like the Starlette app it wraps; ``sio`` is the Socket.IO server."""

    def __init__(self, adapter: SocketIOAdapter, app: ASGIApp) -> None:
        super().__init__(adapter.sio, other_asgi_app=app, socketio_path="socket.io")
        self.adapter = adapter
        self.sio = adapter.sio

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes this object lacks.
        if name.startswith("__") or name == "other_asgi_app":
            raise AttributeError(name)
        return getattr(self.other_asgi_app, name)


def wrap(app: ASGIApp, services: Services) -> ASGIApp:
    """Mount Socket.IO at ``/socket.io/`` in front of ``app``."""
    return SocketIOApp(SocketIOAdapter(services), app)
