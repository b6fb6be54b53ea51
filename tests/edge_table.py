"""The resume edge table as data: what each transport answers for every pair of
resume offset and stream state (docs/protocol.md, "Resume edges").

The rule behind every cell (docs/protocol.md, "Resume offsets"):

- the offset is checked first, before the stream is looked up: anything but an
  integer 0..2**63-1 is refused (``invalid``); an absent or empty text offset is 0;
- an unknown, expired or deleted stream is ``not_found``;
- otherwise the subscription opens with ``recovered = first_seq <= after+1 <= last+1``
  and delivers every retained event after ``max(first_seq-1, min(after, last))``;
- on an ended stream with nothing left to deliver, SSE and NDJSON answer 204
  (WHATWG: stops EventSource reconnecting); WebSocket and Socket.IO send the
  open frame and nothing more.

``python -m tests.edge_table`` prints the table of docs/protocol.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TOKENS = 10
"""Every state's stream emits this many tokens before it reaches its state."""
TRIMMED_RETENTION = 8
"""Retention (events) of the stream behind the ``before retention`` offsets."""
MAX_SEQ = 2**63 - 1

STATES = ("pending", "running", "done", "error", "cancelled", "expired", "deleted", "unknown")
ENDED = frozenset({"done", "error", "cancelled"})
GONE = frozenset({"expired", "deleted", "unknown"})
TRANSPORTS = ("sse", "ndjson", "ws", "socketio")

STATE_NOTES = {
    "pending": "started, no event yet (last_seq 0, status running)",
    "running": f"{TOKENS} tokens so far, more to come",
    "done": f"{TOKENS} tokens, then done (last_seq {TOKENS + 1})",
    "error": f"{TOKENS} tokens, then error",
    "cancelled": f"{TOKENS} tokens, then cancelled (DELETE /v1/streams/{{id}} or cancel)",
    "expired": "ended, and its retention TTL has passed",
    "deleted": "its log was deleted while the stream was still known",
    "unknown": "never existed",
}


@dataclass(frozen=True)
class Offset:
    """One offset class: the value sent as text (SSE/NDJSON ``?after=``) and as JSON
    (WebSocket ``after``, Socket.IO ``lastSequence``), by stream state."""

    name: str
    text: Any  # a str, or a callable(last, first) -> int
    json: Any
    note: str


OFFSETS = (
    Offset("negative", "-1", -1, "-1"),
    Offset("not an integer", "abc", "3", 'text "abc"; JSON "3" (a string), 1.5, true'),
    Offset("empty", "", None, "text empty; JSON null or absent: 0"),
    Offset("0", "0", 0, "from the start"),
    Offset("inside retention", lambda last, first: 5, None, "5"),
    Offset(
        "before retention",
        lambda last, first: 1,
        None,
        f"1, the log keeping its last {TRIMMED_RETENTION} events",
    ),
    Offset("last-1", lambda last, first: last - 1, None, "last_seq - 1"),
    Offset("last", lambda last, first: last, None, "last_seq"),
    Offset("past last", lambda last, first: last + 5, None, "last_seq + 5"),
    Offset("huge", str(MAX_SEQ), MAX_SEQ, "2**63-1; 2**63 is not an integer seq"),
)


def last_seq(state: str) -> int:
    if state == "pending":
        return 0
    if state == "running":
        return TOKENS
    return TOKENS + 1  # tokens and the terminal event (also for expired/deleted/unknown)


def first_seq(state: str, offset: Offset) -> int:
    """The oldest retained seq of the state's log for this offset's setup."""
    last = last_seq(state)
    if offset.name == "before retention" and last > TRIMMED_RETENTION:
        return last - TRIMMED_RETENTION + 1
    return 1


def value(offset: Offset, state: str, *, text: bool) -> Any | None:
    """The offset sent for ``state``, or None where the class does not apply
    (a log with no events has no "inside" nor "last-1")."""
    raw = offset.text if text or callable(offset.text) else offset.json
    if offset.name == "empty" and not text:
        return None  # JSON: absent
    if callable(raw):
        last, first = last_seq(state), first_seq(state, offset)
        if state == "pending" and offset.name in ("inside retention", "before retention", "last-1"):
            return NOT_APPLICABLE
        number = raw(last, first)
        return str(number) if text else number
    return raw


NOT_APPLICABLE = object()


@dataclass(frozen=True)
class Answer:
    """What a transport answers, normalized: ``refused`` (with ``code``), ``no_content``
    (HTTP 204), or ``open`` with ``recovered``, the seqs delivered and whether the
    subscription ``ended`` (the terminal event delivered, or nothing more will come)."""

    kind: str
    code: str | None = None
    recovered: bool | None = None
    seqs: tuple[int, ...] = field(default_factory=tuple)
    ended: bool = False


REFUSED_CODES = {
    "invalid": {"sse": "invalid_request", "ndjson": "invalid_request", "ws": "bad_request",
                "socketio": "invalid_request"},
    "not_found": dict.fromkeys(TRANSPORTS, "not_found"),
}  # fmt: skip


def is_valid(offset: Offset) -> bool:
    return offset.name not in ("negative", "not an integer")


def expected(state: str, offset: Offset, transport: str) -> Answer | None:
    """The documented answer of ``transport`` (None: the cell does not apply)."""
    if value(offset, state, text=transport in ("sse", "ndjson")) is NOT_APPLICABLE:
        return None
    if not is_valid(offset):
        return Answer("refused", REFUSED_CODES["invalid"][transport])
    if state in GONE:
        return Answer("refused", REFUSED_CODES["not_found"][transport])
    raw = value(offset, state, text=True)
    after = int(raw) if raw not in (None, "") else 0
    last, first = last_seq(state), first_seq(state, offset)
    recovered = first <= after + 1 <= last + 1
    start = max(first - 1, min(after, last))
    ended = state in ENDED
    if ended and start >= last:
        if transport in ("sse", "ndjson"):
            return Answer("no_content")
        return Answer("open", recovered=recovered, seqs=(), ended=True)
    return Answer("open", recovered=recovered, seqs=tuple(range(start + 1, last + 1)), ended=ended)


def describe(answer: Answer | None) -> str:
    """One cell of the docs table, as SSE answers it."""
    if answer is None:
        return "n/a"
    if answer.kind == "refused":
        return "invalid" if answer.code == "invalid_request" else "not_found"
    if answer.kind == "no_content":
        return "204"
    cell = "open" if answer.recovered else "open r:false"
    if answer.seqs:
        first, last = answer.seqs[0], answer.seqs[-1]
        cell += f", {first}..{last}" if first != last else f", {first}"
    return cell + (", end" if answer.ended else ", live")


def markdown() -> str:
    """The edge table of docs/protocol.md: offsets down, states across."""
    lines = [
        "| offset | " + " | ".join(STATES) + " |",
        "| --- |" + " --- |" * len(STATES),
    ]
    for offset in OFFSETS:
        cells = [describe(expected(state, offset, "sse")) for state in STATES]
        lines.append(f"| {offset.name} ({offset.note}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
