"""Backoff with full jitter, the circuit breaker, the bounded buffer and the exception
tree: pure code, no network."""

from __future__ import annotations

import asyncio
import random
import statistics

import pytest

import tokenwire.client.errors as errors_module
from tokenwire.client import EventBuffer
from tokenwire.client.errors import (
    AuthenticationError,
    ClientError,
    HTTPStatusError,
    RateLimitedError,
    RequestRejectedError,
    ServerUnavailableError,
    StreamCancelledError,
    StreamFailedError,
    StreamGapError,
    StreamNotFoundError,
    TransportError,
    code_error,
    status_error,
)
from tokenwire.client.policy import (
    BreakerState,
    CircuitBreaker,
    ReconnectPolicy,
    backoff_ceiling,
    full_jitter,
)
from tokenwire.events import Event

# -- backoff ----------------------------------------------------------------------------


def test_ceiling_doubles_and_caps() -> None:
    assert [backoff_ceiling(n, 0.5, 30.0) for n in range(8)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        30.0,
        30.0,
    ]
    assert backoff_ceiling(10_000, 0.5, 30.0) == 30.0  # no overflow


@pytest.mark.parametrize("attempt", [0, 1, 3, 10])
def test_full_jitter_is_uniform_over_zero_to_ceiling(attempt: int) -> None:
    rng = random.Random(attempt)
    ceiling = backoff_ceiling(attempt, 0.5, 30.0)
    samples = [full_jitter(attempt, 0.5, 30.0, rng) for _ in range(20_000)]
    assert min(samples) >= 0.0 and max(samples) <= ceiling
    # Uniform on [0, c]: mean c/2, standard deviation c/sqrt(12), each decile ~10%.
    assert statistics.fmean(samples) == pytest.approx(ceiling / 2, rel=0.03)
    assert statistics.pstdev(samples) == pytest.approx(ceiling / 12**0.5, rel=0.03)
    deciles = [0] * 10
    for s in samples:
        deciles[min(int(s / ceiling * 10), 9)] += 1
    assert all(1700 < d < 2300 for d in deciles)


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    a = [full_jitter(3, 0.5, 30.0, random.Random(42)) for _ in range(3)]
    b = [full_jitter(3, 0.5, 30.0, random.Random(42)) for _ in range(3)]
    assert a == b


