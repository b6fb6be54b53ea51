"""The client's reconnect-and-resume state machine, fed events and times: no I/O."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tokenwire.client.errors import (
    AuthenticationError,
    ClientError,
    ConnectError,
    ConnectionLostError,
    HeartbeatTimeoutError,
    ProtocolError,
    RateLimitedError,
    ReconnectExhaustedError,
    StreamGapError,
    StreamNotFoundError,
)
from tokenwire.client.machine import (
    CLOSED,
    CONNECTED,
    CONNECTING,
    ERROR,
    IDLE,
    RECONNECTING,
    Action,
    Connect,
    Deliver,
    Disconnect,
    Fail,
    ResumeMachine,
    Sleep,
    StateChanged,
    TransportState,
)
from tokenwire.client.policy import BreakerState, CircuitBreaker, ReconnectPolicy

SID = "st_test"


def policy(**kw: Any) -> ReconnectPolicy:
    kw.setdefault("rng", random.Random(7))
    return ReconnectPolicy(**kw)


def opened(first_seq: int = 1, last_seq: int = 0, *, recovered: bool = True, epoch: str = "e1"):
    return {
        "stream": SID,
        "epoch": epoch,
        "recovered": recovered,
        "first_seq": first_seq,
        "last_seq": last_seq,
        "status": "running",
    }


def tok(seq: int, text: str = "x", from_seq: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"seq": seq, "kind": "token", "text": text}
    if from_seq is not None:
        out["from_seq"] = from_seq
    return out


def states(actions: list[Action]) -> list[tuple[TransportState, TransportState]]:
    return [(a.old, a.new) for a in actions if isinstance(a, StateChanged)]


def delivered(actions: list[Action]) -> list[int]:
    return [a.event.seq for a in actions if isinstance(a, Deliver)]


def connected_machine(**kw: Any) -> ResumeMachine:
    m = ResumeMachine(SID, policy=kw.pop("policy", policy()), **kw)
    m.start(0.0)
    m.receive_open(opened(), 0.0)
    m.actions()
    return m


# -- transitions ------------------------------------------------------------------------


def test_idle_connecting_connected_closed_on_terminal() -> None:
    m = ResumeMachine(SID, policy=policy())
    assert m.state is IDLE and m.deadline is None
    m.start(0.0)
    assert m.actions() == [StateChanged(IDLE, CONNECTING), Connect(0)]
    assert m.link == "dialing"
    m.receive_open(opened(), 0.1)
    assert m.actions() == [StateChanged(CONNECTING, CONNECTED)]
    m.receive_event(tok(1, "a"), 0.2)
    m.receive_event({"seq": 2, "kind": "done", "finish_reason": "stop", "usage": None}, 0.3)
    actions = m.actions()
    assert delivered(actions) == [1, 2]
    assert states(actions) == [(CONNECTED, CLOSED)]
    assert isinstance(actions[-1], Disconnect) and actions[-1].reason == "done"
    assert m.terminal is not None and m.terminal.kind == "done"
    # Nothing after the terminal event is delivered.
    m.receive_event(tok(3), 0.4)
    assert m.actions() == [] and m.last_seq == 2


def test_start_twice_is_a_clear_error() -> None:
    m = ResumeMachine(SID)
    m.start(0.0)
    with pytest.raises(RuntimeError, match="start"):
        m.start(0.0)


def test_connecting_to_reconnecting_to_connected() -> None:
    m = ResumeMachine(SID, policy=policy(base_s=1.0, cap_s=10.0))
    m.start(0.0)
    m.actions()
    m.connect_failed(ConnectError("refused"), 0.5)
    actions = m.actions()
    assert states(actions) == [(CONNECTING, RECONNECTING)]
    (sleep,) = [a for a in actions if isinstance(a, Sleep)]
    assert 0.0 <= sleep.delay <= 2.0  # first failure: ceiling base * 2**1
    assert m.failures == 1 and m.deadline == pytest.approx(0.5 + sleep.delay)
    m.tick(0.5 + sleep.delay / 2)
    assert m.actions() == []  # not yet
    m.tick(0.5 + sleep.delay)
    assert m.actions() == [Connect(0)]
    assert m.state is RECONNECTING  # until the open frame
    m.receive_open(opened(), 3.0)
    assert states(m.actions()) == [(RECONNECTING, CONNECTED)]
    assert m.failures == 0 and m.reconnects == 1


def test_connected_link_lost_resumes_after_last_seq() -> None:
    m = connected_machine(policy=policy(base_s=0.5))
    for seq in range(1, 6):
        m.receive_event(tok(seq), 1.0)
    m.actions()
    m.connection_lost(None, 2.0)
    actions = m.actions()
    assert states(actions) == [(CONNECTED, RECONNECTING)]
    assert isinstance(actions[0], StateChanged)
    assert isinstance(actions[0].error, ConnectionLostError)
    assert actions[0].error.stream_id == SID and actions[0].error.last_seq == 5
    # A link that had opened is not a failed attempt.
    assert m.failures == 0
    assert m.deadline is not None
    m.tick(m.deadline)
    assert m.actions() == [Connect(5)]


def test_connected_to_closed_by_the_application() -> None:
    m = connected_machine()
    m.close(1.0)
    assert m.actions() == [Disconnect("closed"), StateChanged(CONNECTED, CLOSED)]
    m.close(2.0)
    assert m.actions() == []


def test_reconnecting_to_closed_cancels_the_backoff() -> None:
    m = connected_machine()
    m.connection_lost(None, 1.0)
    m.actions()
    m.close(1.1)
    assert m.actions() == [StateChanged(RECONNECTING, CLOSED)]
    assert m.deadline is None
    m.tick(100.0)
    assert m.actions() == []


def test_error_then_close() -> None:
    m = ResumeMachine(SID, policy=policy())
    m.start(0.0)
    m.actions()
    m.connect_failed(StreamNotFoundError(404, "not_found", "gone"), 0.1)
    actions = m.actions()
    assert states(actions) == [(CONNECTING, ERROR)]
    assert isinstance(actions[-1], Fail) and isinstance(actions[-1].error, StreamNotFoundError)
    m.close(0.2)
    assert states(m.actions()) == [(ERROR, CLOSED)]


@pytest.mark.parametrize(
    "error",
    [
        StreamNotFoundError(404, "not_found"),
        AuthenticationError(401, "unauthorized"),
        ProtocolError("bad"),
    ],
)
def test_non_retryable_errors_are_fatal_at_once(error: ClientError) -> None:
    m = connected_machine()
    m.connection_lost(error, 1.0)
    actions = m.actions()
    assert states(actions) == [(CONNECTED, ERROR)]
    assert actions[-1] == Fail(error)
    assert error.stream_id == SID and error.last_seq == 0


def test_rate_limited_is_retried() -> None:
    m = ResumeMachine(SID, policy=policy())
    m.start(0.0)
    m.connect_failed(RateLimitedError(429, "too_many_subscribers"), 0.1)
    assert m.state is RECONNECTING


def test_attempts_exhausted() -> None:
    m = ResumeMachine(SID, policy=policy(max_attempts=3, base_s=0.1))
    m.start(0.0)
    now = 0.0
    for attempt in range(3):
        m.actions()
        m.connect_failed(ConnectError(f"refused {attempt}"), now)
        if m.state is ERROR:
            break
        assert m.deadline is not None
        now = m.deadline
        m.tick(now)
    actions = m.actions()
    assert m.state is ERROR and m.failures == 3
    error = actions[-1].error  # type: ignore[union-attr]
    assert isinstance(error, ReconnectExhaustedError)
    assert error.attempts == 3 and isinstance(error.last_error, ConnectError)
    assert "refused 2" in str(error)


def test_unlimited_attempts() -> None:
    m = ResumeMachine(SID, policy=policy(max_attempts=None, base_s=0.01, cap_s=0.02))
    m.start(0.0)
    now = 0.0
    for _ in range(500):
        m.connect_failed(ConnectError("refused"), now)
        assert m.deadline is not None
        now = m.deadline
        m.tick(now)
    assert m.state is RECONNECTING and m.failures == 500


def test_failures_reset_on_open_not_on_connect() -> None:
    m = ResumeMachine(SID, policy=policy())
    m.start(0.0)
    m.connect_failed(ConnectError("x"), 0.0)
    m.tick(100.0)
    m.connection_lost(None, 100.0)  # lost before open: still a failed attempt
    assert m.failures == 2
    m.tick(200.0)
    m.receive_open(opened(), 200.0)
    assert m.failures == 0


# -- heartbeat ----------------------------------------------------------------------------


def test_silence_for_two_heartbeats_reconnects() -> None:
    m = connected_machine(heartbeat_s=1.0)
    m.receive_event(tok(1), 10.0)
    m.actions()
    assert m.deadline == pytest.approx(12.0)
    m.bytes_received(11.5)  # a heartbeat comment: life
    assert m.deadline == pytest.approx(13.5)
    m.tick(13.4)
    assert m.actions() == []
    m.tick(13.5)
    actions = m.actions()
    assert actions[0] == Disconnect("heartbeat")
    change = actions[1]
    assert isinstance(change, StateChanged) and change.new is RECONNECTING
    assert isinstance(change.error, HeartbeatTimeoutError) and change.error.silent_s == 2.0
    assert m.failures == 0  # the link had opened


def test_backpressure_time_is_not_silence() -> None:
    m = connected_machine(heartbeat_s=1.0)
    m.bytes_received(1.0)
    m.reading_resumed(50.0)  # the application was slow; the transport did not read
    m.tick(51.0)
    assert m.state is CONNECTED
    assert m.deadline == pytest.approx(52.0)


def test_silent_attempt_fails_and_counts() -> None:
    m = ResumeMachine(SID, policy=policy(), heartbeat_s=1.0)
    m.start(0.0)
    m.actions()
    m.tick(2.0)
    actions = m.actions()
    assert actions[0] == Disconnect("heartbeat")
    assert m.failures == 1 and m.state is RECONNECTING


def test_connect_timeout_without_heartbeat() -> None:
    m = ResumeMachine(SID, policy=policy(connect_timeout_s=3.0), heartbeat_s=None)
    m.start(0.0)
    m.actions()
    assert m.deadline == 3.0
    m.tick(3.0)
    change = m.actions()[1]
    assert isinstance(change, StateChanged) and isinstance(change.error, ConnectError)
    m.tick(100.0)
    m.receive_open(opened(), 100.0)
    assert m.deadline is None  # no heartbeat: only input wakes it


# -- resume, dedup, gaps -------------------------------------------------------------------


def test_dedup_by_seq_and_merged_frames() -> None:
    m = connected_machine()
    m.receive_event(tok(1, "a"), 0.0)
    m.receive_event(tok(4, "bcd", from_seq=2), 0.0)  # covers 2..4
    m.receive_event(tok(3, "c"), 0.0)  # already covered
    m.receive_event(tok(4, "bcd", from_seq=2), 0.0)  # the same frame again
    m.receive_event(tok(5, "e"), 0.0)
    m.receive_event(tok(2, "b"), 0.0)
    actions = m.actions()
    assert delivered(actions) == [1, 4, 5]
    texts = [a.event.fields["text"] for a in actions if isinstance(a, Deliver)]
    assert texts == ["a", "bcd", "e"]
    assert m.duplicates == 3 and m.last_seq == 5


def test_merged_frame_past_last_seq_is_a_gap() -> None:
    m = connected_machine()
    m.receive_event(tok(1), 0.0)
    m.receive_event(tok(9, "z", from_seq=5), 0.0)
    actions = m.actions()
    error = actions[-1].error  # type: ignore[union-attr]
    assert isinstance(error, StreamGapError)
    assert (error.stream_id, error.last_seq, error.first_seq) == (SID, 1, 5)
    assert delivered(actions) == [1]


def test_single_event_past_last_seq_is_a_gap() -> None:
    m = connected_machine()
    m.receive_event(tok(3), 0.0)
    assert isinstance(m.last_error, StreamGapError) and m.state is ERROR


def test_token_frame_overlapping_delivered_is_a_protocol_error() -> None:
    m = connected_machine()
    m.receive_event(tok(3, "abc", from_seq=1), 0.0)
    m.receive_event(tok(5, "cde", from_seq=3), 0.0)
    assert isinstance(m.last_error, ProtocolError) and m.state is ERROR


def test_coalesced_progress_may_overlap() -> None:
    m = connected_machine()
    m.receive_event({"seq": 2, "kind": "progress", "stage": "a", "from_seq": 1}, 0.0)
    m.receive_event({"seq": 4, "kind": "progress", "stage": "b", "from_seq": 2}, 0.0)
    assert delivered(m.actions()) == [2, 4]


def test_recovered_false_is_a_typed_gap() -> None:
    m = ResumeMachine(SID, after=3, policy=policy())
    m.start(0.0)
    assert m.actions()[-1] == Connect(3)
    m.receive_open(opened(first_seq=31, last_seq=40, recovered=False), 0.1)
    actions = m.actions()
    assert states(actions) == [(CONNECTING, ERROR)]
    error = actions[-1].error  # type: ignore[union-attr]
    assert isinstance(error, StreamGapError)
    assert (error.stream_id, error.last_seq, error.first_seq) == (SID, 3, 31)
    assert "seq 31" in str(error) and "after seq 3" in str(error)


def test_epoch_change_with_history_is_a_gap() -> None:
    m = connected_machine()
    m.receive_event(tok(1), 0.0)
    m.connection_lost(None, 1.0)
    m.tick(100.0)
    m.receive_open(opened(epoch="e2"), 100.0)
    assert isinstance(m.last_error, StreamGapError) and "epoch" in str(m.last_error)


def test_resume_point_is_after() -> None:
    m = ResumeMachine(SID, after=41, policy=policy())
    m.start(0.0)
    assert m.actions()[-1] == Connect(41)
    m.receive_open(opened(), 0.0)
    m.receive_event(tok(41), 0.0)  # at or below the start: dropped
    m.receive_event(tok(42), 0.0)
    assert delivered(m.actions()) == [42]


def test_event_before_open_is_a_protocol_error() -> None:
    m = ResumeMachine(SID, policy=policy())
    m.start(0.0)
    m.receive_event(tok(1), 0.0)
    assert isinstance(m.last_error, ProtocolError)


def test_event_without_integer_seq_is_a_protocol_error() -> None:
    m = connected_machine()
    m.receive_event({"seq": "1", "kind": "token", "text": "a"}, 0.0)
    assert isinstance(m.last_error, ProtocolError)


def test_open_for_another_stream_is_a_protocol_error() -> None:
    m = ResumeMachine(SID, policy=policy())
    m.start(0.0)
    m.receive_open({**opened(), "stream": "st_other"}, 0.0)
    assert isinstance(m.last_error, ProtocolError)


def test_open_names_an_unnamed_stream() -> None:
    m = ResumeMachine(None, policy=policy())
    m.start(0.0)
    m.receive_open(opened(), 0.0)
    assert m.stream_id == SID


def test_unknown_kind_advances_seq_without_delivery() -> None:
    m = connected_machine()
    m.receive_event({"seq": 1, "kind": "future.kind", "x": 1}, 0.0)
    m.receive_event(tok(2), 0.0)
    assert delivered(m.actions()) == [2]


def test_binary_tensor_chunk_payload() -> None:
    m = connected_machine()
    chunk = {"seq": 1, "kind": "tensor.chunk", "tensor_id": "t", "index": 0, "offset": 0}
    m.receive_event({**chunk, "data": b"\x00\x01"}, 0.0)
    (event,) = [a.event for a in m.actions() if isinstance(a, Deliver)]
    assert event.binary == b"\x00\x01" and "data" not in event.fields


def test_suspend_resubscribes_at_once_without_counting() -> None:
    m = connected_machine()
    m.receive_event(tok(1), 0.0)
    m.actions()
    m.suspend(5.0)
    assert m.actions() == [Connect(1)]
    assert m.state is CONNECTED and m.link == "dialing" and m.failures == 0
    m.receive_open(opened(), 5.1)
    assert m.actions() == [] and m.link == "open"


# -- retry: and backoff --------------------------------------------------------------------


def test_retry_field_sets_the_backoff_scale() -> None:
    m = connected_machine(policy=policy(base_s=0.01, cap_s=100.0))
    m.receive_retry(2000)
    assert m.retry_s == 2.0
    delays = []
    for _ in range(200):
        m.connection_lost(None, 0.0)
        delays.append(next(a.delay for a in m.actions() if isinstance(a, Sleep)))
        m.tick(1000.0)
        m.receive_open(opened(), 1000.0)
    assert max(delays) <= 2.0 and max(delays) > 1.5  # uniform in [0, retry]


def test_retry_field_ignored_when_not_honoured() -> None:
    m = connected_machine(policy=policy(base_s=0.01, honor_retry=False))
    m.receive_retry(2000)
    assert m.retry_s == 0.01


def test_backoff_ceiling_doubles_up_to_the_cap() -> None:
    m = ResumeMachine(SID, policy=policy(base_s=0.1, cap_s=1.0, max_attempts=None))
    m.start(0.0)
    delays: list[float] = []
    now = 0.0
    for _ in range(12):
        m.actions()
        m.connect_failed(ConnectError("x"), now)
        delays.append(next(a.delay for a in m.actions() if isinstance(a, Sleep)))
        now += 10.0
        m.tick(now)
    for n, delay in enumerate(delays, start=1):
        assert 0.0 <= delay <= min(1.0, 0.1 * 2**n)


# -- the breaker inside the machine --------------------------------------------------------


def test_open_breaker_holds_every_stream_back() -> None:
    breaker = CircuitBreaker(threshold=2, cooldown_s=5.0)
    a = ResumeMachine("st_a", policy=policy(base_s=0.1), breaker=breaker)
    b = ResumeMachine("st_b", policy=policy(base_s=0.1), breaker=breaker)
    a.start(0.0)
    b.start(0.0)
    a.connect_failed(ConnectError("x"), 0.0)
    b.connect_failed(ConnectError("x"), 0.0)
    assert breaker.state is BreakerState.OPEN
    a.actions()
    b.actions()
    # The backoff (at most 0.2 s) elapses, but the breaker is open: wait out its cooldown.
    a.tick(1.0)
    assert a.actions() == [Sleep(4.0)] and a.deadline == 5.0
    b.tick(1.0)
    assert b.actions() == [Sleep(4.0)]
    a.tick(5.0)
    assert a.actions() == [Connect(0)]  # the half-open probe
    assert breaker.state is BreakerState.HALF_OPEN
    b.tick(5.0)
    assert b.actions() == [Sleep(1.25)]  # one probe at a time
    a.receive_open({**opened(), "stream": "st_a"}, 5.1)
    assert breaker.state is BreakerState.CLOSED
    b.tick(6.25)
    assert b.actions() == [Connect(0)]


def test_failed_probe_reopens_the_breaker() -> None:
    breaker = CircuitBreaker(threshold=1, cooldown_s=2.0)
    m = ResumeMachine(SID, policy=policy(base_s=0.1), breaker=breaker)
    m.start(0.0)
    m.connect_failed(ConnectError("x"), 0.0)
    assert breaker.state is BreakerState.OPEN and breaker.trips == 1
    m.tick(2.0)
    assert Connect(0) in m.actions() and breaker.state is BreakerState.HALF_OPEN
    m.connect_failed(ConnectError("x"), 2.5)
    assert breaker.state is BreakerState.OPEN and breaker.trips == 2
