"""The one Transport interface (SSE, NDJSON, WebSocket) and the driver every transport shares.

A :class:`Transport` carries one stream to one :class:`~tokenwire.client.buffer.EventBuffer`:
``connect()``, ``send(message)``, ``close()``, ``state``, and state changes as
events (:meth:`Transport.add_listener`). The logic — resume, dedup, heartbeat,
backoff, breaker — is the sans-I/O :class:`~tokenwire.client.machine.ResumeMachine`;
this module is the thin asyncio shell that performs its actions. A concrete
transport only says how to open a link (``_open``), read from it
(``_receive``, which feeds the machine) and drop it (``_drop``).

Each transport owns exactly one task (the driver); ``close()`` ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from tokenwire.client.buffer import EventBuffer
from tokenwire.client.errors import ClientClosedError, ClientError, ConnectError, ProtocolError
from tokenwire.client.machine import (
    CLOSED,
    CONNECTED,
    ERROR,
    Connect,
    Deliver,
    Disconnect,
    Fail,
    ResumeMachine,
    Sleep,
    StateChanged,
    TransportState,
)
from tokenwire.client.policy import CircuitBreaker, ReconnectPolicy
from tokenwire.events import TOKEN, Event
from tokenwire.tracker import StreamingTracker

log = logging.getLogger("tokenwire.client")


async def within(deadline: float | None, awaitable: Awaitable[Any]) -> bool:
    """Await ``awaitable`` until the loop time ``deadline``; ``False`` if it expired.

    Python 3.11's ``asyncio.timeout`` has a race: when the deadline fires just as
    the awaited future completes, ``Task.cancel()`` leaves a cancellation pending
    that hits the *next* await, after the block exited with a result or another
    exception. That stray cancellation (and only it: ``cancelling() == 0``, nobody
    asked) is absorbed here, whatever way the block ended.
    """
    scope = asyncio.timeout_at(deadline)
    try:
        async with scope:
            await awaitable
    except TimeoutError:
        if scope.expired():
            return False
        raise
    except asyncio.CancelledError:
        raise
    except BaseException:
        if scope.expired():
            await _absorb_stray_cancel()
        raise
    if scope.expired():
        await _absorb_stray_cancel()
    return True


async def _absorb_stray_cancel() -> None:
    task = asyncio.current_task()
    try:
        await asyncio.sleep(0)
    except asyncio.CancelledError:
        if task is None or task.cancelling():
            raise


@dataclass(frozen=True, slots=True)
class StateEvent:
    """A transport's state changed (what ``on_state`` callbacks receive)."""

    stream_id: str | None
    transport: str
    old: TransportState
    new: TransportState
    error: ClientError | None = None


StateListener = Callable[[StateEvent], Any]


@dataclass(slots=True)
class Counters:
    """What one transport did. The manager sums them (live and retired)."""

    links: int = 0
    """Links opened (HTTP responses, WebSocket subscriptions)."""
    reconnects: int = 0
    events: int = 0
    bytes: int = 0
    duplicates: int = 0

    def add(self, other: Counters) -> None:
        self.links += other.links
        self.reconnects += other.reconnects
        self.events += other.events
        self.bytes += other.bytes
        self.duplicates += other.duplicates


MAX_COALESCE_MS = 1000
"""The longest flush window a server takes (docs/protocol.md, "Coalescing")."""


