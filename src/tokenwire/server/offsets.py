"""Moved to :mod:`tokenwire.core.offsets` (the resume offsets are the session
core's); this path stays importable."""

from tokenwire.core.offsets import MAX_SEQ, seq_from_json, seq_from_text

__all__ = ["MAX_SEQ", "seq_from_json", "seq_from_text"]
