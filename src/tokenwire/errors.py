"""Every exception tokenwire raises, server and client alike, derives from
:exc:`TokenwireError`::

    TokenwireError                    status, code, message; to_dict() is the JSON error body
    ├── InvalidRequestError           422 invalid_request: bad input
    │   ├── BodyTooLargeError         413 body_too_large
    │   ├── UnknownModelError         422 model_not_found
    │   ├── UnknownFieldError         422 unknown_field            (tokenwire.server.services)
    │   └── BadOpError                an op not well formed: the transport's code
    │                                 (bad_request, invalid_request) (tokenwire.core.ops)
    ├── RequestTimeoutError           408 request_timeout          (tokenwire.server.errors)
    ├── UnsupportedMediaTypeError     415                          (tokenwire.server.access)
    ├── UnauthorizedError             401 unauthorized             (tokenwire.server.access)
    ├── InvalidTokenError             401 invalid_token            (tokenwire.server.tokens)
    │   └── TokenExpiredError         401 token_expired: refresh the token
    ├── ForbiddenError                403 forbidden                (tokenwire.server.access)
    │   └── ChatTakenError            403 chat_taken               (tokenwire.server.ai_sdk)
    ├── StreamNotFoundError           404 not_found: unknown, or expired after retention
    ├── AlreadySubscribedError        409 already_subscribed       (tokenwire.core.ops)
    ├── StopTimeoutError              504 stop_timeout             (tokenwire.broker.redis_control)
    ├── StreamLaggedError             409 lagged: a subscriber fell behind retention
    ├── LimitExceededError            429 too_many_streams, too_many_subscribers, …
    ├── TooManyRequestsError          429 rate_limited             (tokenwire.server.ratelimit)
    ├── TooManyConnectionsError       429 too_many_connections     (tokenwire.server.ratelimit)
    ├── OverloadedError               503 overloaded
    │   ├── JobQueueFullError         503 queue_full               (tokenwire.broker.redis_jobs)
    │   └── NoWorkersError            503 no_workers: no node takes jobs
    ├── BrokerUnavailable             503 broker_unavailable       (tokenwire.broker.redis_log)
    ├── OpenAIError                   an answer in OpenAI's shape  (tokenwire.server.openai_api)
    ├── SSEProtocolError              also a ValueError            (tokenwire.sse)
    ├── NDJSONProtocolError           also a ValueError            (tokenwire.ndjson)
    ├── ModelError                    502 model_error              (tokenwire.models.errors)
    │   ├── ModelBusyError            503 model_busy: its queue is full
    │   ├── ModelUnavailableError     503 model_unavailable: workers crash in a loop
    │   ├── ModelCrashedError         model_crashed: the worker died mid-answer
    │   ├── ModelStartFailedError     model_start_failed
    │   ├── ContextLengthExceededError  422 context_length_exceeded
    │   └── UpstreamError             upstream_error: a remote model server failed
    │       ├── UpstreamHTTPError, UpstreamUnreachableError, UpstreamProtocolError
    ├── ActorError                    tokenwire.actors
    │   ├── ActorNotFoundError, StreamingNotSupportedError, ActorTimeoutError
    ├── WorkerProtocolError           tokenwire.workers.messages
    │   ├── MessageTooLargeError, MalformedMessageError
    ├── TensorError                   tensor_id, reason            (tokenwire.tensors.errors)
    │   ├── TensorHeaderError
    │   │   └── TensorTooLargeError
    │   ├── UnknownTensorError, TensorChunkError, TensorTruncatedError,
    │   │   TensorChecksumError, TensorFrameError
    ├── MLXUnavailableError           also an ImportError          (tokenwire.tensors.arrays)
    └── ClientError                   stream_id, last_seq          (tokenwire.client.errors)
        ├── TransportError            the link failed (retryable)
        │   ├── ConnectError, ConnectionLostError, HeartbeatTimeoutError
        ├── HTTPStatusError           the server said no: status_code, code
        │   ├── AuthenticationError   401 / 403
        │   ├── StreamNotFoundError   404; also a tokenwire.errors.StreamNotFoundError
        │   ├── RequestRejectedError  any other 4xx
        │   ├── RateLimitedError      429 (retryable); also a LimitExceededError
        │   └── ServerUnavailableError  5xx (retryable)
        ├── ProtocolError, StreamGapError, ReconnectExhaustedError
        ├── StreamEndedError
        │   ├── StreamFailedError, StreamCancelledError
        ├── ResourceLimitError
        └── ClientClosedError

Each error lives beside the code that raises it (the module in brackets); this
module holds the root, the errors shared across the package, and the drawing
above, which ``tests/test_errors.py`` checks is complete: every exception class
in tokenwire derives from :exc:`TokenwireError`, is named ``…Error`` and is
drawn here (``BrokerUnavailable`` keeps its name while the Redis broker is
being written).

Each server error carries the HTTP ``status`` and a short machine-readable
``code``, so the server maps it to ``{"error": {"code", "message"}}`` in one
place, and the client maps that body back to the class of the same name.
"""

