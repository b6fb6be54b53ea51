"""Events: what a stream carries, and their wire encodings.

Every event of a stream has a ``seq`` (contiguous from 1) and a ``kind``.
Sequenced kinds are listed in :data:`KINDS`; exactly one terminal event
(:data:`TERMINAL_KINDS`) ends a stream. Control frames (``open``,
``heartbeat``) are not sequenced and are built by the transports.

An event is encoded at most once per wire format; the bytes are cached on the
event, so the same bytes go to every subscriber (design.md §2, fan-out).
"""

from __future__ import annotations

import binascii
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, TypeVar

import orjson

from tokenwire.sse import event_parts

TOKEN = "token"
PROGRESS = "progress"
METRICS = "metrics"
DATA = "data"
TENSOR_HEADER = "tensor.header"
TENSOR_CHUNK = "tensor.chunk"
TENSOR_END = "tensor.end"
DONE = "done"
ERROR = "error"
CANCELLED = "cancelled"

TERMINAL_KINDS = frozenset({DONE, ERROR, CANCELLED})
KINDS = frozenset(
    {TOKEN, PROGRESS, METRICS, DATA, TENSOR_HEADER, TENSOR_CHUNK, TENSOR_END} | TERMINAL_KINDS
)

# Wire formats that cache encodings on the event.
SSE = "sse"
NDJSON = "ndjson"

_T = TypeVar("_T")

# Fixed overhead charged per event for the byte window, on top of its payload.
_EVENT_OVERHEAD = 64
# What an event costs in memory before any encoding, beyond its payload: the
# object, its fields dict, its timestamp (tracemalloc, CPython 3.11: ~340 B a token).
OBJECT_BYTES = 360
# CPython object headers: a bytes / str object, a tuple or list (plus 8 B an item),
# any other object with its instance dict.
_BYTES_HEADER = 40
_STR_HEADER = 56
_SEQUENCE_HEADER = 56
_INSTANCE_BYTES = 330
_DICT_BYTES = 232


def dumps(obj: Any) -> bytes:
    """Compact JSON as bytes (the one JSON encoder the project uses)."""
    out = orjson.dumps(obj)
    # orjson hands back its working buffer, 4 KiB whatever the length: a cached
    # 40-byte token encoding held 4 KiB. A right-sized copy costs ~0.2 µs.
    return memoryview(out).tobytes() if len(out) < 2048 else out


def retained_size(value: Any) -> int:
    """About how many bytes ``value`` (an encoding cached on an event) holds."""
    if isinstance(value, bytes | bytearray | memoryview):
        return _BYTES_HEADER + len(value)
    if isinstance(value, str):
        return _STR_HEADER + len(value)
    if isinstance(value, tuple | list):
        return _SEQUENCE_HEADER + sum(8 + retained_size(v) for v in value)
    attrs = getattr(value, "__dict__", None)
    if attrs is not None:
        return _INSTANCE_BYTES + sum(retained_size(v) for v in attrs.values())
    return 32


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


