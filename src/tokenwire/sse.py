"""Server-Sent Events codec: pure code over bytes, no I/O.

The encoder writes frames per the WHATWG HTML "server-sent events" section;
the parser (:class:`SSEParser`) follows its "interpreting an event stream"
rules so it can be fed any split of the input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tokenwire.errors import TokenwireError

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")

# The event name of the open control frame on SSE. Not "open": EventSource
# dispatches its own "open" event when the connection opens, and a listener
# for one would get both. Clients still accept "open" from older servers.
OPEN_EVENT = "tw-open"


def utf8(text: str) -> bytes:
    """``text`` as UTF-8, a lone surrogate (which UTF-8 cannot hold) as U+FFFD, as
    a decoder does with bytes it cannot read."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()


def frame(
    data: bytes | str,
    *,
    event: str | None = None,
    id: int | str | None = None,
    retry: int | None = None,
) -> bytes:
    """Encode one SSE message: ``retry``, ``event``, ``data``, then ``id`` last.
    Multi-line ``data`` becomes several ``data:`` lines."""
    if isinstance(data, str):
        data = utf8(data)
    parts: list[bytes] = []
    if retry is not None:
        parts.append(b"retry: %d\n" % retry)
    if event is not None:
        ev = utf8(event)
        if _LINE_BREAK.search(ev):
            raise ValueError("an SSE event name cannot contain line breaks")
        parts.append(b"event: " + ev + b"\n")
    for line in _LINE_BREAK.split(data):
        parts.append(b"data: " + line + b"\n")
    if id is not None:
        # Last: a client that records the id as soon as it reads the line
        # (@microsoft/fetch-event-source) would otherwise skip the event when the
        # connection is cut between the id and the dispatching blank line.
        sid = utf8(str(id))
        if b"\0" in sid or _LINE_BREAK.search(sid):
            raise ValueError("an SSE id cannot contain NUL or line breaks")
        parts.append(b"id: " + sid + b"\n")
    parts.append(b"\n")
    return b"".join(parts)


def event_parts(event: str, id: int) -> tuple[bytes, bytes]:
    """What goes before and after a one-line ``data`` value in an event frame:
    ``event:``, ``data:``, then ``id:`` last, as :func:`frame` writes them. For the
    cached frames of stream events (:meth:`tokenwire.events.Event.sse`): their data
    is compact JSON, which never holds a line break, so it needs no splitting."""
    return b"event: %s\ndata: " % event.encode(), b"\nid: %d\n\n" % id


def comment(text: str = "") -> bytes:
    """A comment line (``: text``), used for heartbeats; clients ignore it."""
    body = text.encode()
    if _LINE_BREAK.search(body):
        raise ValueError("an SSE comment cannot contain line breaks")
    return b": " + body + b"\n\n" if body else b":\n\n"


def retry_field(ms: int) -> bytes:
    """A lone ``retry:`` field, sent first so clients reconnect after ``ms``."""
    return b"retry: %d\n\n" % ms


HEARTBEAT = comment("hb")


class SSEProtocolError(TokenwireError, ValueError):
    """The stream broke a bound of the parser (a line or an event too large)."""

    code = "sse_protocol_error"


@dataclass(frozen=True, slots=True)
class SSEMessage:
    """One dispatched event.

    ``id`` is the last event ID in effect when the event was dispatched (it
    persists across events until the server sets another; ``None`` when none
    was set or it was set to the empty string). ``retry`` is the reconnection
    time in milliseconds in effect at dispatch, or ``None`` if never set.
    """

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


_CR = 0x0D

# A frozen dataclass's __init__ sets each field through object.__setattr__;
# the slot descriptors set them directly, at half the cost per event.
_new = object.__new__
_slot = vars(SSEMessage)
_set_data = _slot["data"].__set__
_set_event = _slot["event"].__set__
_set_id = _slot["id"].__set__
_set_retry = _slot["retry"].__set__


def _message(data: str, event: str, id: str | None, retry: int | None) -> SSEMessage:
    msg: SSEMessage = _new(SSEMessage)
    _set_data(msg, data)
    _set_event(msg, event)
    _set_id(msg, id)
    _set_retry(msg, retry)
    return msg


