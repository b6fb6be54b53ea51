"""Checks shared by the end-to-end transport tests: did every event arrive exactly once?"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tokenwire.models.scripted import scripted_token

TERMINAL = ("done", "error", "cancelled")


def covered(events: Iterable[Mapping[str, Any]]) -> list[int]:
    """Every seq the frames cover, in the order received. A merged catch-up frame
    ``{"seq": b, "from_seq": a}`` covers ``a..b``."""
    seqs: list[int] = []
    for e in events:
        seqs.extend(range(int(e.get("from_seq", e["seq"])), int(e["seq"]) + 1))
    return seqs


def assert_scripted_exactly_once(events: list[Mapping[str, Any]], tokens: int) -> None:
    """A scripted stream of ``tokens`` tokens, seen whole: each seq once and in order
    (``tokens`` tokens, then ``metrics``, then ``done``), and the text intact."""
    assert covered(events) == list(range(1, tokens + 3))
    text = "".join(str(e.get("text", "")) for e in events if e["kind"] == "token")
    assert text == "".join(scripted_token(i) for i in range(tokens))
    assert events[-1]["kind"] == "done"
    assert events[-1]["usage"]["completion_tokens"] == tokens