from __future__ import annotations

from typing import Any, ClassVar


class TokenwireError(Exception):
    status: int = 500
    code: str = "internal_error"
    retryable: ClassVar[bool] = False
    """Whether trying the same thing again may work (the client's reconnect loop)."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild from the fields, not through __init__ (subclasses take other
        # arguments): an error crosses a process boundary intact.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(
    cls: type[TokenwireError], args: tuple[Any, ...], state: dict[str, Any]
) -> TokenwireError:
    err = cls.__new__(cls, *args)
    err.args = args
    err.__dict__.update(state)
    return err


class InvalidRequestError(TokenwireError):
    status = 422
    code = "invalid_request"


class BodyTooLargeError(InvalidRequestError):
    status = 413
    code = "body_too_large"


class StreamNotFoundError(TokenwireError):
    status = 404
    code = "not_found"

    stream_id: str | None  # None: a client heard a 404 that named no stream

    def __init__(self, stream_id: str) -> None:
        super().__init__(f"no stream {stream_id!r} (unknown, or expired after retention)")
        self.stream_id = stream_id


class UnknownModelError(InvalidRequestError):
    status = 422
    code = "model_not_found"

    def __init__(self, model: str, available: list[str]) -> None:
        super().__init__(f"no model {model!r}; available: {', '.join(available) or 'none'}")
        self.model = model


class LimitExceededError(TokenwireError):
    status = 429
    code = "limit_exceeded"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class OverloadedError(TokenwireError):
    status = 503
    code = "overloaded"


class StreamLaggedError(TokenwireError):
    """A live subscriber's cursor fell out of retention; it must resubscribe
    (and will get ``open{recovered:false}``)."""

    status = 409
    code = "lagged"

    def __init__(self, stream_id: str, last_seq: int, first_seq: int) -> None:
        super().__init__(
            f"subscriber of {stream_id!r} at seq {last_seq} fell behind retention "
            f"(first retained seq is {first_seq})"
        )
        self.stream_id = stream_id
        self.last_seq = last_seq
        self.first_seq = first_seq


# The names before 0.1.0, deprecated: the package front door exported them, and
# the server modules being moved onto the session core still use them.
InvalidRequest = InvalidRequestError
BodyTooLarge = BodyTooLargeError
StreamNotFound = StreamNotFoundError
UnknownModel = UnknownModelError
LimitExceeded = LimitExceededError
Overloaded = OverloadedError
StreamLagged = StreamLaggedError


def excerpt(value: object, limit: int = 48) -> str:
    """A client's value, safe to quote back in an error message: a string in single
    quotes (as the messages quote names) cut at ``limit`` characters, anything else
    named by its JSON type. A message never echoes a client's whole payload (a
    900 KB op name) or a Python repr."""
    if isinstance(value, str):
        text = value if len(value) <= limit else value[:limit] + "…"
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "an array" if isinstance(value, list | tuple) else "an object"
