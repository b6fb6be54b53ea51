"""Typed exceptions raised by tokenwire.

::

    TokenwireError
    ├── InvalidRequest         bad input (HTTP 422)
    │   ├── BodyTooLarge       request body over the limit (HTTP 413)
    │   └── UnknownModel       no backend under that name (HTTP 422)
    ├── StreamNotFound         unknown or expired stream id (HTTP 404)
    ├── LimitExceeded          a configured limit was reached (HTTP 429)
    ├── Overloaded             the server cannot take more work (HTTP 503)
    ├── StreamLagged           a subscriber fell behind retention
    ├── ModelError             a model failed (tokenwire.models.errors; HTTP 502)
    │   ├── ModelBusy          its queue is full (HTTP 503)
    │   ├── ContextLengthExceeded
    │   └── UpstreamError      an upstream server failed
    │       ├── UpstreamHTTPError, UpstreamUnreachable, UpstreamProtocolError
    └── ActorError             tokenwire.actors: ActorNotFound, StreamingNotSupported,
                               ActorTimeout

Each carries the HTTP ``status`` and a short machine-readable ``code`` so the
server maps it to ``{"error": {"code", "message"}}`` in one place.
"""

from __future__ import annotations


class TokenwireError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class InvalidRequest(TokenwireError):
    status = 422
    code = "invalid_request"


class BodyTooLarge(InvalidRequest):
    status = 413
    code = "body_too_large"


class StreamNotFound(TokenwireError):
    status = 404
    code = "not_found"

    def __init__(self, stream_id: str) -> None:
        super().__init__(f"no stream {stream_id!r} (unknown, or expired after retention)")
        self.stream_id = stream_id


class UnknownModel(InvalidRequest):
    status = 422
    code = "model_not_found"

    def __init__(self, model: str, available: list[str]) -> None:
        super().__init__(f"no model {model!r}; available: {', '.join(available) or 'none'}")
        self.model = model


class LimitExceeded(TokenwireError):
    status = 429
    code = "limit_exceeded"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Overloaded(TokenwireError):
    status = 503
    code = "overloaded"


class StreamLagged(TokenwireError):
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
