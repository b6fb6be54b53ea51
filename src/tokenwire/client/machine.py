"""The reconnect-and-resume state machine every client transport shares.

Sans-I/O, like the ``Protocol`` of the websockets library: :class:`ResumeMachine`
never touches a socket, a task or a clock. A transport feeds it what happened
(an ``open`` frame, an event, bytes, a lost link, the current time) and then
performs the actions it returns (:meth:`ResumeMachine.actions`): connect
resuming after seq N, deliver an event, sleep, disconnect, fail. The same
machine therefore serves SSE, NDJSON and WebSocket, and its tests feed it
frames and times without any network.

States (:class:`TransportState`, observable through :class:`StateChanged`)::

    idle --start--> connecting --open--> connected --terminal event / close--> closed
                        |                 |     ^
                 attempt failed      link lost  | open
                        v            or silent  |
                   reconnecting <---------------+
                        ^  |
                        +--+  attempt failed: back off (full jitter), breaker permitting

    any state --fatal (gap, 404, protocol, attempts exhausted)--> error --close--> closed

Rules, from docs/protocol.md:

- Every link starts with an ``open`` frame. ``recovered: false`` means the
  history after ``last_seq`` is gone: :exc:`StreamGapError`, never a silent skip.
  So does an epoch that changed under a stream the client has events of.
- Events are deduplicated by ``seq``: a frame whose ``seq`` is at or below the
  last delivered is dropped. A merged catch-up frame covers ``from_seq..seq``;
  one that starts past ``last_seq + 1`` is a gap.
- The terminal event (``done``, ``error``, ``cancelled``) is delivered, then the
  machine closes: nothing after it is delivered. An attempt answered 204 (the
  subscription resumed at or past the terminal event) closes it too, cleanly.
- Silence: no bytes for two heartbeat intervals means the link is dead even if
  the socket looks open; the machine drops it and reconnects.
- An attempt fails when no ``open`` frame arrives (refused, an HTTP error, cut
  or silent before ``open``). Failed attempts in a row drive the backoff and
  the circuit breaker; the count restarts at every ``open``.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tokenwire.client.errors import (
    ClientError,
    ConnectError,
    ConnectionLostError,
    HeartbeatTimeoutError,
    ProtocolError,
    ReconnectExhaustedError,
    StreamGapError,
)
from tokenwire.client.policy import CircuitBreaker, ReconnectPolicy, full_jitter
from tokenwire.events import KINDS, PROGRESS, TENSOR_CHUNK, TERMINAL_KINDS, Event


class TransportState(enum.StrEnum):
    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    ERROR = "error"
    CLOSED = "closed"

    @property
    def final(self) -> bool:
        return self is TransportState.ERROR or self is TransportState.CLOSED


IDLE = TransportState.IDLE
CONNECTING = TransportState.CONNECTING
CONNECTED = TransportState.CONNECTED
RECONNECTING = TransportState.RECONNECTING
ERROR = TransportState.ERROR
CLOSED = TransportState.CLOSED


# -- actions: what the transport must do ---------------------------------------------


@dataclass(slots=True)
class Connect:
    """Open a link that resumes after ``after`` (``?after=N``, WS ``subscribe``)."""

    after: int


@dataclass(slots=True)
class Disconnect:
    """Drop the current link (``reason``: done, closed, heartbeat, error, suspend)."""

    reason: str


@dataclass(slots=True)
class Deliver:
    """Hand ``event`` to the application, in order."""

    event: Event


@dataclass(slots=True)
class Sleep:
    """Wait ``delay`` seconds, then call :meth:`ResumeMachine.tick`."""

    delay: float


@dataclass(slots=True)
class Fail:
    """The stream cannot continue: raise ``error`` to the application."""

    error: ClientError


@dataclass(slots=True)
class StateChanged:
    """The observable state went from ``old`` to ``new`` (``error``: why, if any)."""

    old: TransportState
    new: TransportState
    error: ClientError | None = None


Action = Connect | Disconnect | Deliver | Sleep | Fail | StateChanged

# Link phases, inside the observable states.
_NONE, _DIALING, _OPEN = 0, 1, 2
_LINK_NAMES = ("none", "dialing", "open")


def wire_event(obj: Mapping[str, Any], seq: int) -> Event | None:
    """The :class:`Event` for a wire event object; ``None`` for a kind this client does
    not know (a newer server): its seq still counts, the event is skipped."""
    kind = obj.get("kind")
    if kind not in KINDS:
        return None
    fields = dict(obj)
    del fields["seq"], fields["kind"]
    binary = None
    if kind == TENSOR_CHUNK:
        data = fields.get("data")
        if isinstance(data, bytes | bytearray | memoryview):
            binary = fields.pop("data")  # the WebSocket binary frame: raw bytes
    return Event(kind, fields, seq=seq, binary=binary)


class ResumeMachine:
    """One stream's subscription: resume, dedup, heartbeat and reconnect logic.

    ``stream_id`` may be ``None`` until the first ``open`` names it. ``after`` is
    where delivery starts (events after that seq). ``breaker`` is shared by the
    streams of one transport; ``heartbeat_s`` is the server's heartbeat interval
    (``None`` disables the silence check).
    """

    def __init__(
        self,
        stream_id: str | None = None,
        *,
        after: int = 0,
        policy: ReconnectPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        heartbeat_s: float | None = 15.0,
    ) -> None:
        if after < 0:
            raise ValueError("after must be >= 0")
        if heartbeat_s is not None and heartbeat_s <= 0:
            raise ValueError("heartbeat_s must be > 0 or None")
        self.policy = policy = policy or ReconnectPolicy()
        self.stream_id = stream_id
        self.breaker = breaker
        self.heartbeat_s = heartbeat_s
        self.state = IDLE
        self.last_seq = after
        """The last seq delivered (or the starting point)."""
        self.epoch: str | None = None
        self.failures = 0
        """Failed attempts in a row (reset by every ``open``)."""
        self.reconnects = 0
        """Links opened after the first one."""
        self.duplicates = 0
        """Frames dropped because their seq was already delivered."""
        self.suspensions = 0
        """Times the transport left and resubscribed for flow control."""
        self.last_error: ClientError | None = None
        self.terminal: Event | None = None
        self.ended = False
        """The server said the stream ended at or before ``last_seq`` (HTTP 204)."""
        self._rng = policy.rng or random.Random()
        self._base = policy.base_s
        self._silent_limit = 2 * heartbeat_s if heartbeat_s is not None else None
        self._link = _NONE
        self._dialed = False
        self._dial_at = 0.0
        self._heard_at = 0.0
        self._wake_at: float | None = None
        self._actions: list[Action] = []

    # -- outputs ----------------------------------------------------------------------

    def actions(self) -> list[Action]:
        """The actions produced since the last call, in order; perform them all."""
        out = self._actions
        if out:
            self._actions = []
        return out

    @property
    def link(self) -> str:
        """``none``, ``dialing`` (waiting for ``open``) or ``open``."""
        return _LINK_NAMES[self._link]

    @property
    def retry_s(self) -> float:
        """The backoff scale now: ``base_s``, or the server's ``retry:`` if honoured."""
        return self._base

    @property
    def deadline(self) -> float | None:
        """When to call :meth:`tick` next at the latest (``None``: only on input)."""
        if self._link == _NONE:
            return self._wake_at
        silent = None if self._silent_limit is None else self._heard_at + self._silent_limit
        if self._link == _DIALING:
            limit = self._dial_at + self.policy.connect_timeout_s
            return limit if silent is None or limit < silent else silent
        return silent

    # -- inputs -----------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Begin: connect for the first time."""
        if self.state is not IDLE:
            raise RuntimeError(f"start() in state {self.state}")
        self._set_state(CONNECTING)
        self._dial(now)

    def receive_open(self, frame: Mapping[str, Any], now: float) -> None:
        """The ``open`` control frame that starts every link."""
        if self.state.final:
            return
        if self._link != _DIALING:
            self._fatal(ProtocolError("an open frame arrived outside a subscription attempt"))
            return
        self._heard_at = now
        stream = frame.get("stream")
        if self.stream_id is None and isinstance(stream, str):
            self.stream_id = stream
        elif stream is not None and stream != self.stream_id:
            self._fatal(ProtocolError(f"open frame for another stream {stream!r}"))
            return
        epoch = frame.get("epoch")
        if frame.get("recovered") is False:
            first = frame.get("first_seq")
            first_seq = first if isinstance(first, int) else self.last_seq + 1
            self._fatal(StreamGapError(self.stream_id, self.last_seq, first_seq))
            return
        if self.epoch is not None and epoch != self.epoch and self.last_seq > 0:
            self._fatal(
                StreamGapError(
                    self.stream_id,
                    self.last_seq,
                    1,
                    reason=f"the stream's log was replaced (epoch {self.epoch} -> {epoch})",
                )
            )
            return
        if isinstance(epoch, str):
            self.epoch = epoch
        self._link = _OPEN
        self.failures = 0
        if self.breaker is not None:
            self.breaker.record_success(now)
        if self.state is not CONNECTED:
            self._set_state(CONNECTED)

    def receive_event(self, obj: Mapping[str, Any], now: float) -> None:
        """One sequenced event object (``seq``, ``kind``, fields; ``from_seq`` if merged)."""
        if self._link != _OPEN:
            if not self.state.final:
                self._fatal(ProtocolError("an event arrived before the open frame"))
            return
        self._heard_at = now
        seq = obj.get("seq")
        if type(seq) is not int:
            self._fatal(ProtocolError(f"event without an integer seq: {obj.get('seq')!r}"))
            return
        last = self.last_seq
        if seq <= last:
            self.duplicates += 1
            return
        first = obj.get("from_seq", seq)
        if first != last + 1:
            if type(first) is not int or first > seq:
                self._fatal(ProtocolError(f"bad from_seq {first!r} for seq {seq}"))
                return
            if first > last + 1:
                reason = f"frame covers {first}..{seq}"
                self._fatal(StreamGapError(self.stream_id, last, first, reason=reason))
                return
            if obj.get("kind") != PROGRESS:
                # A merged token frame that overlaps what was delivered cannot be split.
                self._fatal(ProtocolError(f"frame {first}..{seq} overlaps delivered seq {last}"))
                return
        self.last_seq = seq
        event = wire_event(obj, seq)
        if event is None:
            return
        self._actions.append(Deliver(event))
        if event.kind in TERMINAL_KINDS:
            self.terminal = event
            self._link = _NONE
            self._set_state(CLOSED)
            self._actions.append(Disconnect("done"))

    def receive_ended(self, now: float) -> None:
        """The server answered the attempt with "ended, nothing after ``last_seq``"
        (HTTP 204: resumed at or past the terminal event). The machine closes
        without an error and without a terminal event of its own."""
        if self.state.final:
            return
        if self._link != _DIALING:
            self._fatal(ProtocolError("an end answer arrived outside a subscription attempt"))
            return
        self.ended = True
        self.failures = 0
        self._link = _NONE
        self._set_state(CLOSED)
        self._actions.append(Disconnect("done"))

    def receive_retry(self, ms: int) -> None:
        """The SSE ``retry:`` field: the server's reconnection time, in milliseconds."""
        if self.policy.honor_retry and ms >= 0:
            self._base = ms / 1000.0

    def bytes_received(self, now: float) -> None:
        """Bytes arrived on the link (any bytes: heartbeats, partial frames)."""
        self._heard_at = now

    def reading_resumed(self, now: float) -> None:
        """The transport stopped reading for a while (the application was slow:
        backpressure) and reads again. That time was not the server's silence."""
        if self._heard_at < now:
            self._heard_at = now

    def connect_failed(self, error: ClientError, now: float) -> None:
        """The attempt started by the last :class:`Connect` failed before ``open``."""
        if self.state.final or self._link == _NONE:
            return
        self._link = _NONE
        self._lost(error, now, failed_attempt=True)

    def connection_lost(self, error: ClientError | None, now: float) -> None:
        """The link ended (EOF, reset) or broke. ``None``: a clean end of the response."""
        if self.state.final or self._link == _NONE:
            return
        was = self._link
        self._link = _NONE
        if error is None:
            error = ConnectionLostError("the link closed before the terminal event")
        self._lost(error, now, failed_attempt=was == _DIALING)

    def suspend(self, now: float) -> None:
        """Flow control on a shared link: the transport left the subscription because
        the application fell behind; resubscribe after ``last_seq`` at once."""
        if self.state.final or self._link == _NONE:
            return
        self._link = _DIALING
        self._dial_at = self._heard_at = now
        self.suspensions += 1
        self._actions.append(Connect(self.last_seq))

    def fail(self, error: ClientError, now: float) -> None:
        """A fatal error found by the transport (a protocol violation, a bound exceeded)."""
        if not self.state.final:
            self._fatal(error)

    def tick(self, now: float) -> None:
        """Time passed: wake from a backoff, or notice a silent link."""
        if self.state.final or self.state is IDLE:
            return
        if self._link == _NONE:
            if self._wake_at is not None and now >= self._wake_at:
                self._wake_at = None
                self._dial(now)
            return
        deadline = self.deadline
        if deadline is None or now < deadline:
            return
        was = self._link
        self._link = _NONE
        self._actions.append(Disconnect("heartbeat"))
        silent = now - self._heard_at
        error: ClientError
        if self._silent_limit is not None and silent >= self._silent_limit:
            error = HeartbeatTimeoutError(silent)
        else:
            error = ConnectError(f"no open frame within {self.policy.connect_timeout_s:g}s")
        self._lost(error, now, failed_attempt=was == _DIALING)

    def close(self, now: float) -> None:
        """The application leaves."""
        if self.state is CLOSED:
            return
        if self._link != _NONE:
            self._link = _NONE
            self._actions.append(Disconnect("closed"))
        self._wake_at = None
        self._set_state(CLOSED)

    # -- internals --------------------------------------------------------------------

    def _set_state(self, new: TransportState, error: ClientError | None = None) -> None:
        old = self.state
        self.state = new
        self._actions.append(StateChanged(old, new, error))

    def _dial(self, now: float) -> None:
        wait = self.breaker.allow(now) if self.breaker is not None else 0.0
        if wait > 0:
            self._wake_at = now + wait
            self._actions.append(Sleep(wait))
            return
        self._link = _DIALING
        self._dial_at = self._heard_at = now
        if self._dialed:
            self.reconnects += 1
        self._dialed = True
        self._actions.append(Connect(self.last_seq))

    def _lost(self, error: ClientError, now: float, *, failed_attempt: bool) -> None:
        error = error.at(self.stream_id, self.last_seq)
        self.last_error = error
        if not error.retryable:
            self._fatal(error)
            return
        if failed_attempt:
            self.failures += 1
            if self.breaker is not None:
                self.breaker.record_failure(now)
            limit = self.policy.max_attempts
            if limit is not None and self.failures >= limit:
                exhausted = ReconnectExhaustedError(
                    self.failures, error, stream_id=self.stream_id, last_seq=self.last_seq
                )
                self._fatal(exhausted)
                return
        delay = full_jitter(self.failures, self._base, self.policy.cap_s, self._rng)
        if self.state is not RECONNECTING:
            self._set_state(RECONNECTING, error)
        self._wake_at = now + delay
        self._actions.append(Sleep(delay))

    def _fatal(self, error: ClientError) -> None:
        error = error.at(self.stream_id, self.last_seq)
        self.last_error = error
        if self._link != _NONE:
            self._link = _NONE
            self._actions.append(Disconnect("error"))
        self._wake_at = None
        self._set_state(ERROR, error)
        self._actions.append(Fail(error))

    def __repr__(self) -> str:
        return (
            f"ResumeMachine({self.stream_id!r}, {self.state}, link={self.link}, "
            f"last_seq={self.last_seq}, failures={self.failures})"
        )