class Transport:
    """One stream over one wire protocol, resumable. Subclasses: SSE, NDJSON, WebSocket."""

    kind: ClassVar[str] = ""

    def __init__(
        self,
        stream_id: str | None,
        *,
        after: int = 0,
        policy: ReconnectPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        heartbeat_s: float | None = 15.0,
        buffer: EventBuffer | None = None,
        coalesce_ms: int | None = None,
    ) -> None:
        if coalesce_ms is not None and (
            isinstance(coalesce_ms, bool)
            or not isinstance(coalesce_ms, int)
            or not 0 <= coalesce_ms <= MAX_COALESCE_MS
        ):
            raise ValueError(f"coalesce_ms must be an integer 0..{MAX_COALESCE_MS}, or None")
        self.coalesce_ms = coalesce_ms
        """The server's flush window for this subscription (docs/protocol.md,
        "Coalescing"); None: the server's default."""
        self.machine = ResumeMachine(
            stream_id, after=after, policy=policy, breaker=breaker, heartbeat_s=heartbeat_s
        )
        self.buffer = buffer if buffer is not None else EventBuffer()
        self.counters = Counters()
        self.tracker = StreamingTracker()
        self._listeners: list[StateListener] = []
        self._task: asyncio.Task[None] | None = None
        self._connected: asyncio.Future[None] | None = None
        self.on_finish: Callable[[Transport], Any] | None = None
        """Called once when the driver has ended (the manager retires the transport)."""

    # -- the interface ----------------------------------------------------------------

    @property
    def stream_id(self) -> str | None:
        return self.machine.stream_id

    @property
    def state(self) -> TransportState:
        return self.machine.state

    @property
    def last_seq(self) -> int:
        """The last seq handed to the buffer."""
        return self.machine.last_seq

    @property
    def last_error(self) -> ClientError | None:
        return self.machine.last_error

    def add_listener(self, listener: StateListener) -> None:
        """Call ``listener(StateEvent)`` on every state change (in the driver task)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: StateListener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def start(self) -> None:
        """Start the driver task (idempotent); it connects and keeps the stream flowing."""
        if self._task is None:
            if self.machine.state.final:
                raise ClientClosedError("the transport is closed", stream_id=self.stream_id)
            name = f"tokenwire-client:{self.kind}:{self.stream_id}"
            self._task = asyncio.get_running_loop().create_task(self._run(), name=name)

    async def connect(self) -> None:
        """Start if needed, and return once the first link is open (``connected``).
        Raises the error that ended the transport instead, if it ends first."""
        if self.state is CONNECTED:
            return
        if self.state.final:
            raise self.last_error or ClientClosedError("closed", stream_id=self.stream_id)
        if self._connected is None:
            self._connected = asyncio.get_running_loop().create_future()
        self.start()
        await asyncio.shield(self._connected)

    async def send(self, message: Mapping[str, Any]) -> None:
        """Send a control message about this stream: ``{"op": "cancel"}`` stops it."""
        raise NotImplementedError

    async def close(self) -> None:
        """Leave: drop the link and end the driver. The stream keeps running on the
        server (for its grace period); use ``send({"op": "cancel"})`` to stop it."""
        task = self._task
        if task is None:
            self.machine.close(0.0)
            self._finish()
            return
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def snapshot_counters(self) -> Counters:
        c = self.counters
        m = self.machine
        return Counters(c.links, m.reconnects, c.events, c.bytes, m.duplicates)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- what a concrete transport provides ---------------------------------------------

    async def _open(self, after: int) -> None:
        """Open a link resuming after seq ``after``. Raise a :exc:`ClientError` on failure."""
        raise NotImplementedError

    async def _receive(self) -> None:
        """Wait for data on the open link and feed it to ``self.machine``. Raise
        :exc:`ConnectionLostError` when the link ends, :exc:`ProtocolError` on bad data."""
        raise NotImplementedError

    async def _drop(self, reason: str) -> None:
        """Drop the current link (idempotent)."""
        raise NotImplementedError

    def _activity(self) -> float | None:
        """The last time the link showed life, if the link tracks it itself (a shared
        WebSocket hears other streams and pings); ``None`` otherwise."""
        return None

    # -- the driver ---------------------------------------------------------------------

    async def _run(self) -> None:
        machine = self.machine
        loop = asyncio.get_running_loop()
        try:
            machine.start(loop.time())
            while True:
                await self._perform(loop)
                if machine.state.final:
                    return
                deadline = machine.deadline
                if machine.link != "none":
                    try:
                        if not await within(deadline, self._receive()):
                            self._expired(loop)
                    except ProtocolError as exc:
                        machine.fail(exc, loop.time())
                    except ClientError as exc:
                        machine.connection_lost(exc, loop.time())
                elif deadline is not None:
                    await asyncio.sleep(max(0.0, deadline - loop.time()))
                    machine.tick(loop.time())
                else:  # nothing can happen any more
                    machine.fail(ProtocolError("the state machine stalled"), loop.time())
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            log.exception("client transport %s failed", self.kind)
            machine.fail(ClientError(f"internal error: {exc!r}"), loop.time())
        finally:
            await self._shutdown(loop)

    def _expired(self, loop: asyncio.AbstractEventLoop) -> None:
        """The machine's deadline passed while waiting on the link."""
        heard = self._activity()
        if heard is not None:
            self.machine.bytes_received(heard)
        self.machine.tick(loop.time())

    async def _perform(self, loop: asyncio.AbstractEventLoop) -> None:
        machine = self.machine
        while True:
            actions = machine.actions()
            if not actions:
                return
            for action in actions:
                kind = type(action)
                if kind is Deliver:
                    await self._deliver(action.event, loop)  # type: ignore[union-attr]
                elif kind is Connect:
                    await self._connect(action.after, loop)  # type: ignore[union-attr]
                elif kind is Sleep:
                    await asyncio.sleep(action.delay)  # type: ignore[union-attr]
                    machine.tick(loop.time())
                elif kind is Disconnect:
                    await self._drop(action.reason)  # type: ignore[union-attr]
                elif kind is StateChanged:
                    self._emit(action)  # type: ignore[arg-type]
                elif kind is Fail:
                    pass  # the buffer gets the error when the driver ends

    async def _connect(self, after: int, loop: asyncio.AbstractEventLoop) -> None:
        machine = self.machine
        try:
            opened = await within(machine.deadline, self._open(after))
        except ProtocolError as exc:
            machine.fail(exc, loop.time())
        except ClientError as exc:
            machine.connect_failed(exc, loop.time())
        else:
            if opened:
                self.counters.links += 1
                machine.bytes_received(loop.time())
                return
            await self._drop("timeout")
            self._expired(loop)
            if machine.link == "dialing":  # half-open: the link cannot be used
                machine.connect_failed(ConnectError("the attempt timed out"), loop.time())

    async def _deliver(self, event: Event, loop: asyncio.AbstractEventLoop) -> None:
        self.counters.events += 1
        if event.kind == TOKEN:
            first = event.fields.get("from_seq")
            self.tracker.on_token(1 if first is None else event.seq - first + 1)
        if not self.buffer.try_put(event):
            await self.buffer.put(event)
            self.machine.reading_resumed(loop.time())

    def _emit(self, change: StateChanged) -> None:
        new = change.new
        fut = self._connected
        if fut is not None and not fut.done():
            if new is CONNECTED or (new is CLOSED and self.machine.ended):
                fut.set_result(None)
            elif new is ERROR or new is CLOSED:
                fut.set_exception(
                    change.error or ClientClosedError("closed", stream_id=self.stream_id)
                )
                fut.exception()  # retrieved: nobody may be waiting
        if not self._listeners:
            return
        event = StateEvent(self.stream_id, self.kind, change.old, new, change.error)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("on_state listener failed")

    async def _shutdown(self, loop: asyncio.AbstractEventLoop) -> None:
        machine = self.machine
        if not machine.state.final:
            machine.close(loop.time())
        for action in machine.actions():
            if type(action) is StateChanged:
                self._emit(action)  # type: ignore[arg-type]
        with contextlib.suppress(Exception):
            await self._drop("closed")
        self.counters.reconnects = machine.reconnects
        self.counters.duplicates = machine.duplicates
        self._finish()
        if self.on_finish is not None:
            self.on_finish(self)

    def _finish(self) -> None:
        machine = self.machine
        ended = machine.terminal is not None or machine.ended
        error = None if ended else machine.last_error
        if not ended and error is None:
            error = ClientClosedError("the transport was closed", stream_id=self.stream_id)
        self.buffer.finish(error)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.stream_id} {self.state} last_seq={self.last_seq}>"
