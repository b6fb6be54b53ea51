"""Prometheus figures, kept as plain numbers and rendered in the text exposition format.

No client library: the hot path only adds to ints and floats, and one process
owns one :class:`Metrics`.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

log = logging.getLogger("tokenwire")

_DEFAULT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(slots=True)
class Histogram:
    buckets: tuple[float, ...] = _DEFAULT_BUCKETS_S
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def render(self, name: str, labels: str = "") -> Iterable[str]:
        running = 0
        sep = "," if labels else ""
        for bound, count in zip(self.buckets, self.counts, strict=False):
            running += count
            yield f'{name}_bucket{{{labels}{sep}le="{bound}"}} {running}'
        yield f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.n}'
        lbl = f"{{{labels}}}" if labels else ""
        yield f"{name}_sum{lbl} {self.total}"
        yield f"{name}_count{lbl} {self.n}"


class Metrics:
    """Counters and gauges keyed by (name, label value)."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, str], float] = {}
        self.gauges: dict[tuple[str, str], float] = {}
        self.gauge_fns: dict[str, Callable[[], float]] = {}
        self.histograms: dict[str, Histogram] = {}
        self.help: dict[str, str] = {}

    def inc(self, name: str, value: float = 1.0, transport: str = "") -> None:
        key = (name, transport)
        self.counters[key] = self.counters.get(key, 0.0) + value

    def gauge_add(self, name: str, value: float, transport: str = "") -> None:
        key = (name, transport)
        self.gauges[key] = self.gauges.get(key, 0.0) + value

    def gauge_fn(self, name: str, fn: Callable[[], float], help: str = "") -> None:
        self.gauge_fns[name] = fn
        if help:
            self.help[name] = help

    def histogram(self, name: str, help: str = "") -> Histogram:
        hist = self.histograms.get(name)
        if hist is None:
            hist = self.histograms[name] = Histogram()
            if help:
                self.help[name] = help
        return hist

    def describe(self, name: str, help: str) -> None:
        self.help[name] = help

    def value(self, name: str, transport: str = "") -> float:
        key = (name, transport)
        return self.counters.get(key, self.gauges.get(key, 0.0))

    def render(self) -> str:
        lines: list[str] = []

        def header(name: str, kind: str) -> None:
            if name in self.help:
                lines.append(f"# HELP {name} {self.help[name]}")
            lines.append(f"# TYPE {name} {kind}")

        for kind, table in (("counter", self.counters), ("gauge", self.gauges)):
            seen: set[str] = set()
            for (name, transport), value in sorted(table.items()):
                if name not in seen:
                    header(name, kind)
                    seen.add(name)
                label = f'{{transport="{transport}"}}' if transport else ""
                lines.append(f"{name}{label} {value:g}")
        for name, fn in sorted(self.gauge_fns.items()):
            header(name, "gauge")
            lines.append(f"{name} {fn():g}")
        for name, hist in sorted(self.histograms.items()):
            header(name, "histogram")
            lines.extend(hist.render(name))
        return "\n".join(lines) + "\n"


class LoopLagMonitor:
    """Measures how late the event loop runs a timer: a coroutine sleeps ``interval_s``
    and notes by how much it overslept. A delivery loop that goes round without
    awaiting, or a blocking call, shows up here, as a warning line when it stalls
    the loop for more than ``warn_s``, and as ``tokenwire_event_loop_lag_seconds``
    (the largest lag of the last ``window_s``)."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        interval_s: float = 0.1,
        warn_s: float = 0.25,
        window_s: float = 10.0,
    ) -> None:
        self.interval_s = interval_s
        self.warn_s = warn_s
        self._samples: collections.deque[float] = collections.deque(
            maxlen=max(1, int(window_s / interval_s))
        )
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None
        metrics.gauge_fn(
            "tokenwire_event_loop_lag_seconds",
            self.lag,
            f"largest event loop lag over the last {window_s:g}s",
        )
        metrics.describe(
            "tokenwire_event_loop_stalls_total", f"event loop stalls longer than {warn_s:g}s"
        )

    def lag(self) -> float:
        return max(self._samples, default=0.0)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="tokenwire:loop-lag"
            )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval_s)
            lag = max(0.0, loop.time() - before - self.interval_s)
            self._samples.append(lag)
            if lag > self.warn_s:
                self._metrics.inc("tokenwire_event_loop_stalls_total")
                log.warning("event=loop_stall lag_s=%.3f", lag)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def open_fds() -> float:
    """File descriptors this process holds (Linux; 0 elsewhere)."""
    try:
        return float(len(os.listdir("/proc/self/fd")))
    except OSError:
        return 0.0


def process_gauges(metrics: Metrics) -> LoopLagMonitor:
    """Register the process's own gauges (tasks, fds, loop lag); start the returned
    monitor on the running loop."""
    metrics.gauge_fn(
        "tokenwire_asyncio_tasks", lambda: float(len(asyncio.all_tasks())), "asyncio tasks alive"
    )
    metrics.gauge_fn("tokenwire_open_fds", open_fds, "file descriptors open in this process")
    return LoopLagMonitor(metrics)
