"""The ops of a multiplexed connection and their one validation.

WebSocket and Socket.IO carry the same four ops (docs/protocol.md, "WebSocket",
"Socket.IO"): ``start {request}``, ``subscribe {stream, after}``,
``unsubscribe {stream}``, ``cancel {stream}``, each with an optional ``token``
(and ``subscribe`` with an optional flush window, ``coalesce_ms``).
They differ only in their names for a field (a :class:`Dialect`: Socket.IO says
``jobId`` and ``lastSequence``, seed 004's names) and in the code a malformed
op gets (``bad_request`` on WebSocket, ``invalid_request`` on Socket.IO, as
their clients have always read it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokenwire.core.broadcast import MAX_COALESCE_MS
from tokenwire.core.offsets import MAX_SEQ, seq_from_json
from tokenwire.errors import InvalidRequest, LimitExceeded, TokenwireError, excerpt

OPS = ("start", "subscribe", "unsubscribe", "cancel")
MAX_ID_CHARS = 128
MAX_SUBSCRIPTIONS = 64
"""Streams one connection may be subscribed to at once, by default
(``TOKENWIRE_MAX_SUBSCRIPTIONS_PER_CONNECTION``)."""


class BadOpError(InvalidRequest):
    """An op that is not well formed (its code is the dialect's)."""

    def __init__(self, message: str, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.code = code


class AlreadySubscribedError(TokenwireError):
    status = 409
    code = "already_subscribed"

    def __init__(self, stream_id: str) -> None:
        super().__init__(f"this connection is already subscribed to {stream_id!r}")


# The names before 0.1.0, for the modules that still use them.
BadOp = BadOpError
AlreadySubscribed = AlreadySubscribedError


def too_many_subscriptions(limit: int) -> LimitExceeded:
    return LimitExceeded(
        "too_many_subscriptions", f"a connection may hold at most {limit} subscriptions"
    )


@dataclass(frozen=True, slots=True)
class Dialect:
    """A transport's names for the fields of the ops."""

    stream: str
    after: str
    coalesce: str
    bad_code: str
    op_word: str  # what the transport calls an op: "op" or "event"

    def bad(self, message: str) -> BadOpError:
        return BadOpError(message, self.bad_code)

    def stream_id(self, data: dict[str, Any]) -> str:
        value = data.get(self.stream)
        if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS:
            raise self.bad(f"{self.stream!r} must be a stream id (a non-empty string)")
        return value

    def after_seq(self, data: dict[str, Any]) -> int:
        """The resume offset (docs/protocol.md, "Limits and timeouts": resume offsets)."""
        try:
            return seq_from_json(data.get(self.after), repr(self.after))
        except InvalidRequest as exc:
            raise self.bad(exc.message) from None

    def coalesce_s(self, data: dict[str, Any], default_ms: int) -> float:
        """The subscription's flush window in seconds (docs/protocol.md, "Coalescing"):
        an integer 0..MAX_COALESCE_MS of ms, ``default_ms`` when absent."""
        value = data.get(self.coalesce)
        if value is None:
            return default_ms / 1000
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not 0 <= value <= MAX_COALESCE_MS
        ):
            raise self.bad(
                f"{self.coalesce!r} must be an integer number of milliseconds, 0..{MAX_COALESCE_MS}"
            )
        return value / 1000

    def unknown(self, name: Any) -> BadOpError:
        exc = self.bad(f"unknown {self.op_word} {excerpt(name)}; expected one of: {', '.join(OPS)}")
        if self.op_word == "event":
            exc.code = "unknown_event"
        return exc


WEBSOCKET = Dialect(
    stream="stream", after="after", coalesce="coalesce_ms", bad_code="bad_request", op_word="op"
)
SOCKETIO = Dialect(
    stream="jobId",
    after="lastSequence",
    coalesce="coalesceMs",
    bad_code="invalid_request",
    op_word="event",
)


def request_id(msg: dict[str, Any], dialect: Dialect) -> str | int | None:
    """A WebSocket op's ``id``, echoed in its answers."""
    value = msg.get("id")
    if value is None:
        return None
    if isinstance(value, str) and len(value) <= MAX_ID_CHARS:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_SEQ:
        return value
    raise dialect.bad(f"'id' must be a string of at most {MAX_ID_CHARS} characters or an integer")
