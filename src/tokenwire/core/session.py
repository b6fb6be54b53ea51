"""``Session``: one multiplexed connection's subscriptions, limits and ops.

WebSocket (server/ws.py) and Socket.IO (server/socketio_app.py) are thin
adapters around it: they parse their wire messages, call an op, and write what
the session hands their :class:`Port`. The session owns:

- the subscriptions, one :class:`~tokenwire.core.driver.Reader` each (a task
  running the one driver), closed structurally however the task ends;
- the limits: ``max_subscriptions`` a connection, and one subscription a stream
  (``already_subscribed``, 409, on every transport);
- the access checks of every op, and the rate of starts;
- the connection's heartbeat (one due-time and one lazy timer for all its
  subscriptions) and its shutdown;
- with ``broadcasts``, a subscription at the head of its stream parks in the
  stream's broadcast (core/broadcast.py), which writes for it through the port's
  ``writable``/``try_write`` (Socket.IO over WebSocket) until it falls behind.

``unsubscribe``, the end of the stream and the end of the connection *leave*
(the stream's grace period starts when its last subscriber is gone); only
``cancel`` *stops* a stream (docs/protocol.md, "WebSocket": stop is not
leave).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from tokenwire.core.broadcast import Broadcasts, Member
from tokenwire.core.delivery import Delivery, Heartbeat
from tokenwire.core.driver import HeartbeatTimer, Reader, drive
from tokenwire.core.encoder import Encoder, SharedBatches
from tokenwire.core.ops import AlreadySubscribed, too_many_subscriptions
from tokenwire.server.access import CREATE, READ, STOP, Credentials
from tokenwire.stream import Stream

if TYPE_CHECKING:
    from tokenwire.server.services import Services

log = logging.getLogger("tokenwire")


class Port(Protocol):
    """What a multiplexed transport gives its session."""

    @property
    def encoder(self) -> Encoder[Any]: ...

    @property
    def shared(self) -> SharedBatches[Any] | None:
        """The batch encodings shared by every connection of the transport."""
        ...

    async def write(self, out: Any) -> None:
        """One write: a frame or a batch's frames, in order with every other."""
        ...

    async def control(self, out: Any) -> None:
        """A write that never waits for room (an open frame, an error)."""
        ...

    async def ready(self) -> None:
        """Wait for room in the connection's send buffer (before each read)."""
        ...

    async def joined(self, stream_id: str) -> None:
        """A subscription opened (Socket.IO joins the job's room)."""
        ...


class Session:
    """One connection's subscriptions and ops (see the module docstring)."""

    def __init__(
        self,
        services: Services,
        port: Port,
        credentials: Credentials,
        max_subscriptions: int,
        *,
        wait_for_room: bool = False,
        broadcasts: Broadcasts | None = None,
    ) -> None:
        self.services = services
        self.hub = services.hub
        self.config = services.config
        self.port = port
        self.credentials = credentials
        self.max_subscriptions = max_subscriptions
        self.readers: dict[str, Reader] = {}
        # The port is the broadcast's DirectWrite (``writable``, ``try_write``).
        self.broadcasts = broadcasts
        self._ready: Callable[[], Awaitable[None]] | None = port.ready if wait_for_room else None
        self._loop = asyncio.get_running_loop()
        self.heartbeat = Heartbeat(self.config.heartbeat_s, self._loop.time())
        self._timer: HeartbeatTimer | None = None
        if port.encoder.heartbeat() is not None:
            self._timer = HeartbeatTimer(self.heartbeat, self._wake_one)
        self.closed = False

    def _wake_one(self) -> None:
        # A frame of any stream shows the peer the connection is alive: one reader
        # sends the heartbeat.
        for reader in self.readers.values():
            reader.sub.wake()
            return
        self.heartbeat.due = False

    def wrote(self) -> None:
        """The adapter wrote a frame of its own (an ack, an error)."""
        self.heartbeat.wrote(self._loop.time())

    # -- ops ---------------------------------------------------------------------------

    async def start(self, request: Any) -> dict[str, Any]:
        """Start a generation (the ``POST /v1/streams`` body); the caller subscribes."""
        access = self.services.access
        access.check(self.credentials, None, CREATE)
        access.admit_start(self.credentials)
        self._check_room()
        return await self.services.start_generation(request)

    async def subscribe(
        self, stream_id: str, after: int, token: Any = None, coalesce_s: float = 0.0
    ) -> None:
        """Subscribe after seq ``after``: the open frame is written before this returns.
        ``coalesce_s``: at most one write of events per that many seconds (docs/protocol.md,
        "Coalescing")."""
        self.services.access.check(self.credentials, stream_id, READ, token)
        await self.attach(stream_id, after, coalesce_s)

    async def attach(self, stream_id: str, after: int, coalesce_s: float = 0.0) -> None:
        """Subscribe without an access check (a stream this connection just started)."""
        if stream_id in self.readers:
            raise AlreadySubscribed(stream_id)
        self._check_room()
        sub = self.hub.subscribe(stream_id, after, transport=self.port.encoder.transport)
        delivery = Delivery(stream_id, self.port.encoder, self.heartbeat, self.port.shared)
        try:
            opened = await sub.open()
            await self.port.joined(stream_id)
            for out, _, _ in delivery.open(opened, self._loop.time()):
                await self.port.control(out)
        except BaseException:
            sub.close()
            raise
        if self.closed:  # the connection ended while the broker answered
            sub.close()
            return
        run = functools.partial(self._run, coalesce_s=coalesce_s)
        self.readers[stream_id] = Reader(
            sub, delivery, run, self._forget, name=f"tokenwire:{sub.transport}:{stream_id}"
        )

    async def unsubscribe(self, stream_id: str) -> None:
        reader = self.readers.pop(stream_id, None)
        if reader is not None:
            await reader.aclose()

    async def cancel(self, stream_id: str, token: Any = None) -> Stream:
        # Subscribers (this connection among them) get the terminal `cancelled` event.
        self.services.access.check(self.credentials, stream_id, STOP, token)
        return await self.hub.cancel(stream_id)

    # -- subscriptions -----------------------------------------------------------------

    def _check_room(self) -> None:
        if len(self.readers) >= self.max_subscriptions:
            raise too_many_subscriptions(self.max_subscriptions)

    def _forget(self, reader: Reader) -> None:
        if self.readers.get(reader.sub.stream_id) is reader:
            del self.readers[reader.sub.stream_id]

    async def _run(self, reader: Reader, coalesce_s: float) -> None:
        sub = reader.sub
        follow = None
        if self.broadcasts is not None:
            member = Member(sub, reader.delivery, self.port)  # type: ignore[arg-type]
            follow = functools.partial(self.broadcasts.follow, member, coalesce_s)
        try:
            await drive(
                sub,
                reader.delivery,
                self.port.write,
                reader.stop_flag,
                self.hub.metrics,
                self.config.max_batch_events,
                self._ready,
                follow=follow,
                coalesce_s=coalesce_s,
            )
        except OSError:
            pass  # the client went away; the adapter's receive loop sees the disconnect
        except Exception:
            log.exception("%s reader of %s failed", sub.transport, sub.stream_id)
            if not reader.stopped:
                end = reader.delivery.fail("internal_error", "delivery failed")
                for out, _, _ in end:
                    try:
                        await self.port.control(out)
                    except OSError:
                        pass

    # -- the end -----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop every reader and wait for them: no task outlives the connection."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        readers = list(self.readers.values())
        self.readers.clear()
        for reader in readers:
            reader.stop()
        await asyncio.gather(*(reader.task for reader in readers), return_exceptions=True)
