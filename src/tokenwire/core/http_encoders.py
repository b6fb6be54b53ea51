"""Encoders of the HTTP streaming bodies: SSE, NDJSON, and the chat formats.

SSE follows docs/protocol.md ("Server-Sent Events"): ``retry:`` and the open control frame
first, each event framed once (:meth:`Event.sse`, ``id:`` written last),
comment heartbeats. NDJSON: one JSON object per line, the open frame first.
A subscription that ends before its terminal event (lag, shutdown) ends the
response; SSE says why in a comment line first, which every client ignores.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from tokenwire import sse
from tokenwire.events import Event, dumps

SSE_MEDIA_TYPE = b"text/event-stream; charset=utf-8"
NDJSON_MEDIA_TYPE = b"application/x-ndjson"


def stream_headers(media_type: bytes, stream_id: str | None = None) -> list[tuple[bytes, bytes]]:
    """The headers of every streamed HTTP response (never cached, never buffered by
    nginx), with ``X-Tokenwire-Stream`` when the body is one stream's."""
    headers = [
        (b"content-type", media_type),
        (b"cache-control", b"no-cache, no-transform"),
        (b"x-accel-buffering", b"no"),
    ]
    if stream_id is not None:
        headers.append((b"x-tokenwire-stream", stream_id.encode()))
    return headers


class SSEEncoder:
    transport = "sse"
    media_type = SSE_MEDIA_TYPE
    shared = True

    def __init__(self, retry_ms: int | None, merge_after: int | None) -> None:
        self.retry_ms = retry_ms
        self.merge_after = merge_after

    def open(self, stream_id: str, frame: dict[str, Any]) -> bytes:
        return sse.frame(dumps(frame), event=sse.OPEN_EVENT, retry=self.retry_ms)

    def batch(self, stream_id: str, events: list[Event]) -> tuple[bytes, int]:
        body = events[0].sse() if len(events) == 1 else b"".join([ev.sse() for ev in events])
        return body, len(body)

    def heartbeat(self) -> bytes:
        return sse.HEARTBEAT

    def end(self, stream_id: str, code: str, message: str) -> bytes:
        return sse.comment(code)


class NDJSONEncoder:
    transport = "ndjson"
    media_type = NDJSON_MEDIA_TYPE
    shared = True

    def __init__(self, merge_after: int | None) -> None:
        self.merge_after = merge_after

    def open(self, stream_id: str, frame: dict[str, Any]) -> bytes:
        return dumps({"kind": "open", **frame}) + b"\n"

    def batch(self, stream_id: str, events: list[Event]) -> tuple[bytes, int]:
        body = b"\n".join([ev.json() for ev in events]) + b"\n"
        return body, len(body)

    def heartbeat(self) -> bytes:
        return b'{"kind":"heartbeat","ts":%.3f}\n' % time.time()

    def end(self, stream_id: str, code: str, message: str) -> None:
        return None  # a client reads any other line as an event: the end is the signal


class ChatFrames(Protocol):
    """A chat wire format (OpenAI chunks, the AI SDK UI message stream): one object
    per connection, as it keeps state (whether a text part is open, tokens counted)."""

    heartbeat: bytes

    def prelude(self) -> bytes:
        """Sent right after the headers, before any event."""
        ...

    def events(self, batch: list[Event]) -> bytes:
        """The bytes for a batch; after the terminal event, also the end marker."""
        ...


class ChatEncoder:
    """A :class:`ChatFrames` as an encoder: per connection (not shared), never
    merged (a merged token would change what the chat format counts)."""

    shared = False
    merge_after = None

    def __init__(self, frames: ChatFrames, transport: str) -> None:
        self.frames = frames
        self.transport = transport

    def open(self, stream_id: str, frame: dict[str, Any]) -> bytes:
        return self.frames.prelude()

    def batch(self, stream_id: str, events: list[Event]) -> tuple[bytes, int]:
        body = self.frames.events(events)
        return body, len(body)

    def heartbeat(self) -> bytes:
        return self.frames.heartbeat

    def end(self, stream_id: str, code: str, message: str) -> None:
        return None  # history gone: the response ends without the end marker
