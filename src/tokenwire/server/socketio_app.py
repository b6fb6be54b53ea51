"""Socket.IO at ``/socket.io/`` (seed 004), python-socketio mounted on the ASGI app.

Client events (each may ask for an ack; docs/protocol.md, "Socket.IO"):

- ``subscribe {jobId, lastSequence}``: join the room ``job:{jobId}`` and get
  every event after ``lastSequence``, then the live tail;
- ``start {request}``: start a stream (the ``POST /v1/streams`` body) and
  subscribe to it from the beginning; the ack is ``{ok, jobId}``;
- ``unsubscribe {jobId}``: leave; ``cancel {jobId}``: stop the job.

Server events: ``job:open``, ``model:chunk`` (tokens), ``job:progress``,
``job:completed``, ``job:error`` (also for ``cancelled``), ``job:event`` (every
other kind; a ``tensor.chunk``'s bytes as a binary attachment) and ``error``
for a bad client event, after which the socket carries on.

Delivery is per socket, from its own cursor, not a broadcast to the room. Each
(socket, job) pair has one reader task, owned by the socket and stopped on
``unsubscribe`` or disconnect, that reads the stream's log after the socket's
own ``lastSequence`` in batches (catch-up coalesced as on every transport). A
room broadcast would hand a late joiner the live tail before its replay had
finished, so it would see some events twice and others out of order; resume
would no longer be exact. The room is still joined, for applications that
``sio.emit(..., room=f"job:{id}")`` notices of their own (``app.sio``).

An event's Socket.IO packet is built once and the same packet object is queued
to every socket (python-socketio does the same for a room broadcast); a
``tensor.chunk``'s packets are built per socket as it is sent, never cached.

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
import base64
import functools
import logging
from typing import Any

import socketio  # type: ignore[import-untyped]
from engineio import packet as eio_packet  # type: ignore[import-untyped]
from starlette.types import ASGIApp

from tokenwire.errors import InvalidRequest, LimitExceeded, TokenwireError, excerpt
from tokenwire.events import (
    CANCELLED,
    DONE,
    ERROR,
    PROGRESS,
    TENSOR_CHUNK,
    TOKEN,
    Event,
)
from tokenwire.server.access import CREATE, READ, STOP, Credentials, credentials_of
from tokenwire.server.fanout import Reader, SharedBatches
from tokenwire.server.offsets import seq_from_json
from tokenwire.server.services import Services

log = logging.getLogger("tokenwire")

TRANSPORT = "socketio"
NAMESPACE = "/"
MAX_SUBSCRIPTIONS = 64
"""Jobs one socket may be subscribed to at once."""
QUEUE_HIGH_WATER = 256
"""Packets queued to one socket above which its readers wait for the queue to drain."""
QUEUE_HIGH_BYTES = 4 * 1024 * 1024
"""Bytes queued to one socket above which its readers wait for the queue to drain."""
MAX_ID_CHARS = 128


def room(job_id: str) -> str:
    return f"job:{job_id}"


def job_message(job_id: str, event: Event) -> tuple[str, dict[str, Any]]:
    """The Socket.IO event name and payload for one tokenwire event."""
    fields = event.fields
    seq = event.seq
    kind = event.kind
    if kind == TOKEN:
        metadata: dict[str, Any] = {"kind": kind}
        if "from_seq" in fields:
            metadata["from_seq"] = fields["from_seq"]
        return "model:chunk", {
            "jobId": job_id,
            "chunk": fields["text"],
            "sequence": seq,
            "timestamp": int(event.ts * 1000),
            "metadata": metadata,
        }
    if kind == PROGRESS:
        progress = fields.get("progress")
        payload = {
            "jobId": job_id,
            "stage": fields.get("stage"),
            "step": fields.get("stage"),
            # Seed 004's front ends read a percentage; the tokenwire event has 0..1.
            "progress": None if progress is None else round(progress * 100, 3),
            "message": fields.get("message"),
            "sequence": seq,
        }
        if "from_seq" in fields:
            payload["metadata"] = {"from_seq": fields["from_seq"]}
        return "job:progress", payload
    if kind == DONE:
        return "job:completed", {
            "jobId": job_id,
            "sequence": seq,
            "finish_reason": fields.get("finish_reason"),
            "usage": fields.get("usage"),
        }
    if kind == ERROR:
        return "job:error", {
            "jobId": job_id,
            "sequence": seq,
            "code": fields.get("code"),
            "message": fields.get("message"),
        }
    if kind == CANCELLED:
        reason = fields.get("reason")
        return "job:error", {
            "jobId": job_id,
            "sequence": seq,
            "code": "cancelled",
            "message": f"the job was cancelled ({reason})",
            "reason": reason,
        }
    payload = {"jobId": job_id, "sequence": seq, "kind": kind, **fields}
    if kind == TENSOR_CHUNK:
        raw = event.binary
        if raw is None:  # an event rebuilt from JSON keeps its payload base64
            raw = base64.b64decode(fields.get("data") or b"")
        payload["data"] = bytes(raw)  # sent as a binary attachment
    return "job:event", payload


def _packet_bytes(pkt: Any) -> int:
    data = getattr(pkt, "data", None)
    return 64 + (len(data) if isinstance(data, str | bytes | bytearray) else 0)


class PacketQueue(asyncio.Queue[Any]):
    """engine.io's send queue of one socket (``create_queue``), counting the bytes
    it holds so its readers can wait for room (:meth:`wait_room`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.nbytes = 0
        self._room = asyncio.Event()
        self._room.set()

    def _put(self, item: Any) -> None:
        self.nbytes += _packet_bytes(item)
        super()._put(item)  # type: ignore[misc]
        if self.nbytes > QUEUE_HIGH_BYTES or self.qsize() > QUEUE_HIGH_WATER:
            self._room.clear()

    def _get(self) -> Any:
        item = super()._get()  # type: ignore[misc]
        self.nbytes -= _packet_bytes(item)
        if self.nbytes <= QUEUE_HIGH_BYTES // 2 and self.qsize() <= QUEUE_HIGH_WATER // 2:
            self._room.set()
        return item

    async def wait_room(self) -> None:
        await self._room.wait()


class _Socket:
    """What the adapter keeps per connected socket."""

    __slots__ = ("credentials", "eio_sid", "lock", "readers")

    def __init__(self, eio_sid: str, credentials: Credentials) -> None:
        self.eio_sid = eio_sid
        self.credentials = credentials
        self.lock = asyncio.Lock()
        self.readers: dict[str, Reader] = {}


class SocketIOAdapter:
    """The python-socketio server and its handlers, over one :class:`Services`."""

    def __init__(self, services: Services, max_subscriptions: int = MAX_SUBSCRIPTIONS) -> None:
        self.services = services
        self.hub = services.hub
        self.config = services.config
        self.max_subscriptions = max_subscriptions
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
            ping_interval=hb,
            ping_timeout=max(2 * hb, 5.0),
        )
        # Every socket's send queue counts its bytes, so readers wait for room.
        self.sio.eio.create_queue = PacketQueue
        self.sockets: dict[str, _Socket] = {}
        self.batches = SharedBatches(self._batch_packets, self.config.merge_after)
        sio = self.sio
        sio.on("connect", self.on_connect)
        sio.on("disconnect", self.on_disconnect)
        sio.on("subscribe", self.on_subscribe)
        sio.on("start", self.on_start)
        sio.on("unsubscribe", self.on_unsubscribe)
        sio.on("cancel", self.on_cancel)
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
        self.sockets[sid] = _Socket(eio_sid, credentials)
        return True

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        sock = self.sockets.pop(sid, None)
        if sock is None:
            return
        queue = self._queue(sock)
        if queue is not None and reason == self.sio.reason.CLIENT_DISCONNECT:
            # engine.io closes a polling socket on the client's close packet without
            # answering the GET poll it holds, which then waits out ping_interval +
            # ping_timeout (15 s by default) and the client's disconnect with it.
            queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))
        readers = list(sock.readers.values())
        sock.readers.clear()
        await asyncio.gather(*(reader.aclose() for reader in readers))

    # -- client events ---------------------------------------------------------------

    async def on_subscribe(self, sid: str, *args: Any) -> dict[str, Any]:
        job_id: str | None = None
        try:
            data = _payload(args)
            job_id = _job_id(data)
            after = seq_from_json(data.get("lastSequence"), "'lastSequence'")
            self._authorize(sid, job_id, READ, data.get("token"))
            await self._subscribe(sid, job_id, after)
            return {"ok": True, "jobId": job_id}
        except TokenwireError as exc:
            return await self._error(sid, exc, job_id)

    async def on_start(self, sid: str, *args: Any) -> dict[str, Any]:
        job_id: str | None = None
        try:
            data = _payload(args)
            self._authorize(sid, None, CREATE, None)
            self._check_room(sid)
            self._admit_start(sid)
            started = await self.services.start_generation(data.get("request"))
            job_id = str(started["id"])
            await self._subscribe(sid, job_id, 0)
            return {"ok": True, "jobId": job_id, "status": started["status"]}
        except TokenwireError as exc:
            return await self._error(sid, exc, job_id)

    async def on_unsubscribe(self, sid: str, *args: Any) -> dict[str, Any]:
        job_id: str | None = None
        try:
            job_id = _job_id(_payload(args))
            sock = self.sockets.get(sid)
            reader = sock.readers.pop(job_id, None) if sock is not None else None
            if reader is not None:
                await reader.aclose()
            await self.sio.leave_room(sid, room(job_id))
            return {"ok": True, "jobId": job_id}
        except TokenwireError as exc:
            return await self._error(sid, exc, job_id)

    async def on_cancel(self, sid: str, *args: Any) -> dict[str, Any]:
        job_id: str | None = None
        try:
            data = _payload(args)
            job_id = _job_id(data)
            self._authorize(sid, job_id, STOP, data.get("token"))
            stream = await self.hub.cancel(job_id)
            return {"ok": True, "jobId": job_id, "status": str(stream.status)}
        except TokenwireError as exc:
            return await self._error(sid, exc, job_id)

    async def on_unknown(self, event: str, sid: str, *args: Any) -> dict[str, Any]:
        exc = InvalidRequest(
            f"unknown event {excerpt(event)}; expected one of: subscribe, start, unsubscribe, "
            "cancel"
        )
        exc.code = "unknown_event"
        return await self._error(sid, exc, None)

    async def _error(self, sid: str, exc: TokenwireError, job_id: str | None) -> dict[str, Any]:
        """Tell the socket (an ``error`` event and the ack); the socket stays connected."""
        error: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if job_id is not None:
            error["jobId"] = job_id
        sock = self.sockets.get(sid)
        if sock is not None:
            await self._emit(sock, "error", error)
        return {"ok": False, "error": error}

    def _authorize(self, sid: str, job_id: str | None, action: Any, token: Any) -> None:
        sock = self.sockets.get(sid)
        credentials = sock.credentials if sock is not None else Credentials()
        self.services.access.check(credentials, job_id, action, token)

    def _admit_start(self, sid: str) -> None:
        sock = self.sockets.get(sid)
        self.services.access.admit_start(sock.credentials if sock is not None else Credentials())

    # -- subscriptions ---------------------------------------------------------------

    def _check_room(self, sid: str) -> _Socket:
        sock = self.sockets.get(sid)
        if sock is None:
            raise InvalidRequest("this socket is not connected")
        if len(sock.readers) >= self.max_subscriptions:
            raise LimitExceeded(
                "too_many_subscriptions",
                f"a socket may hold at most {self.max_subscriptions} subscriptions",
            )
        return sock

    async def _subscribe(self, sid: str, job_id: str, after: int) -> None:
        sock = self._check_room(sid)
        if job_id in sock.readers:
            exc = InvalidRequest(f"this socket is already subscribed to {job_id!r}")
            exc.code = "already_subscribed"
            raise exc
        sub = self.hub.subscribe(job_id, after, transport=TRANSPORT)
        try:
            opened = await sub.open()
            await self.sio.enter_room(sid, room(job_id))
            await self._emit(sock, "job:open", {"jobId": job_id, **opened})
        except BaseException:
            sub.close()
            raise

        def forget(reader: Reader) -> None:
            if sock.readers.get(job_id) is reader:
                del sock.readers[job_id]

        sock.readers[job_id] = Reader(
            sub,
            functools.partial(self._pump, sock),
            forget,
            name=f"tokenwire:socketio:{job_id}",
        )

    def _encode(self, name: str, payload: dict[str, Any]) -> list[Any]:
        """The engine.io packets of one Socket.IO event (two with a binary attachment)."""
        pkt = self.sio.packet_class(
            socketio.packet.EVENT, namespace=NAMESPACE, data=[name, payload]
        )
        encoded = pkt.encode()
        if not isinstance(encoded, list):
            encoded = [encoded]
        return [eio_packet.Packet(eio_packet.MESSAGE, part) for part in encoded]

    def _packets(self, job_id: str, event: Event) -> list[Any]:
        return self._encode(*job_message(job_id, event))

    def _batch_packets(self, job_id: str, frames: list[Event]) -> tuple[list[Any], int]:
        """The packets of a batch (each event's cached on it) and its frame count."""
        encode = functools.partial(self._packets, job_id)
        return [pkt for event in frames for pkt in event.encoded(TRANSPORT, encode)], len(frames)

    async def _emit(self, sock: _Socket, name: str, payload: dict[str, Any]) -> None:
        """Queue one event to one socket, in order with its readers' packets."""
        async with sock.lock:
            for pkt in self._encode(name, payload):
                await self.sio.eio.send_packet(sock.eio_sid, pkt)

    def _queue(self, sock: _Socket) -> PacketQueue | None:
        socket = self.sio.eio.sockets.get(sock.eio_sid)
        if socket is None or socket.closed or not isinstance(socket.queue, PacketQueue):
            return None
        return socket.queue

    async def _send(self, sock: _Socket, packets: list[Any]) -> None:
        eio = self.sio.eio
        async with sock.lock:
            for pkt in packets:
                await eio.send_packet(sock.eio_sid, pkt)

    async def _pump(self, sock: _Socket, reader: Reader) -> None:
        """Read one job's cursor and queue its packets to the socket until it ends."""
        sub = reader.sub
        cfg = self.config
        metrics = self.hub.metrics
        try:
            while not reader.stopped and not sub.finished:
                queue = self._queue(sock)
                if queue is None:
                    break
                await queue.wait_room()
                batch = await sub.read(cfg.max_batch_events)
                if reader.stopped:
                    break
                if not batch:
                    if sub.finished:
                        break
                    continue
                if not any(event.binary is not None for event in batch):
                    packets, frames = self.batches(sub.stream_id, batch)
                    await self._send(sock, packets)
                else:
                    # Tensor chunks: built per socket, one event at a time, each
                    # waiting for room, so a batch never lands in the queue whole.
                    for event in batch:
                        await queue.wait_room()
                        if reader.stopped:
                            return
                        await self._send(sock, self._packets(sub.stream_id, event))
                    frames = len(batch)
                metrics.inc("tokenwire_events_delivered_total", frames, TRANSPORT)
        except TokenwireError as exc:
            # Lagged or expired: the client subscribes again after its last sequence
            # and gets job:open {recovered: false}.
            error = {"code": exc.code, "message": exc.message, "jobId": sub.stream_id}
            await self._emit(sock, "error", error)
        except Exception:
            log.exception("Socket.IO reader of %s failed", sub.stream_id)
            error = {"code": "internal_error", "message": "delivery failed", "jobId": sub.stream_id}
            await self._emit(sock, "error", error)


def _payload(args: tuple[Any, ...]) -> dict[str, Any]:
    data = args[0] if args else None
    if not isinstance(data, dict):
        raise InvalidRequest("the event's payload must be an object")
    return data


def _job_id(data: dict[str, Any]) -> str:
    job_id = data.get("jobId")
    if not isinstance(job_id, str) or not 0 < len(job_id) <= MAX_ID_CHARS:
        raise InvalidRequest("'jobId' must be a job (stream) id, a non-empty string")
    return job_id


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
