"""StreamingTracker: pure figures from a fake clock."""

from __future__ import annotations

import pytest

from tokenwire.tracker import StreamingTracker, StreamingTrackers


def test_ttft_rate_and_itl_from_explicit_times() -> None:
    tracker = StreamingTracker(start=10.0)
    for i in range(10):
        tracker.on_token(t=10.5 + i * 0.1)  # first at +500 ms, then every 100 ms
    snap = tracker.snapshot()
    assert snap.ttft_ms == pytest.approx(500.0)
    assert snap.tokens == 10
    assert snap.duration_ms == pytest.approx(1400.0)
    assert snap.tokens_per_s == pytest.approx(10 / 1.4)
    assert snap.itl_p50_ms == pytest.approx(100.0)
    assert snap.itl_p95_ms == pytest.approx(100.0)


def test_rate_counts_tokens_not_frames() -> None:
    tracker = StreamingTracker(start=0.0)
    tracker.on_token(1, t=0.1)
    tracker.on_token(4, t=0.5)  # one frame carrying 4 tokens: 4 tokens 100 ms apart
    snap = tracker.snapshot()
    assert snap.tokens == 5
    assert snap.tokens_per_s == pytest.approx(10.0)
    assert snap.itl_p50_ms == pytest.approx(100.0)
    # The backend's own count wins when it is known.
    assert tracker.snapshot(tokens=8).tokens_per_s == pytest.approx(16.0)


def test_percentiles_nearest_rank() -> None:
    tracker = StreamingTracker(start=0.0)
    t = 0.0
    tracker.on_token(t=t)
    for gap_ms in [*([10] * 90), *([200] * 10)]:
        t += gap_ms / 1000
        tracker.on_token(t=t)
    snap = tracker.snapshot()
    assert snap.itl_p50_ms == pytest.approx(10.0)
    assert snap.itl_p95_ms == pytest.approx(200.0)


def test_empty_stream() -> None:
    clock = iter([1.0, 3.0]).__next__
    snap = StreamingTracker(clock=clock).snapshot()
    assert snap.ttft_ms is None
    assert snap.tokens == 0
    assert snap.tokens_per_s == 0.0
    assert snap.itl_p50_ms is None
    assert snap.to_dict()["duration_ms"] == pytest.approx(2000.0)


def test_memory_is_bounded_by_the_reservoir() -> None:
    tracker = StreamingTracker(start=0.0, max_samples=64)
    for i in range(100_000):
        tracker.on_token(t=i * 0.001)
    assert len(tracker._samples) == 64
    snap = tracker.snapshot()
    assert snap.tokens == 100_000
    assert snap.itl_p50_ms == pytest.approx(1.0)


def test_restart() -> None:
    tracker = StreamingTracker(start=0.0)
    tracker.on_token(t=1.0)
    tracker.restart(t=5.0)
    tracker.on_token(t=5.2)
    snap = tracker.snapshot()
    assert snap.tokens == 1
    assert snap.ttft_ms == pytest.approx(200.0)


def test_trackers_by_job_as_in_seed_004() -> None:
    jobs = StreamingTrackers(max_jobs=2)
    jobs.start("a")
    for chunk in ["Hel", "lo"]:
        jobs.add_chunk("a", chunk)
    jobs.add_chunk("b", "x")  # started on first use
    jobs.start("c")  # evicts the oldest, "a"
    assert len(jobs) == 2
    assert jobs.complete("a") is None
    result = jobs.complete("b")
    assert result is not None and result.tokens == 1
    assert jobs.get("b") is None
