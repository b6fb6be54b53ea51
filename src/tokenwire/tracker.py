"""Token metrics for one stream: time to first token, tokens/s, inter-token latency.

:class:`StreamingTracker` is what ``model_producer`` uses to build the
``metrics`` event, and an application can use it on its own
around any token source::

    tracker = StreamingTracker()          # the clock starts now
    async for piece in source:
        tracker.on_token()
    print(tracker.snapshot().tokens_per_s)

Rates are counted from tokens, not frames: ``on_token(n)`` takes the number of
tokens a frame carries, and ``snapshot(tokens=…)`` takes the backend's own
count (its usage) when it is known.

Memory is bounded whatever the stream length: inter-token latencies are kept
in a reservoir of at most ``max_samples`` (Vitter's algorithm R), so the
percentiles are exact up to that many tokens and an unbiased estimate beyond.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class TokenMetrics:
    """A snapshot of a stream's token figures (times in milliseconds)."""

    ttft_ms: float | None
    tokens: int
    tokens_per_s: float
    itl_p50_ms: float | None
    itl_p95_ms: float | None
    duration_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


class StreamingTracker:
    """Measures one stream. Not thread-safe: feed it from one thread or one task."""

    __slots__ = (
        "_clock",
        "_count",
        "_first",
        "_last",
        "_max_samples",
        "_rng",
        "_samples",
        "_seen",
        "_start",
    )

    def __init__(
        self,
        *,
        start: float | None = None,
        clock: Clock = time.perf_counter,
        max_samples: int = 2048,
        seed: int = 0,
    ) -> None:
        if max_samples < 1:
            raise ValueError("max_samples must be at least 1")
        self._clock = clock
        self._start = clock() if start is None else start
        self._first: float | None = None
        self._last: float | None = None
        self._count = 0
        self._max_samples = max_samples
        self._samples: list[float] = []  # inter-token latencies, seconds
        self._seen = 0  # latencies offered to the reservoir
        self._rng = random.Random(seed)

    def restart(self, t: float | None = None) -> None:
        """Reset all figures and start the clock again (at ``t``, or now)."""
        self._start = self._clock() if t is None else t
        self._first = self._last = None
        self._count = 0
        self._samples.clear()
        self._seen = 0

    @property
    def tokens(self) -> int:
        return self._count

    def on_token(self, n: int = 1, t: float | None = None) -> None:
        """Record a frame of ``n`` tokens that arrived at ``t`` (default: now)."""
        if n < 1:
            return
        now = self._clock() if t is None else t
        if self._last is None:
            self._first = now
        else:
            # A frame of n tokens after a gap counts as n tokens gap/n apart.
            self._sample(max(now - self._last, 0.0) / n)
        self._last = now
        self._count += n

    def _sample(self, value: float) -> None:
        self._seen += 1
        if len(self._samples) < self._max_samples:
            self._samples.append(value)
            return
        slot = self._rng.randrange(self._seen)
        if slot < self._max_samples:
            self._samples[slot] = value

    def snapshot(self, *, tokens: int | None = None, t: float | None = None) -> TokenMetrics:
        """The figures so far. ``tokens`` overrides the count (e.g. the backend's usage);
        ``t`` is the end of the measurement (default: the last token, or now if none)."""
        count = self._count if tokens is None else tokens
        end = t if t is not None else (self._last if self._last is not None else self._clock())
        elapsed = max(end - self._start, 0.0)
        samples = sorted(self._samples)
        return TokenMetrics(
            ttft_ms=None if self._first is None else (self._first - self._start) * 1000.0,
            tokens=count,
            tokens_per_s=count / elapsed if elapsed > 0 and count else 0.0,
            itl_p50_ms=_percentile(samples, 0.50),
            itl_p95_ms=_percentile(samples, 0.95),
            duration_ms=elapsed * 1000.0,
        )


def _percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted seconds, in milliseconds."""
    if not ordered:
        return None
    rank = max(math.ceil(q * len(ordered)), 1)
    return ordered[rank - 1] * 1000.0


class StreamingTrackers:
    """Trackers keyed by job id, (``start`` / ``add_chunk`` / ``complete``).

    At most ``max_jobs`` are kept: starting one more drops the oldest unfinished
    job, so a caller that never completes its jobs cannot grow memory.
    """

    def __init__(self, *, max_jobs: int = 1024, clock: Clock = time.perf_counter) -> None:
        if max_jobs < 1:
            raise ValueError("max_jobs must be at least 1")
        self._max_jobs = max_jobs
        self._clock = clock
        self._jobs: dict[str, StreamingTracker] = {}

    def start(self, job_id: str) -> StreamingTracker:
        self._jobs.pop(job_id, None)
        while len(self._jobs) >= self._max_jobs:
            del self._jobs[next(iter(self._jobs))]
        tracker = self._jobs[job_id] = StreamingTracker(clock=self._clock)
        return tracker

    def add_chunk(self, job_id: str, chunk: str = "", tokens: int = 1) -> None:
        """Record a chunk of ``tokens`` tokens for ``job_id`` (started on first use)."""
        tracker = self._jobs.get(job_id) or self.start(job_id)
        tracker.on_token(tokens)

    def get(self, job_id: str) -> StreamingTracker | None:
        return self._jobs.get(job_id)

    def complete(self, job_id: str) -> TokenMetrics | None:
        """Finish ``job_id`` and return its figures (``None`` if it is unknown)."""
        tracker = self._jobs.pop(job_id, None)
        return None if tracker is None else tracker.snapshot()

    def __len__(self) -> int:
        return len(self._jobs)
