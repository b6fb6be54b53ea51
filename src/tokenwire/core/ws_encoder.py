"""The WebSocket encoder: JSON text frames, tensor chunks as binary frames.

Each frame is one WebSocket message. An event's frame is encoded once and shared
by every WebSocket subscriber (:meth:`Event.encoded`); ``tensor.chunk`` events
go as binary frames (:mod:`tokenwire.tensors.wire`). With ``?batch=1`` the text
frames of a batch go in one message, one frame a line.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from tokenwire.events import TENSOR_CHUNK, Event, dumps
from tokenwire.tensors.wire import encode_chunk_frame

TRANSPORT = "ws"
MERGE_AFTER = 8
"""Without ``?batch=1`` every frame costs a socket write where SSE writes a whole
batch at once: a batch longer than this is already a catch-up (at most the
server's ``merge_after``)."""

Messages = list[str | bytes]


def control(kind: str, **fields: Any) -> str:
    """A control frame as text: ``{"type": kind, …}``, leaving out fields that are None."""
    return dumps({"type": kind, **{k: v for k, v in fields.items() if v is not None}}).decode()


def event_frame(stream_id: str, event: Event) -> tuple[str | bytes, int]:
    """An event's frame and its size in bytes: ``{"type":"event","stream":…,"seq":…,
    "kind":…,…}`` as text, or the binary chunk frame for ``tensor.chunk``."""
    if event.kind == TENSOR_CHUNK:
        frame = encode_chunk_frame(stream_id, event)
        return frame, len(frame)
    text = b'{"type":"event","stream":' + dumps(stream_id) + b"," + event.json()[1:]
    return text.decode(), len(text)


def _frames(stream_id: str, frames: list[Event]) -> list[tuple[str | bytes, int]]:
    encode = functools.partial(event_frame, stream_id)
    return [event.encoded(TRANSPORT, encode) for event in frames]


def one_message_a_frame(stream_id: str, frames: list[Event]) -> tuple[Messages, int]:
    encoded = _frames(stream_id, frames)
    return [frame for frame, _ in encoded], sum(size for _, size in encoded)


def one_message_a_batch(stream_id: str, frames: list[Event]) -> tuple[Messages, int]:
    """``?batch=1``: consecutive text frames joined by newlines; binary ones alone."""
    messages: Messages = []
    lines: list[str] = []
    nbytes = 0
    for frame, size in _frames(stream_id, frames):
        nbytes += size
        if isinstance(frame, str):
            lines.append(frame)
            continue
        if lines:
            messages.append("\n".join(lines))
            nbytes += len(lines) - 1
            lines = []
        messages.append(frame)
    if lines:
        messages.append("\n".join(lines))
        nbytes += len(lines) - 1
    return messages, nbytes


class WebSocketEncoder:
    transport = TRANSPORT
    shared = True

    def __init__(self, merge_after: int, *, batch: bool = False) -> None:
        self.merge_after = merge_after if batch else min(merge_after, MERGE_AFTER)
        self._batch = one_message_a_batch if batch else one_message_a_frame

    def open(self, stream_id: str, frame: dict[str, Any]) -> Messages:
        return [control("open", **frame)]

    def batch(self, stream_id: str, events: list[Event]) -> tuple[Messages, int]:
        return self._batch(stream_id, events)

    def heartbeat(self) -> Messages:
        return [control("heartbeat", ts=round(time.time(), 3))]

    def end(self, stream_id: str, code: str, message: str) -> Messages:
        return [control("error", code=code, message=message, stream=stream_id)]
