"""Framings: wire bytes, split anywhere, into the state machine's inputs (no I/O)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tokenwire import sse
from tokenwire.client.errors import ProtocolError
from tokenwire.client.machine import Deliver, ResumeMachine
from tokenwire.client.policy import ReconnectPolicy
from tokenwire.client.wire import NDJSONFraming, SSEFraming
from tokenwire.events import Event, coalesce, dumps, open_frame

SID = "st_wire"


def events(n: int) -> list[Event]:
    out = [Event("token", {"text": f" t{i}"}, seq=i) for i in range(1, n + 1)]
    out.append(Event("done", {"finish_reason": "stop", "usage": None}, seq=n + 1))
    return out


def sse_body(evs: list[Event], *, after: int = 0, retry: int = 2000) -> bytes:
    prelude = open_frame(SID, "e1", recovered=True, first_seq=1, last_seq=after, status="running")
    out = sse.frame(dumps(prelude), event="open", retry=retry)
    for i, ev in enumerate(evs):
        out += ev.sse()
        if i % 7 == 3:
            out += sse.HEARTBEAT
    return out


def ndjson_body(evs: list[Event]) -> bytes:
    prelude = open_frame(SID, "e1", recovered=True, first_seq=1, last_seq=0, status="running")
    out = dumps({"kind": "open", **prelude}) + b"\n"
    for i, ev in enumerate(evs):
        out += ev.json() + b"\n"
        if i % 5 == 2:
            out += b'{"kind":"heartbeat","ts":1.0}\n'
    return out


def machine(**kw: Any) -> ResumeMachine:
    m = ResumeMachine(SID, policy=ReconnectPolicy(rng=random.Random(1)), **kw)
    m.start(0.0)
    m.actions()
    return m


def feed_split(framing: Any, m: ResumeMachine, body: bytes, rng: random.Random) -> list[Event]:
    out: list[Event] = []
    i = 0
    while i < len(body):
        j = min(len(body), i + rng.randint(1, 40))
        framing.feed(body[i:j], m, 0.0)
        out += [a.event for a in m.actions() if isinstance(a, Deliver)]
        i = j
    return out


@pytest.mark.parametrize("seed", range(5))
def test_sse_any_split_delivers_the_same_events(seed: int) -> None:
    evs = events(50)
    m = machine()
    got = feed_split(SSEFraming(), m, sse_body(evs), random.Random(seed))
    assert got == evs
    assert m.state == "closed" and m.retry_s == 2.0


@pytest.mark.parametrize("seed", range(5))
def test_ndjson_any_split_delivers_the_same_events(seed: int) -> None:
    evs = events(50)
    m = machine()
    got = feed_split(NDJSONFraming(), m, ndjson_body(evs), random.Random(seed))
    assert got == evs and m.state == "closed"


def test_sse_merged_catch_up_frames_cover_their_range() -> None:
    evs = events(100)
    merged = coalesce(evs, min_run=2)
    assert len(merged) == 2  # one token frame covering 1..100, then done
    m = machine()
    SSEFraming().feed(sse_body(merged), m, 0.0)
    got = [a.event for a in m.actions() if isinstance(a, Deliver)]
    assert got[0].fields["from_seq"] == 1 and got[0].seq == 100
    assert got[0].fields["text"] == "".join(e.fields["text"] for e in evs[:100])
    assert m.last_seq == 101


def test_sse_resumed_link_drops_what_was_delivered() -> None:
    evs = events(20)
    m = machine(after=0)
    framing = SSEFraming()
    framing.feed(sse_body(evs[:10]), m, 0.0)
    m.actions()
    m.connection_lost(None, 1.0)
    m.tick(100.0)
    m.actions()
    # The server resent a little too much (a merged frame that ends at 10, then 9..).
    SSEFraming().feed(sse_body(evs[8:], after=10), m, 100.0)
    got = [a.event.seq for a in m.actions() if isinstance(a, Deliver)]
    assert got == list(range(11, 22))
    assert m.duplicates == 2


def test_sse_bounds_raise_protocol_errors() -> None:
    m = machine()
    with pytest.raises(ProtocolError, match="longer"):
        SSEFraming(max_line_bytes=100).feed(b"data: " + b"x" * 200, m, 0.0)
    with pytest.raises(ProtocolError, match="larger"):
        SSEFraming(max_event_bytes=100).feed(
            b"data: " + b"x" * 90 + b"\n" * 1 + b"data: " + b"y" * 90 + b"\n", m, 0.0
        )


def test_sse_bad_json_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="JSON"):
        SSEFraming().feed(b"event: open\ndata: {nope\n\n", machine(), 0.0)
    with pytest.raises(ProtocolError, match="object"):
        SSEFraming().feed(b"data: [1]\n\n", machine(), 0.0)


def test_ndjson_bounds_and_bad_lines() -> None:
    with pytest.raises(ProtocolError):
        NDJSONFraming(max_line_bytes=10).feed(b'{"kind":"open","stream":"x"}\n', machine(), 0.0)
    with pytest.raises(ProtocolError):
        NDJSONFraming().feed(b"nope\n", machine(), 0.0)
    with pytest.raises(ProtocolError, match="object"):
        NDJSONFraming().feed(b"[1]\n", machine(), 0.0)


def test_heartbeats_alone_deliver_nothing() -> None:
    m = machine()
    framing = SSEFraming()
    framing.feed(sse_body([]), m, 0.0)
    m.actions()
    framing.feed(sse.HEARTBEAT * 3, m, 1.0)
    assert m.actions() == [] and m.state == "connected"