class Event:
    """One sequenced event.

    ``fields`` is the kind-specific payload (``{"text": …}`` for a token). For
    ``tensor.chunk`` the raw payload lives in ``binary``; text formats carry it
    base64-encoded as ``data`` and WebSocket sends it as a binary frame.
    ``seq`` is 0 until the broker appends the event; ``ts`` is the wall-clock
    time (seconds) the event was created, for latency figures.
    """

    __slots__ = (
        "_json",
        "_sse",
        "_wire",
        "account",
        "binary",
        "encoded_bytes",
        "fields",
        "kind",
        "seq",
        "ts",
    )

    def __init__(
        self,
        kind: str,
        fields: Mapping[str, Any] | None = None,
        *,
        seq: int = 0,
        binary: bytes | memoryview | None = None,
        ts: float | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        self.kind = kind
        self.fields: dict[str, Any] = dict(fields) if fields else {}
        self.seq = seq
        self.binary = binary
        self.ts = time.time() if ts is None else ts
        self._json: bytes | None = None
        self._sse: bytes | None = None
        self._wire: dict[str, Any] | None = None
        self.encoded_bytes = 0
        """Bytes held by the encodings cached on this event."""
        self.account: Account | None = None
        """Charged for every encoding cached from now on (the log retaining it)."""

    # -- constructors -------------------------------------------------------

    @classmethod
    def token(cls, text: str) -> Event:
        return cls(TOKEN, {"text": text})

    @classmethod
    def progress(
        cls, stage: str, progress: float | None = None, message: str | None = None
    ) -> Event:
        if progress is not None and not 0.0 <= progress <= 1.0:
            raise ValueError(f"progress must be within 0..1, got {progress}")
        fields: dict[str, Any] = {"stage": stage}
        if progress is not None:
            fields["progress"] = progress
        if message is not None:
            fields["message"] = message
        return cls(PROGRESS, fields)

    @classmethod
    def metrics(cls, **values: Any) -> Event:
        return cls(METRICS, values)

    @classmethod
    def data(cls, value: Any) -> Event:
        return cls(DATA, {"data": value})

    @classmethod
    def done(cls, finish_reason: str = "stop", usage: Mapping[str, Any] | None = None) -> Event:
        return cls(DONE, {"finish_reason": finish_reason, "usage": dict(usage) if usage else None})

    @classmethod
    def error(cls, code: str, message: str) -> Event:
        return cls(ERROR, {"code": code, "message": message})

    @classmethod
    def cancelled(cls, reason: str = "stopped") -> Event:
        return cls(CANCELLED, {"reason": reason})

    # -- properties ---------------------------------------------------------

    @property
    def terminal(self) -> bool:
        return self.kind in TERMINAL_KINDS

    @property
    def size(self) -> int:
        """Bytes charged to retention and to the byte window."""
        payload = len(self.binary) if self.binary is not None else 0
        return _EVENT_OVERHEAD + payload + sum(len(str(v)) for v in self.fields.values())

    def to_dict(self) -> dict[str, Any]:
        """The event as one JSON object: ``{"seq", "kind", **fields}`` (binary as base64)."""
        out: dict[str, Any] = {"seq": self.seq, "kind": self.kind}
        out.update(self.fields)
        if self.binary is not None:
            out["data"] = binascii.b2a_base64(self.binary, newline=False).decode("ascii")
        return out

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Event:
        """Inverse of :meth:`to_dict` (binary payloads stay base64 in ``fields``)."""
        fields = {k: v for k, v in obj.items() if k not in ("seq", "kind")}
        return cls(str(obj["kind"]), fields, seq=int(obj.get("seq", 0)))

    # -- cached encodings ----------------------------------------------------
    #
    # Built lazily, on the first subscriber that needs one, and dropped with the
    # event. Each is charged to `cost` and to the retaining log's account, so
    # retention (TOKENWIRE_RETENTION_BYTES) bounds what the encodings hold too.

    def _charge(self, value: Any, extra: int = 0) -> None:
        nbytes = retained_size(value) + extra
        self.encoded_bytes += nbytes
        if self.account is not None:
            self.account.charge(nbytes)

    def json(self) -> bytes:
        """``{"seq":…,"kind":…,…}`` — the NDJSON line (without newline) and WS text frame."""
        if self._json is None:
            if self.binary is None or "data" in self.fields:
                self._json = dumps(self.to_dict())
            else:
                self._json = b"".join(_binary_json(self, self.binary, b""))
            self._charge(self._json)
        return self._json

    def sse(self) -> bytes:
        """The SSE frame: ``event``, one ``data`` line holding :meth:`json`, then
        ``id`` (last, see :func:`tokenwire.sse.event_parts`)."""
        if self._sse is None:
            prefix, suffix = event_parts(self.kind, self.seq)
            if self._json is None and self.binary is not None and "data" not in self.fields:
                # A tensor chunk: built in one copy, without caching the JSON too (a
                # retained chunk would otherwise hold its base64 twice).
                self._sse = b"".join(_binary_json(self, self.binary, prefix, suffix))
            else:
                self._sse = b"".join((prefix, self.json(), suffix))
            self._charge(self._sse)
        return self._sse

    def encoded(self, wire: str, encode: Callable[[Event], _T]) -> _T:
        """``encode(self)``, computed once per ``wire`` format and cached on the event.

        For transports that keep their encoding in their own module (WebSocket,
        Socket.IO): every subscriber of that transport gets the same object.
        """
        cache = self._wire
        extra = 0
        if cache is None:
            cache = self._wire = {}
            extra = _DICT_BYTES
        elif wire in cache:
            value: _T = cache[wire]
            return value
        value = cache[wire] = encode(self)
        self._charge(value, extra)
        return value

    def __repr__(self) -> str:
        return f"Event(seq={self.seq}, kind={self.kind!r}, fields={self.fields!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return (
            self.seq == other.seq
            and self.kind == other.kind
            and self.fields == other.fields
            and (bytes(self.binary) if self.binary is not None else None)
            == (bytes(other.binary) if other.binary is not None else None)
        )

    __hash__ = None  # type: ignore[assignment]