@pytest.mark.parametrize(
    "kw",
    [
        {"base_s": -1},
        {"max_attempts": 0},
        {"breaker_threshold": 0},
        {"connect_timeout_s": 0},
    ],
)
def test_policy_validates(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ReconnectPolicy(**kw)  # type: ignore[arg-type]


# -- circuit breaker ----------------------------------------------------------------------


def test_breaker_closed_open_half_open_closed() -> None:
    b = CircuitBreaker(threshold=3, cooldown_s=10.0)
    assert b.state is BreakerState.CLOSED and b.allow(0.0) == 0.0
    b.record_failure(1.0)
    b.record_failure(2.0)
    assert b.state is BreakerState.CLOSED
    b.record_failure(3.0)
    assert b.state is BreakerState.OPEN and b.trips == 1
    assert b.allow(4.0) == pytest.approx(9.0)
    assert b.allow(12.9) == pytest.approx(0.1)
    assert b.allow(13.0) == 0.0  # the probe
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow(13.1) > 0  # only one probe
    b.record_success(13.5)
    assert b.state is BreakerState.CLOSED and b.failures == 0
    assert b.allow(13.6) == 0.0


def test_breaker_failed_probe_reopens_for_a_new_cooldown() -> None:
    b = CircuitBreaker(threshold=1, cooldown_s=5.0)
    b.record_failure(0.0)
    assert b.allow(5.0) == 0.0
    b.record_failure(6.0)
    assert b.state is BreakerState.OPEN and b.trips == 2
    assert b.allow(6.0) == pytest.approx(5.0)


def test_breaker_success_in_closed_resets_the_count() -> None:
    b = CircuitBreaker(threshold=2, cooldown_s=1.0)
    b.record_failure(0.0)
    b.record_success(0.1)
    b.record_failure(0.2)
    assert b.state is BreakerState.CLOSED


def test_breaker_lost_probe_does_not_block_forever() -> None:
    b = CircuitBreaker(threshold=1, cooldown_s=2.0)
    b.record_failure(0.0)
    assert b.allow(2.0) == 0.0  # a probe that never reports back
    assert b.allow(3.0) > 0
    assert b.allow(4.0) == 0.0  # another probe after one cooldown


# -- the bounded buffer --------------------------------------------------------------------


async def test_buffer_applies_backpressure_by_count_and_bytes() -> None:
    buf = EventBuffer(max_events=3, max_bytes=1 << 20)
    for seq in range(1, 4):
        assert buf.try_put(Event("token", {"text": "x"}, seq=seq))
    assert buf.full() and not buf.try_put(Event("token", {"text": "x"}, seq=4))
    put = asyncio.ensure_future(buf.put(Event("token", {"text": "x"}, seq=4)))
    await asyncio.sleep(0)
    assert not put.done()
    first = await buf.get()
    assert first is not None and first.seq == 1
    assert await put is True  # it had to wait
    assert len(buf) == 3 and buf.high_events == 3

    big = EventBuffer(max_events=100, max_bytes=1000)
    assert big.try_put(Event("token", {"text": "y" * 5000}, seq=1))  # one always fits
    assert not big.try_put(Event("token", {"text": "y"}, seq=2))


async def test_buffer_end_and_error_come_after_the_events() -> None:
    buf = EventBuffer()
    buf.try_put(Event("token", {"text": "a"}, seq=1))
    buf.finish(StreamGapError("st", 1, 9))
    assert (await buf.get()).seq == 1  # type: ignore[union-attr]
    with pytest.raises(StreamGapError):
        await buf.get()
    done = EventBuffer()
    done.finish()
    assert await done.get() is None


async def test_buffer_discard_releases_a_waiting_producer() -> None:
    buf = EventBuffer(max_events=1)
    buf.try_put(Event("token", {"text": "a"}, seq=1))
    put = asyncio.ensure_future(buf.put(Event("token", {"text": "b"}, seq=2)))
    await asyncio.sleep(0)
    buf.discard()
    await asyncio.wait_for(put, 1)
    assert len(buf) <= 1


# -- the exception tree ----------------------------------------------------------------------


def test_every_exception_is_drawn_in_the_module_docstring() -> None:
    doc = errors_module.__doc__ or ""
    names = [
        name
        for name, obj in vars(errors_module).items()
        if isinstance(obj, type) and issubclass(obj, ClientError)
    ]
    assert len(names) >= 19
    for name in names:
        assert name in doc, name


@pytest.mark.parametrize(
    ("status", "cls", "retryable"),
    [
        (401, AuthenticationError, False),
        (403, AuthenticationError, False),
        (404, StreamNotFoundError, False),
        (413, RequestRejectedError, False),
        (422, RequestRejectedError, False),
        (429, RateLimitedError, True),
        (500, ServerUnavailableError, True),
        (503, ServerUnavailableError, True),
    ],
)
def test_status_errors(status: int, cls: type[HTTPStatusError], retryable: bool) -> None:
    err = status_error(status, "code_x", "what happened", stream_id="st_1", last_seq=7)
    assert type(err) is cls and err.retryable is retryable
    assert (err.status_code, err.code, err.message) == (status, "code_x", "what happened")
    assert str(err) == f"HTTP {status} code_x: what happened (stream st_1, last seq 7)"


def test_ws_error_codes_map_through_status() -> None:
    assert isinstance(code_error("not_found", "gone"), StreamNotFoundError)
    assert isinstance(code_error("too_many_subscribers"), RateLimitedError)
    assert isinstance(code_error("bad_request"), RequestRejectedError)


def test_structured_fields_and_messages() -> None:
    gap = StreamGapError("st_1", 3, 31)
    assert (gap.stream_id, gap.last_seq, gap.first_seq) == ("st_1", 3, 31)
    assert str(gap).startswith("gap after seq 3: the server's history starts at seq 31")
    failed = StreamFailedError("model_error", "boom", "partial", stream_id="st_1", last_seq=5)
    assert failed.partial_text == "partial" and "model_error: boom" in str(failed)
    cancelled = StreamCancelledError("stopped", "pa")
    assert cancelled.reason == "stopped" and isinstance(cancelled, ClientError)
    assert issubclass(TransportError, ClientError) and TransportError.retryable


def test_an_error_shared_by_streams_is_copied_per_stream() -> None:
    err = TransportError("the connection broke")
    a = err.at("st_a", 5)
    b = err.at("st_b", 9)
    assert a is err and (a.stream_id, a.last_seq) == ("st_a", 5)
    assert b is not err and (b.stream_id, b.last_seq) == ("st_b", 9)
    assert type(b) is TransportError and str(b).startswith("the connection broke")