class SSEParser:
    """Incremental parser for a ``text/event-stream`` body.

    Feed it bytes as they arrive, split anywhere; it returns the events
    completed by each feed. It follows the WHATWG HTML "interpreting an event
    stream" rules: UTF-8 with replacement, one leading BOM stripped, lines
    ended by CRLF, LF or CR, events dispatched on an empty line.

    Memory is bounded: a line longer than ``max_line_bytes`` (line break
    excluded) or an event whose data exceeds ``max_event_bytes`` (UTF-8) raises
    :class:`SSEProtocolError`; the parser is unusable after that.
    """

    __slots__ = (
        "_closed",
        "_data",
        "_data_bytes",
        "_event",
        "_id",
        "_last_id",
        "_max_event",
        "_max_line",
        "_pending",
        "_retry",
        "_skip_lf",
        "_start",
    )

    def __init__(self, *, max_line_bytes: int = 1 << 20, max_event_bytes: int = 8 << 20) -> None:
        if max_line_bytes < 1 or max_event_bytes < 1:
            raise ValueError("max_line_bytes and max_event_bytes must be positive")
        self._max_line = max_line_bytes
        self._max_event = max_event_bytes
        # Bytes of the incomplete last line. Kept undecoded, so a multi-byte
        # character split across feeds decodes whole.
        self._pending = bytearray()
        # The previous feed ended with CR: an LF opening this one is the same break.
        self._skip_lf = False
        self._start = True  # nothing decoded yet: a BOM here is stripped
        self._closed = False
        self._data: list[str] = []  # the spec's data buffer, one item per data line
        # UTF-8 size of "\n".join(self._data): each line adds its size plus one.
        self._data_bytes = -1
        self._event = ""  # event type buffer
        self._id: str | None = None  # last event ID buffer
        self._last_id: str | None = None  # last event ID string (set on dispatch)
        self._retry: int | None = None

    @property
    def last_event_id(self) -> str | None:
        """The last event ID string: set on dispatch, kept until the server sets another."""
        return self._last_id

    @property
    def retry(self) -> int | None:
        """The last valid ``retry`` (reconnection time, ms), or ``None``."""
        return self._retry

    def feed(self, data: bytes) -> list[SSEMessage]:
        """Consume the next bytes of the stream; return the events they complete."""
        if self._closed:
            raise RuntimeError("feed() after close()")
        if self._skip_lf and data:
            self._skip_lf = False
            if data[0] == 0x0A:
                data = data[1:]
        # Only whole lines are parsed; the tail after the last break waits.
        end = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        if not end:
            self._pending += data
            if len(self._pending) > self._max_line:
                raise SSEProtocolError(f"SSE line longer than {self._max_line} bytes")
            return []
        if self._pending:
            self._pending += data[:end]
            chunk = bytes(self._pending)
            self._pending.clear()
        else:
            chunk = data[:end] if end < len(data) else data
        if end < len(data):
            self._pending += data[end:]
            if len(self._pending) > self._max_line:
                raise SSEProtocolError(f"SSE line longer than {self._max_line} bytes")
        else:
            self._skip_lf = data[-1] == _CR
        if len(chunk) > self._max_line and max(map(len, chunk.splitlines())) > self._max_line:
            raise SSEProtocolError(f"SSE line longer than {self._max_line} bytes")
        # Line breaks are ASCII and never part of a UTF-8 sequence, valid or
        # not, so decoding whole lines at once equals decoding the stream.
        text = chunk.decode("utf-8", "replace")
        if self._start:
            self._start = False
            if text[:1] == "\ufeff":
                text = text[1:]
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        lines.pop()  # the chunk ends with a break: the last item is ""
        return self._process(lines)

    def close(self) -> list[SSEMessage]:
        """End of stream. Per the spec, an incomplete line or event is discarded."""
        self._closed = True
        self._pending.clear()
        self._data = []
        self._data_bytes = -1
        return []

    def _process(self, lines: list[str]) -> list[SSEMessage]:
        # State lives in locals for the loop (the hot path) and is stored back after.
        out: list[SSEMessage] = []
        data = self._data
        data_bytes = self._data_bytes
        event = self._event
        id_ = self._id
        retry = self._retry
        last_id = self._last_id
        for line in lines:
            if not line:
                # Dispatch. The last event ID is set even when there is no data.
                last_id = id_
                if data:
                    out.append(_message("\n".join(data), event or "message", id_, retry))
                    data = []
                    data_bytes = -1
                event = ""
                continue
            name, _, value = line.partition(":")
            if not name:
                continue  # a comment: the line starts with ":"
            if value[:1] == " ":
                value = value[1:]
            if name == "data":
                data.append(value)
                data_bytes += (len(value) if value.isascii() else len(value.encode())) + 1
                if data_bytes > self._max_event:
                    raise SSEProtocolError(f"SSE event larger than {self._max_event} bytes")
            elif name == "event":
                event = value
            elif name == "id":
                if "\0" not in value:
                    id_ = value or None
            elif name == "retry":
                if value.isascii() and value.isdigit():
                    try:
                        retry = int(value)
                    except ValueError:  # beyond int()'s digit limit: not a usable delay
                        pass
            # Any other field name is ignored.
        self._data = data
        self._data_bytes = data_bytes
        self._event = event
        self._id = id_
        self._last_id = last_id
        self._retry = retry
        return out
