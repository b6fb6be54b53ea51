"""The messages between a gateway and a model worker: pure code over bytes, no I/O.

One generation, as the gateway sees it::

    gateway                                  worker
       |                       <- hello        (pid; sent first)
       |                       <- ready        (the backend is loaded and made one token)
       | request {id, …}  ->
       |                       <- text {id, texts[, logprobs]}   (one or more, in order)
       |                       <- finish {id, finish_reason, usage}
       |                          or error {id, code, message}

``cancel {id}`` asks the worker to stop that generation; it stops within one
token and still answers with exactly one terminal message for the id
(``finish`` with ``finish_reason: "cancelled"``, or ``error``), which is how the
gateway knows the worker is free again. A worker that cannot start sends
``error`` with ``id: null`` and exits.

Each message is one JSON object (``t`` names its type) encoded with orjson:
:func:`encode` / :func:`decode` for transports that carry whole messages (a
Redis stream entry), :func:`frame` and :class:`Decoder` for byte streams (a
pipe): a 4-byte big-endian length, then the JSON body. Bodies are bounded by
``max_bytes`` (default :data:`MAX_MESSAGE_BYTES`); the decoder refuses a larger
length prefix before buffering it.

Errors::

    TokenwireError
    └── WorkerProtocolError        worker_protocol_error
        ├── MessageTooLargeError        a length (or body) over the bound
        └── MalformedMessageError       not JSON, an unknown type, a missing or mistyped field
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar

import orjson

from tokenwire.errors import TokenwireError
from tokenwire.models.base import GenerationRequest
from tokenwire.models.logprobs import TokenPiece

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
_LENGTH = struct.Struct(">I")


class WorkerProtocolError(TokenwireError):
    code = "worker_protocol_error"


class MessageTooLargeError(WorkerProtocolError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"a worker message of {size} bytes is over the limit of {limit}")
        self.size = size
        self.limit = limit


class MalformedMessageError(WorkerProtocolError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"malformed worker message: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Hello:
    type: ClassVar[str] = "hello"
    pid: int
    backend: str = ""


@dataclass(frozen=True, slots=True)
class Ready:
    """The backend is loaded and its self-check generated one token."""

    type: ClassVar[str] = "ready"
    load_ms: float
    check_ms: float


@dataclass(frozen=True, slots=True)
class Request:
    type: ClassVar[str] = "request"
    id: str
    model: str
    messages: list[dict[str, str]]
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    delay_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    top_logprobs: int | None = None

    @classmethod
    def from_generation(cls, id: str, req: GenerationRequest) -> Request:
        return cls(
            id=id,
            model=req.model,
            messages=[dict(m) for m in req.messages],
            max_tokens=req.max_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            stop=list(req.stop),
            seed=req.seed,
            delay_ms=req.delay_ms,
            extra=dict(req.extra),
            top_logprobs=req.top_logprobs,
        )

    def to_generation(self) -> GenerationRequest:
        return GenerationRequest(
            model=self.model,
            messages=tuple(dict(m) for m in self.messages),
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=tuple(self.stop),
            seed=self.seed,
            delay_ms=self.delay_ms,
            extra=dict(self.extra),
            top_logprobs=self.top_logprobs,
        )


@dataclass(frozen=True, slots=True)
class Text:
    """Text pieces in the order the model produced them (one token each, usually).

    ``logprobs`` (when the request asked for ``top_logprobs``) runs parallel to
    ``texts``: per piece ``null`` or ``[logprob, [[token, logprob], …]]``. A
    gateway that predates it ignores it; a worker that predates it omits it."""

    type: ClassVar[str] = "text"
    id: str
    texts: list[str]
    logprobs: list[Any] | None = None

    @classmethod
    def of(cls, id: str, piece: str) -> Text:
        """One piece, with its logprobs if it carries them (a ``TokenPiece``)."""
        if isinstance(piece, TokenPiece):
            top = [[t, lp] for t, lp in piece.top_logprobs]
            return cls(id, [str(piece)], [[piece.logprob, top]])
        return cls(id, [piece])

    def pieces(self) -> list[str]:
        """The texts, as ``TokenPiece`` where logprobs came with them."""
        if self.logprobs is None:
            return list(self.texts)
        out: list[str] = []
        for text, lp in zip(self.texts, self.logprobs, strict=True):
            if lp is None:
                out.append(text)
            else:
                out.append(TokenPiece(text, float(lp[0]), [(t, float(v)) for t, v in lp[1]]))
        return out


@dataclass(frozen=True, slots=True)
class Finish:
    type: ClassVar[str] = "finish"
    id: str
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Error:
    """A failed generation (``id``), or a worker that could not start (``id`` None)."""

    type: ClassVar[str] = "error"
    id: str | None
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Cancel:
    type: ClassVar[str] = "cancel"
    id: str


Message = Hello | Ready | Request | Text | Finish | Error | Cancel

_TYPES: dict[str, type[Any]] = {
    cls.type: cls for cls in (Hello, Ready, Request, Text, Finish, Error, Cancel)
}

# What each field must hold once decoded (JSON has no int/float distinction for 1.0).
_NUMBER = (int, float)
_CHECKS: dict[str, tuple[type, ...]] = {
    "pid": (int,),
    "backend": (str,),
    "load_ms": _NUMBER,
    "check_ms": _NUMBER,
    "id": (str,),
    "model": (str,),
    "messages": (list,),
    "max_tokens": (int,),
    "temperature": _NUMBER,
    "top_p": _NUMBER,
    "stop": (list,),
    "seed": (int, type(None)),
    "delay_ms": _NUMBER,
    "extra": (dict,),
    "texts": (list,),
    "logprobs": (list, type(None)),
    "top_logprobs": (int, type(None)),
    "finish_reason": (str,),
    "prompt_tokens": (int,),
    "completion_tokens": (int,),
    "code": (str,),
    "message": (str,),
}
_NULLABLE_ID = {"error"}


def encode(msg: Message) -> bytes:
    """One message as a JSON object (no framing)."""
    body = {"t": msg.type}
    for f in fields(msg):
        value = getattr(msg, f.name)
        if value is None and f.default is None:
            continue  # an optional field left out: older peers never see it
        body[f.name] = value
    return orjson.dumps(body)


def decode(data: bytes | bytearray | memoryview, max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    """The message in one JSON body; raises :class:`WorkerProtocolError`."""
    if len(data) > max_bytes:
        raise MessageTooLargeError(len(data), max_bytes)
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessageError(f"not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise MalformedMessageError("not a JSON object")
    return from_dict(body)


def from_dict(body: Mapping[str, Any]) -> Message:
    kind = body.get("t")
    cls = _TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise MalformedMessageError(f"unknown type {kind!r}")
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in body:
            if f.default is MISSING and f.default_factory is MISSING:
                raise MalformedMessageError(f"{kind}: '{f.name}' is missing")
            continue
        value = body[f.name]
        allowed = _CHECKS[f.name]
        if f.name == "id" and kind in _NULLABLE_ID:
            allowed = (str, type(None))
        if isinstance(value, bool) or not isinstance(value, allowed):
            raise MalformedMessageError(f"{kind}: '{f.name}' has the wrong type")
        values[f.name] = value
    _check_lists(cls.type, values)
    msg: Message = cls(**values)
    return msg


def _check_lists(kind: str, values: Mapping[str, Any]) -> None:
    for key in ("texts", "stop"):
        if key in values and not all(isinstance(s, str) for s in values[key]):
            raise MalformedMessageError(f"{kind}: '{key}' must hold strings")
    logprobs = values.get("logprobs")
    if logprobs is not None and not (
        len(logprobs) == len(values.get("texts", ())) and all(map(_is_logprob, logprobs))
    ):
        raise MalformedMessageError(
            f"{kind}: 'logprobs' must hold, per text, null or [logprob, top]"
        )
    for m in values.get("messages", ()):
        if not isinstance(m, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in m.items()
        ):
            raise MalformedMessageError(f"{kind}: 'messages' must hold objects of strings")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_logprob(entry: Any) -> bool:
    if entry is None:
        return True
    if not (isinstance(entry, list) and len(entry) == 2 and _is_number(entry[0])):
        return False
    top = entry[1]
    return isinstance(top, list) and all(
        isinstance(t, list) and len(t) == 2 and isinstance(t[0], str) and _is_number(t[1])
        for t in top
    )


def frame(msg: Message, max_bytes: int = MAX_MESSAGE_BYTES) -> bytes:
    """One message for a byte stream: its length, then its body."""
    body = encode(msg)
    if len(body) > max_bytes:
        raise MessageTooLargeError(len(body), max_bytes)
    return _LENGTH.pack(len(body)) + body


class Decoder:
    """Incremental: feed bytes as they arrive, get the complete messages.

    After an error the stream is out of step; the decoder refuses further input.
    """

    __slots__ = ("_buf", "_failed", "max_bytes")

    def __init__(self, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self._failed: WorkerProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for a message not complete yet."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Message]:
        if self._failed is not None:
            raise self._failed
        buf = self._buf
        buf += data
        out: list[Message] = []
        pos = 0
        try:
            while len(buf) - pos >= _LENGTH.size:
                (size,) = _LENGTH.unpack_from(buf, pos)
                if size > self.max_bytes:
                    raise MessageTooLargeError(size, self.max_bytes)
                end = pos + _LENGTH.size + size
                if len(buf) < end:
                    break
                out.append(decode(buf[pos + _LENGTH.size : end], self.max_bytes))
                pos = end
        except WorkerProtocolError as exc:
            self._failed = exc
            raise
        finally:
            del buf[:pos]
        return out
