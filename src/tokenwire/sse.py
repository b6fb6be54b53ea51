"""Server-Sent Events codec: pure code over bytes, no I/O.

The encoder writes frames per the WHATWG HTML "server-sent events" section;
the parser (:class:`SSEParser`) follows its "interpreting an event stream"
rules so it can be fed any split of the input.
"""

from __future__ import annotations

import re

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def frame(
    data: bytes | str,
    *,
    event: str | None = None,
    id: int | str | None = None,
    retry: int | None = None,
) -> bytes:
    """Encode one SSE message. Multi-line ``data`` becomes several ``data:`` lines."""
    if isinstance(data, str):
        data = data.encode()
    parts: list[bytes] = []
    if retry is not None:
        parts.append(b"retry: %d\n" % retry)
    if id is not None:
        sid = str(id).encode()
        if b"\0" in sid or _LINE_BREAK.search(sid):
            raise ValueError("an SSE id cannot contain NUL or line breaks")
        parts.append(b"id: " + sid + b"\n")
    if event is not None:
        ev = event.encode()
        if _LINE_BREAK.search(ev):
            raise ValueError("an SSE event name cannot contain line breaks")
        parts.append(b"event: " + ev + b"\n")
    for line in _LINE_BREAK.split(data):
        parts.append(b"data: " + line + b"\n")
    parts.append(b"\n")
    return b"".join(parts)


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