class Account(Protocol):
    """Whoever retains an event (a broker's log) and counts what it holds."""

    def charge(self, nbytes: int) -> None: ...


def _binary_json(
    event: Event, binary: bytes | memoryview, prefix: bytes, suffix: bytes = b""
) -> tuple[bytes, ...]:
    """The parts of ``prefix + dumps(event.to_dict()) + suffix`` for an event with a
    binary payload: base64 never needs JSON escaping, so the payload is encoded
    once, straight into the frame, with no str round trip."""
    head = dumps({"seq": event.seq, "kind": event.kind, **event.fields})
    data = binascii.b2a_base64(binary, newline=False)
    return (prefix, head[:-1], b',"data":"', data, b'"}', suffix)


def merge_tokens(events: Iterable[Event]) -> Event:
    """Merge consecutive ``token`` events into one frame covering ``from_seq..seq``.

    Used only for a subscriber that is catching up: nothing is lost (the text is
    the concatenation) and resume still works, because ``seq`` is the last seq
    covered. Clients treat a frame with ``from_seq`` as covering that range.
    """
    items = list(events)
    if not items or any(e.kind != TOKEN for e in items):
        raise ValueError("merge_tokens takes a non-empty run of token events")
    if len(items) == 1:
        return items[0]
    merged = Event(
        TOKEN,
        {"text": "".join(e.fields["text"] for e in items), "from_seq": items[0].seq},
        seq=items[-1].seq,
        ts=items[-1].ts,
    )
    return merged


def coalesce(batch: list[Event], min_run: int = 2) -> list[Event]:
    """Content-aware catch-up: merge runs of tokens, keep only the latest of a run of
    ``progress`` events. Other kinds pass unchanged, order is preserved."""
    out: list[Event] = []
    run: list[Event] = []
    for ev in batch:
        if ev.kind == TOKEN:
            run.append(ev)
            continue
        if run:
            out.extend([merge_tokens(run)] if len(run) >= min_run else run)
            run = []
        if ev.kind == PROGRESS and out and out[-1].kind == PROGRESS:
            # Only the latest progress matters; the frame says which seqs it covers.
            prev = out[-1]
            first = prev.fields.get("from_seq", prev.seq)
            out[-1] = Event(PROGRESS, {**ev.fields, "from_seq": first}, seq=ev.seq, ts=ev.ts)
        else:
            out.append(ev)
    if run:
        out.extend([merge_tokens(run)] if len(run) >= min_run else run)
    return out


def open_frame(
    stream: str,
    epoch: str,
    *,
    recovered: bool,
    first_seq: int,
    last_seq: int,
    status: str,
) -> dict[str, Any]:
    """The ``open`` control frame that starts every subscription (design.md §2)."""
    return {
        "stream": stream,
        "epoch": epoch,
        "recovered": recovered,
        "first_seq": first_seq,
        "last_seq": last_seq,
        "status": status,
    }


def to_event(item: Any) -> Event:
    """The event for one item a producer yields, under :meth:`Hub.start` and
    :func:`event_stream_response` alike: an :class:`Event` as is, a ``str`` as a
    ``token``, a mapping with ``kind`` as that event (``seq`` dropped: the log
    numbers it), any other JSON value as ``data``. Arrays are framed before this,
    by the stream (:func:`tokenwire.tensors.tensors_to_frame_stream`); anything
    else is a ``TypeError``, raised where the producer yielded it."""
    if isinstance(item, Event):
        return item
    if isinstance(item, str):
        return Event.token(item)
    if isinstance(item, Mapping) and "kind" in item:
        kind = item["kind"]
        if not isinstance(kind, str):
            raise TypeError(f"a producer yielded a dict whose kind is {type(kind).__name__}")
        return Event(kind, {k: v for k, v in item.items() if k not in ("kind", "seq")})
    if item is None or isinstance(item, Mapping | list | tuple | int | float):
        return Event.data(item)
    raise TypeError(
        f"a producer yielded {type(item).__name__}; expected an Event, a str, "
        "a JSON value or an array"
    )
