"""The sans-I/O Delivery state machine: fed ``now`` and events, it answers with the
writes to make (docs/protocol.md, "Delivery"). No tasks, no clock, no sockets."""

from __future__ import annotations

from tokenwire.core.delivery import Delivery, Heartbeat
from tokenwire.core.encoder import SharedBatches
from tokenwire.core.http_encoders import NDJSONEncoder, SSEEncoder
from tokenwire.core.ws_encoder import WebSocketEncoder
from tokenwire.events import Event, loads


def tokens(first: int, last: int) -> list[Event]:
    out = []
    for seq in range(first, last + 1):
        event = Event.token(f"t{seq}")
        event.seq = seq
        out.append(event)
    return out


def terminal(seq: int) -> Event:
    event = Event.done()
    event.seq = seq
    return event


def chunk(seq: int) -> Event:
    fields = {"tensor_id": "x", "index": seq, "offset": 16 * seq}
    event = Event("tensor.chunk", fields, binary=b"\0" * 16)
    event.seq = seq
    return event


def test_heartbeat_is_due_only_after_a_silent_interval() -> None:
    hb = Heartbeat(15.0, now=100.0)
    delivery = Delivery("st", NDJSONEncoder(32), hb)
    assert not hb.check(110.0)  # a timer that fired early: not due
    assert hb.check(115.0) and hb.due
    writes = delivery.tick(115.0)
    assert len(writes) == 1 and loads(writes[0][0])["kind"] == "heartbeat"
    assert not hb.due and hb.next_at == 130.0
    delivery.receive(tokens(1, 1), 120.0, ended=False)  # a write moves the due time
    assert hb.next_at == 135.0
    assert delivery.tick(130.0) == []  # woken late for a heartbeat no longer due


def test_a_batch_is_one_write_and_a_catch_up_is_merged() -> None:
    delivery = Delivery("st", SSEEncoder(None, merge_after=4), Heartbeat(15, 0))
    (live,) = delivery.receive(tokens(1, 3), 1.0, ended=False)
    assert live[0].count(b"event: token") == 3 and live[1:] == (3, len(live[0]))
    (catch_up,) = delivery.receive(tokens(4, 20), 2.0, ended=False)
    body, events, nbytes = catch_up
    assert body.count(b"event: token") == 1 and b'"from_seq":4' in body  # one frame 4..20
    assert events == 17 and nbytes == len(body)  # counts what it covers
    assert (delivery.events, delivery.bytes) == (20, len(live[0]) + nbytes)
    assert not delivery.finished


def test_tensor_chunks_go_one_write_each() -> None:
    delivery = Delivery("st", WebSocketEncoder(32), Heartbeat(15, 0))
    writes = delivery.receive([chunk(1), chunk(2), chunk(3)], 1.0, ended=False)
    assert [events for _, events, _ in writes] == [1, 1, 1]
    assert all(isinstance(out[0], bytes) for out, _, _ in writes)  # binary frames


def test_the_terminal_event_finishes_the_delivery() -> None:
    delivery = Delivery("st", NDJSONEncoder(32), Heartbeat(15, 0))
    delivery.receive([*tokens(1, 2), terminal(3)], 1.0, ended=True)
    assert delivery.finished and delivery.end_code is None
    assert delivery.fail("lagged", "late") == []  # nothing after the end


def test_an_empty_read_of_an_ended_cursor_finishes_it() -> None:
    delivery = Delivery("st", NDJSONEncoder(32), Heartbeat(15, 0))
    assert delivery.receive([], 1.0, ended=False) == [] and not delivery.finished
    assert delivery.receive([], 1.0, ended=True) == [] and delivery.finished


def test_lag_ends_the_subscription_with_the_transports_end_frame() -> None:
    ws = Delivery("st_a", WebSocketEncoder(32), Heartbeat(15, 0))
    ((out, events, _),) = ws.fail("lagged", "history is gone")
    assert loads(out[0]) == {
        "type": "error",
        "code": "lagged",
        "message": "history is gone",
        "stream": "st_a",
    }
    assert events == 0 and ws.finished and ws.end_code == "lagged"
    sse = Delivery("st_a", SSEEncoder(2000, 32), Heartbeat(15, 0))
    assert sse.fail("lagged", "x")[0][0] == b": lagged\n\n"  # a comment every client ignores
    ndjson = Delivery("st_a", NDJSONEncoder(32), Heartbeat(15, 0))
    assert ndjson.fail("lagged", "x") == [] and ndjson.finished  # the end of the body says it


def test_subscribers_of_one_range_share_one_encoding() -> None:
    encoder = SSEEncoder(None, merge_after=32)
    shared: SharedBatches[tuple[bytes, int]] = SharedBatches(encoder.batch, 32)
    batch = tokens(1, 5)
    a = Delivery("st", encoder, Heartbeat(15, 0), shared).receive(batch, 1.0, ended=False)
    b = Delivery("st", encoder, Heartbeat(15, 0), shared).receive(batch, 1.0, ended=False)
    assert a[0][0] is b[0][0]  # the same bytes object: encoded once


def test_the_open_frame_is_the_first_write() -> None:
    delivery = Delivery("st", SSEEncoder(2000, 32), Heartbeat(15, 0))
    frame = {"stream": "st", "epoch": "e", "recovered": True, "first_seq": 1, "last_seq": 0}
    ((body, events, nbytes),) = delivery.open(frame, 1.0)
    assert body.startswith(b"retry: 2000\nevent: tw-open\ndata: {")
    assert events == 0 and nbytes == len(body)
