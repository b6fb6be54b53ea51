"""NDJSON codec: one JSON object per line. Pure code over bytes, no I/O."""

from __future__ import annotations

from typing import Any

from tokenwire.errors import TokenwireError
from tokenwire.events import dumps, loads


def line(obj: Any) -> bytes:
    """Encode one object as one NDJSON line (compact JSON never contains a raw newline)."""
    return dumps(obj) + b"\n"


class NDJSONProtocolError(TokenwireError, ValueError):
    """A line is not valid JSON or is too long. ``line`` is its 1-based number, if known."""

    code = "ndjson_protocol_error"

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


_JSON_WHITESPACE = b" \t\r"


class NDJSONParser:
    """Incremental parser for an ``application/x-ndjson`` body.

    Feed it bytes split anywhere; it returns the objects of the lines each feed
    completes. Lines end with LF (a CR before it is JSON whitespace, so CRLF
    works too); lines holding only JSON whitespace are skipped; a last line
    without a newline is parsed by :meth:`close`. A line longer than
    ``max_line_bytes`` or one that is not valid JSON raises
    :class:`NDJSONProtocolError`; the parser is unusable after that.
    """

    __slots__ = ("_closed", "_line_no", "_max_line", "_pending")

    def __init__(self, *, max_line_bytes: int = 8 << 20) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be positive")
        self._max_line = max_line_bytes
        self._pending = bytearray()  # the incomplete last line
        self._line_no = 0  # lines parsed so far
        self._closed = False

    def feed(self, data: bytes) -> list[Any]:
        """Consume the next bytes of the stream; return the objects of the lines they complete."""
        if self._closed:
            raise RuntimeError("feed() after close()")
        # Only whole lines are parsed; the tail after the last newline waits.
        end = data.rfind(b"\n") + 1
        if not end:
            self._pending += data
            self._check_line(len(self._pending), 0)
            return []
        if self._pending:
            self._pending += data[:end]
            chunk = bytes(self._pending)
            self._pending.clear()
        else:
            chunk = data[:end] if end < len(data) else data
        lines = chunk.split(b"\n")
        lines.pop()  # the chunk ends with a newline: the last item is b""
        if len(chunk) > self._max_line:
            for i, raw in enumerate(lines):
                self._check_line(len(raw), i)
        if end < len(data):
            self._pending += data[end:]
            self._check_line(len(self._pending), len(lines))
        return self._parse(lines)

    def close(self) -> list[Any]:
        """End of stream: parse a last line that has no newline."""
        if self._closed:
            return []
        self._closed = True
        if not self._pending:
            return []
        tail = bytes(self._pending)
        self._pending.clear()
        return self._parse([tail])

    def _check_line(self, size: int, index: int) -> None:
        """Raise if a line (``index`` lines after the last one parsed) is too long."""
        if size > self._max_line:
            n = self._line_no + index + 1
            raise NDJSONProtocolError(f"NDJSON line {n} longer than {self._max_line} bytes", line=n)

    def _parse(self, lines: list[bytes]) -> list[Any]:
        try:
            out = [loads(raw) for raw in lines]
        except ValueError:
            # Rare path: skip blank lines, or find the bad line for the message.
            out = []
            for i, raw in enumerate(lines):
                if not raw.strip(_JSON_WHITESPACE):
                    continue
                try:
                    out.append(loads(raw))
                except ValueError as exc:
                    n = self._line_no + i + 1
                    raise NDJSONProtocolError(
                        f"invalid JSON on NDJSON line {n}: {exc}", line=n
                    ) from exc
        self._line_no += len(lines)
        return out
