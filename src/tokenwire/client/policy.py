"""Reconnect policy: exponential backoff with full jitter, and a circuit breaker.

Pure code over numbers and a clock value: no I/O, no asyncio. Time is whatever
the caller passes as ``now`` (the transports pass the event loop's monotonic
clock; tests pass plain floats).

Backoff is "full jitter" (Brooker, *Exponential Backoff And Jitter*, AWS
Architecture Blog, 2015): the n-th retry after failures waits a uniform random
time in ``[0, min(cap, base * 2**n)]``, which spreads a crowd of clients that
lost the same server instead of letting them return in waves.

The circuit breaker is shared by every stream of one transport on one server::

    closed --(K consecutive failures)--> open --(cooldown elapsed)--> half-open
    half-open --(probe succeeds)--> closed
    half-open --(probe fails)-----> open   (the cooldown starts again)

While open, nobody connects; in half-open exactly one probe goes, the others
wait for its outcome.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """How a stream reconnects. All times in seconds.

    - ``base_s``, ``cap_s``: the backoff scale and ceiling.
    - ``max_attempts``: failed attempts in a row before giving up with
      :exc:`~tokenwire.client.errors.ReconnectExhaustedError`; ``None`` never gives up.
      An attempt fails when no ``open`` frame arrives; a link that opened and
      later broke is not a failure, and the count restarts at every ``open``.
    - ``honor_retry``: the SSE ``retry:`` field (milliseconds) replaces ``base_s``
      as the backoff scale, so a server can slow its clients down.
    - ``breaker_threshold``, ``breaker_cooldown_s``: the circuit breaker opens after
      that many failed attempts in a row, across the streams sharing it, and
      lets one probe through after the cooldown.
    - ``connect_timeout_s``: an attempt that has not produced its ``open`` frame by
      then has failed (the heartbeat timeout also ends silent attempts earlier).
    - ``rng``: the random source for jitter; inject a seeded ``random.Random`` in tests.
    """

    base_s: float = 0.5
    cap_s: float = 30.0
    max_attempts: int | None = 10
    honor_retry: bool = True
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 5.0
    connect_timeout_s: float = 10.0
    rng: random.Random | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.base_s < 0 or self.cap_s < 0:
            raise ValueError("base_s and cap_s must be >= 0")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1 or None")
        if self.breaker_threshold < 1:
            raise ValueError("breaker_threshold must be >= 1")
        if self.breaker_cooldown_s < 0 or self.connect_timeout_s <= 0:
            raise ValueError("breaker_cooldown_s must be >= 0 and connect_timeout_s > 0")

    def breaker(self) -> CircuitBreaker:
        return CircuitBreaker(self.breaker_threshold, self.breaker_cooldown_s)


def backoff_ceiling(attempt: int, base: float, cap: float) -> float:
    """``min(cap, base * 2**attempt)``: the upper bound of the ``attempt``-th delay."""
    # Past 2**64 the product only matters through the cap; keep the float finite.
    return min(cap, base * 2.0 ** min(attempt, 64))


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """A delay uniform in ``[0, min(cap, base * 2**attempt)]`` (attempt counts from 0)."""
    return rng.uniform(0.0, backoff_ceiling(attempt, base, cap))


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Stops a crowd of streams from hammering a server that keeps failing.

    ``allow(now)`` returns ``0.0`` when an attempt may go now, else how long to
    wait before asking again. Report every attempt's outcome with
    :meth:`record_success` or :meth:`record_failure`.
    """

    __slots__ = (
        "_failures",
        "_opened_at",
        "_probe_at",
        "cooldown_s",
        "state",
        "threshold",
        "trips",
    )

    def __init__(self, threshold: int = 5, cooldown_s: float = 5.0) -> None:
        if threshold < 1 or cooldown_s < 0:
            raise ValueError("threshold must be >= 1 and cooldown_s >= 0")
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.state = BreakerState.CLOSED
        self.trips = 0  # how many times it opened
        self._failures = 0
        self._opened_at = 0.0
        self._probe_at: float | None = None

    @property
    def failures(self) -> int:
        """Failed attempts in a row."""
        return self._failures

    def allow(self, now: float) -> float:
        if self.state is BreakerState.CLOSED:
            return 0.0
        if self.state is BreakerState.OPEN:
            remaining = self._opened_at + self.cooldown_s - now
            if remaining > 0:
                return remaining
            self.state = BreakerState.HALF_OPEN
            self._probe_at = None
        # Half-open: one probe goes; the others ask again later. A probe that
        # never reports back blocks them for one cooldown at most.
        if self._probe_at is not None and now - self._probe_at < self.cooldown_s:
            return max(self.cooldown_s / 4, 1e-3)
        self._probe_at = now
        return 0.0

    def record_success(self, now: float) -> None:
        self._failures = 0
        self._probe_at = None
        self.state = BreakerState.CLOSED

    def record_failure(self, now: float) -> None:
        self._failures += 1
        if self.state is BreakerState.HALF_OPEN or (
            self.state is BreakerState.CLOSED and self._failures >= self.threshold
        ):
            self.state = BreakerState.OPEN
            self._opened_at = now
            self._probe_at = None
            self.trips += 1

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.state}, failures={self._failures}, trips={self.trips})"
