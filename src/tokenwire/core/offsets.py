"""Resume offsets: the one check of "everything after seq N" for every transport.

SSE and NDJSON take N as text (``?after=N``, ``Last-Event-ID: N``), WebSocket
(``after``) and Socket.IO (``lastSequence``) as a JSON value. Both accept exactly
the integers 0..2**63-1 and nothing else: no bool (``True`` is an ``int`` in
Python), no float, no sign, no Unicode digit that ``str.isdigit()`` would let
through (``"²"``, ``"٣"``), and an absent value means 0.
"""

from __future__ import annotations

from typing import Any

from tokenwire.errors import InvalidRequestError

MAX_SEQ = 2**63 - 1
_MAX_DIGITS = len(str(MAX_SEQ))
_ASCII_DIGITS = frozenset("0123456789")


def _invalid(name: str) -> InvalidRequestError:
    return InvalidRequestError(f"{name} must be a non-negative integer seq (0..{MAX_SEQ})")


def seq_from_json(value: Any, name: str) -> int:
    """A JSON offset: an integer 0..MAX_SEQ, or absent (None) for 0."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ:
        raise _invalid(name)
    return value


def seq_from_text(raw: str | None, name: str) -> int:
    """A textual offset: ASCII digits only, or absent/empty for 0."""
    if raw is None or raw == "":
        return 0
    if len(raw) > _MAX_DIGITS or not _ASCII_DIGITS.issuperset(raw):
        raise _invalid(name)
    value = int(raw)
    if value > MAX_SEQ:
        raise _invalid(name)
    return value
