"""Exceptions raised by the tokenwire client.

Every exception the client raises derives from :exc:`ClientError`, a branch of
the package's one tree (:mod:`tokenwire.errors`)::

    ClientError                        a TokenwireError; optional stream_id and last_seq
    ├── TransportError                 the link failed or broke (retryable)
    │   ├── ConnectError               could not connect (refused, DNS, TLS, timeout)
    │   ├── ConnectionLostError        the link ended before the terminal event
    │   └── HeartbeatTimeoutError      no bytes for two heartbeat intervals
    ├── HTTPStatusError                the server answered with an error (status_code, code)
    │   ├── AuthenticationError        401 / 403
    │   ├── StreamNotFoundError        404: unknown stream, or expired after retention;
    │   │                              also a tokenwire.errors.StreamNotFoundError
    │   ├── RequestRejectedError       any other 4xx (422 invalid_request, 413 ...)
    │   ├── RateLimitedError           429 too_many_streams / rate_limited ... (retryable);
    │   │                              also a tokenwire.errors.LimitExceededError
    │   └── ServerUnavailableError     5xx (retryable)
    ├── ProtocolError                  the server broke the wire protocol
    ├── StreamGapError                 history the client asked for is gone (first_seq)
    ├── ReconnectExhaustedError        gave up after max attempts (attempts, last_error)
    ├── StreamEndedError               the stream ended without an answer
    │   ├── StreamFailedError          terminal ``error {code, message}``
    │   └── StreamCancelledError       terminal ``cancelled {reason}``
    ├── ResourceLimitError             a client-side limit was reached (limit, value)
    └── ClientClosedError              the client or the handle was closed

Exceptions carry structured fields and build their message from them, so an
application branches on fields, never on message text. ``retryable`` says
whether the reconnect state machine tries again after it.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from tokenwire import errors


class ClientError(errors.TokenwireError):
    """Root of the client's exceptions.

    ``stream_id`` and ``last_seq`` (the last seq delivered to the application's
    buffer) are set when the error concerns one stream; the state machine fills
    them in when it raises an error that a transport created without them.
    """

    code = "client_error"
    retryable: ClassVar[bool] = False

    def __init__(
        self, detail: str = "", *, stream_id: str | None = None, last_seq: int | None = None
    ) -> None:
        # Not super(): a class that also derives from a server error (404, 429) must
        # not run that error's constructor with the client's arguments.
        errors.TokenwireError.__init__(self, detail)
        self.detail = detail
        self.stream_id = stream_id
        self.last_seq = last_seq

    def _what(self) -> str:
        return self.detail or type(self).__name__

    def __str__(self) -> str:
        where = []
        if self.stream_id is not None:
            where.append(f"stream {self.stream_id}")
        if self.last_seq is not None:
            where.append(f"last seq {self.last_seq}")
        return f"{self._what()} ({', '.join(where)})" if where else self._what()

    def at(self, stream_id: str | None, last_seq: int) -> ClientError:
        """This error, placed in ``stream_id`` at ``last_seq`` where unset. One error
        can reach several streams (a shared connection broke): a stream other than
        the one it names gets its own copy."""
        err = self
        if self.stream_id is not None and self.stream_id != stream_id:
            err = copy.copy(self)
            err.stream_id = stream_id
            err.last_seq = None
        if err.stream_id is None:
            err.stream_id = stream_id
        if err.last_seq is None:
            err.last_seq = last_seq
        return err


# -- the link ---------------------------------------------------------------------


class TransportError(ClientError):
    """The link failed or broke; the state machine reconnects after it."""

    retryable = True


class ConnectError(TransportError):
    """Could not open a link (refused, DNS, TLS, connect timeout)."""


class ConnectionLostError(TransportError):
    """The link ended (EOF or reset) before the stream's terminal event."""


class HeartbeatTimeoutError(TransportError):
    """No bytes arrived for ``silent_s`` seconds (two heartbeat intervals)."""

    def __init__(self, silent_s: float, **kw: Any) -> None:
        super().__init__(**kw)
        self.silent_s = silent_s

    def _what(self) -> str:
        return f"no bytes for {self.silent_s:.1f}s (two heartbeat intervals)"


# -- the server said no -------------------------------------------------------------


