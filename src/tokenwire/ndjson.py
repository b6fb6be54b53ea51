"""NDJSON codec: one JSON object per line. Pure code over bytes, no I/O."""

from __future__ import annotations

from typing import Any

from tokenwire.events import dumps


def line(obj: Any) -> bytes:
    """Encode one object as one NDJSON line (compact JSON never contains a raw newline)."""
    return dumps(obj) + b"\n"
