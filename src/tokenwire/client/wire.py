"""From wire bytes to the state machine's inputs, one framing per transport.

Pure code: each framing wraps the project's incremental parser
(:class:`~tokenwire.sse.SSEParser`, :class:`~tokenwire.ndjson.NDJSONParser`) and
feeds what it completes to a :class:`~tokenwire.client.machine.ResumeMachine`.
A framing lives as long as one link; a new link gets a new framing, because a
cut can leave half a line behind. The parsers' line and event bounds are what
bound the client's memory per link, whatever the server sends.
"""

from __future__ import annotations

from typing import Any, Protocol

from tokenwire.client.errors import ProtocolError
from tokenwire.client.machine import ResumeMachine
from tokenwire.events import loads
from tokenwire.ndjson import NDJSONParser, NDJSONProtocolError
from tokenwire.sse import OPEN_EVENT, SSEParser, SSEProtocolError

# Servers before 0.1.0 named the SSE open frame "open"; accepted for one more release.
_OPEN_EVENTS = frozenset((OPEN_EVENT, "open"))


class Framing(Protocol):
    def feed(self, data: bytes, machine: ResumeMachine, now: float) -> None:
        """Parse ``data`` (split anywhere) and feed the complete frames to ``machine``.
        Raises :exc:`ProtocolError` on a malformed or oversized frame."""


def _object(raw: str | bytes) -> dict[str, Any]:
    try:
        obj = loads(raw)
    except ValueError as exc:
        raise ProtocolError(f"a frame is not valid JSON: {exc}") from None
    if type(obj) is not dict:
        raise ProtocolError("a frame is not a JSON object")
    return obj


class SSEFraming:
    """``text/event-stream``: ``event: open`` starts the link, other events carry
    the event object in ``data``, comments are heartbeats, ``retry:`` is forwarded."""

    __slots__ = ("_parser", "_retry")

    def __init__(self, *, max_line_bytes: int = 1 << 20, max_event_bytes: int = 8 << 20) -> None:
        self._parser = SSEParser(max_line_bytes=max_line_bytes, max_event_bytes=max_event_bytes)
        self._retry: int | None = None

    def feed(self, data: bytes, machine: ResumeMachine, now: float) -> None:
        try:
            messages = self._parser.feed(data)
        except SSEProtocolError as exc:
            raise ProtocolError(str(exc)) from None
        receive = machine.receive_event
        for msg in messages:
            obj = _object(msg.data)
            if msg.event in _OPEN_EVENTS:
                machine.receive_open(obj, now)
            else:
                receive(obj, now)
        retry = self._parser.retry
        if retry is not None and retry != self._retry:
            self._retry = retry
            machine.receive_retry(retry)


class NDJSONFraming:
    """``application/x-ndjson``: one object per line; ``kind`` ``open`` starts the
    link, ``heartbeat`` lines only show life, every other line is an event."""

    __slots__ = ("_parser",)

    def __init__(self, *, max_line_bytes: int = 8 << 20) -> None:
        self._parser = NDJSONParser(max_line_bytes=max_line_bytes)

    def feed(self, data: bytes, machine: ResumeMachine, now: float) -> None:
        try:
            objects = self._parser.feed(data)
        except NDJSONProtocolError as exc:
            raise ProtocolError(str(exc)) from None
        receive = machine.receive_event
        for obj in objects:
            if type(obj) is not dict:
                raise ProtocolError("an NDJSON line is not a JSON object")
            kind = obj.get("kind")
            if kind == "open":
                machine.receive_open(obj, now)
            elif kind != "heartbeat":
                receive(obj, now)


def ws_message(raw: str | bytes) -> dict[str, Any]:
    """One WebSocket text frame as an object (``type`` names the frame)."""
    return _object(raw)