class HTTPStatusError(ClientError):
    """The server answered with an error: ``status_code`` and its JSON ``code``."""

    def __init__(self, status_code: int, code: str = "", message: str = "", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.status = self.status_code = status_code
        self.code = code
        self.message = message

    def _what(self) -> str:
        label = f"HTTP {self.status_code}" + (f" {self.code}" if self.code else "")
        return f"{label}: {self.message}" if self.message else label


class AuthenticationError(HTTPStatusError):
    """401 / 403: the API key is missing or refused."""


class StreamNotFoundError(HTTPStatusError, errors.StreamNotFoundError):
    """404: the stream is unknown, or expired after its retention."""


class RequestRejectedError(HTTPStatusError):
    """A 4xx other than 401/403/404/429: the request itself is wrong."""


class RateLimitedError(HTTPStatusError, errors.LimitExceededError):
    """429: a server limit was reached; it may pass, so it is retried."""

    retryable = True


class ServerUnavailableError(HTTPStatusError):
    """5xx: the server is failing or overloaded; retried."""

    retryable = True


_BY_STATUS: dict[int, type[HTTPStatusError]] = {
    401: AuthenticationError,
    403: AuthenticationError,
    404: StreamNotFoundError,
    429: RateLimitedError,
}

# WebSocket errors carry a code, not a status.
_CODE_STATUS = {
    "not_found": 404,
    "unauthorized": 401,
    "invalid_token": 401,
    "token_expired": 401,
    "forbidden": 403,
    "too_many_streams": 429,
    "too_many_subscribers": 429,
    "too_many_subscriptions": 429,
    "too_many_connections": 429,
    "rate_limited": 429,
    "limit_exceeded": 429,
    "overloaded": 503,
    "internal_error": 500,
}


def status_error(status_code: int, code: str = "", message: str = "", **kw: Any) -> HTTPStatusError:
    """The exception for an error answer: its class is chosen by the status."""
    cls = _BY_STATUS.get(status_code)
    if cls is None:
        cls = ServerUnavailableError if status_code >= 500 else RequestRejectedError
    return cls(status_code, code, message, **kw)


def code_error(code: str, message: str = "", **kw: Any) -> HTTPStatusError:
    """The exception for a WebSocket ``error`` frame, mapped through the HTTP status."""
    return status_error(_CODE_STATUS.get(code, 400), code, message, **kw)


# -- the stream -----------------------------------------------------------------------


class ProtocolError(ClientError):
    """The server broke the wire protocol: a malformed or oversized frame, an event
    before ``open``, a seq that goes backwards inside a frame."""


class StreamGapError(ClientError):
    """Events the client needs are no longer on the server.

    ``last_seq`` is the last seq the client has; ``first_seq`` the first one the
    server still holds (``open.recovered == false``), so ``last_seq + 1 ..
    first_seq - 1`` are lost. ``reason`` says how it was detected.
    """

    def __init__(
        self,
        stream_id: str | None,
        last_seq: int,
        first_seq: int,
        reason: str = "history no longer retained",
    ) -> None:
        super().__init__(stream_id=stream_id, last_seq=last_seq)
        self.first_seq = first_seq
        self.reason = reason

    def _what(self) -> str:
        return (
            f"gap after seq {self.last_seq}: the server's history starts at "
            f"seq {self.first_seq} ({self.reason})"
        )


class ReconnectExhaustedError(ClientError):
    """The state machine gave up after ``attempts`` failed attempts in a row."""

    def __init__(self, attempts: int, last_error: ClientError | None, **kw: Any) -> None:
        super().__init__(**kw)
        self.attempts = attempts
        self.last_error = last_error

    def _what(self) -> str:
        last = self.last_error
        why = "" if last is None else f"; last: {type(last).__name__}: {last._what()}"
        return f"gave up after {self.attempts} failed attempts{why}"


class StreamEndedError(ClientError):
    """The stream ended without an answer (raised by ``text()``); ``partial_text``
    is what had arrived."""

    def __init__(self, partial_text: str = "", **kw: Any) -> None:
        super().__init__(**kw)
        self.partial_text = partial_text


class StreamFailedError(StreamEndedError):
    """The stream's terminal event is ``error {code, message}``."""

    def __init__(self, code: str, message: str, partial_text: str = "", **kw: Any) -> None:
        super().__init__(partial_text, **kw)
        self.code = code
        self.message = message

    def _what(self) -> str:
        return f"stream failed: {self.code}: {self.message}"


class StreamCancelledError(StreamEndedError):
    """The stream's terminal event is ``cancelled {reason}``."""

    def __init__(self, reason: str, partial_text: str = "", **kw: Any) -> None:
        super().__init__(partial_text, **kw)
        self.reason = reason

    def _what(self) -> str:
        return f"stream cancelled: {self.reason}"


# -- the client ---------------------------------------------------------------------


class ResourceLimitError(ClientError):
    """A client-side limit (``limit``, e.g. ``max_streams``) is at ``value``."""

    def __init__(self, limit: str, value: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.limit = limit
        self.value = value

    def _what(self) -> str:
        return f"client limit {self.limit}={self.value} reached"


class ClientClosedError(ClientError):
    """The client, its manager or the handle was closed."""
