"""Prometheus metrics on prometheus_client.

Counters and gauges on the hot path stay plain numbers in a dict: the delivery
loops call :meth:`Metrics.inc` once or twice per socket write, where a
prometheus_client child's ``inc`` (a lock per call) costs about twice as much
(``python -m bench.metrics_bench``: 300 ns against 650 ns a call). A
:class:`~prometheus_client.registry.Collector` turns those numbers into metric
families when ``/metrics`` is scraped; histograms are prometheus_client's own, and
the process's CPU, memory and descriptors come from its ``ProcessCollector``
(``process_*``), so no name here collides with them.

Labels: ``transport`` (sse, ndjson, ws, socketio, …), ``model`` and ``status``
(how a stream ended). A sample is written with the labels it was counted with;
:meth:`Metrics.declare` makes a series exist, at 0, before its first count.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

log = logging.getLogger("tokenwire")

_DEFAULT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# (name, transport) or (name, transport, model, status)
_Key = tuple[str, ...]
_LABELS = ("transport", "model", "status")


class _Store:
    """The numbers every :class:`Metrics` view of one registry shares."""

    def __init__(self) -> None:
        self.counters: dict[_Key, float] = {}
        self.gauges: dict[_Key, float] = {}
        self.gauge_fns: dict[str, Callable[[], float]] = {}
        self.histograms: dict[str, Histogram] = {}
        self.help: dict[str, str] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.process = False


class _Families(Collector):
    def __init__(self, store: _Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        s = self.store
        for kind, table in (("counter", s.counters), ("gauge", s.gauges)):
            families: dict[str, Metric] = {}
            for key, value in sorted(table.items()):
                name = key[0]
                family = families.get(name)
                if family is None:
                    base = name.removesuffix("_total") if kind == "counter" else name
                    family = families[name] = Metric(base, s.help.get(name, name), kind)
                labels = {k: v for k, v in zip(_LABELS, key[1:], strict=False) if v}
                family.add_sample(name, labels, value)
            yield from families.values()
        for name, fn in sorted(s.gauge_fns.items()):
            family = Metric(name, s.help.get(name, name), "gauge")
            family.add_sample(name, {}, fn())
            yield family


class Metrics:
    """Counters and gauges keyed by name and labels, histograms, callback gauges;
    :meth:`render` writes them all in the Prometheus text format."""

    __slots__ = ("_counters", "_gauges", "_model", "_s")

    def __init__(self) -> None:
        self._bind(_Store(), "")
        self._s.registry.register(_Families(self._s))

    def _bind(self, store: _Store, model: str) -> None:
        self._s, self._model = store, model
        # the hot path reads these two without going through the store
        self._counters, self._gauges = store.counters, store.gauges

    def include_process(self) -> None:
        """Add prometheus_client's ``process_*`` metrics (CPU, memory, descriptors);
        once per registry."""
        if not self._s.process:
            self._s.process = True
            ProcessCollector(registry=self._s.registry)

    @property
    def registry(self) -> CollectorRegistry:
        return self._s.registry

    @property
    def gauge_fns(self) -> dict[str, Callable[[], float]]:
        return self._s.gauge_fns

    def for_model(self, model: str) -> Metrics:
        """The same metrics, counting with ``model=`` set (a model's producer gets one)."""
        view = Metrics.__new__(Metrics)
        view._bind(self._s, model)
        return view

    def inc(self, name: str, value: float = 1.0, transport: str = "", *, status: str = "") -> None:
        # most counts carry no model or status: a shorter key hashes faster
        key = (name, transport, self._model, status) if self._model or status else (name, transport)
        counters = self._counters
        counters[key] = counters.get(key, 0.0) + value

    def gauge_add(self, name: str, value: float, transport: str = "") -> None:
        key = (name, transport, self._model, "") if self._model else (name, transport)
        gauges = self._gauges
        gauges[key] = gauges.get(key, 0.0) + value

    def gauge_fn(self, name: str, fn: Callable[[], float], help: str = "") -> None:
        self._s.gauge_fns[name] = fn
        if help:
            self._s.help[name] = help

    def histogram(self, name: str, help: str = "") -> Histogram:
        hist = self._s.histograms.get(name)
        if hist is None:
            hist = self._s.histograms[name] = Histogram(
                name, help or name, buckets=_DEFAULT_BUCKETS_S, registry=self._s.registry
            )
        return hist

    def describe(self, name: str, help: str) -> None:
        self._s.help[name] = help

    def declare(
        self,
        name: str,
        help: str,
        *,
        transports: Iterable[str] = ("",),
        models: Iterable[str] = ("",),
        statuses: Iterable[str] = ("",),
    ) -> None:
        """A counter whose series exist, at 0, from the start: one per combination of
        the label values given."""
        self._s.help.setdefault(name, help)
        counters = self._s.counters
        for t in transports:
            for m in models:
                for st in statuses:
                    counters.setdefault((name, t, m, st) if m or st else (name, t), 0.0)

    def value(self, name: str, transport: str = "", **labels: str) -> float:
        model, status = labels.get("model", self._model), labels.get("status", "")
        key = (name, transport, model, status) if model or status else (name, transport)
        return self._s.counters.get(key, self._s.gauges.get(key, 0.0))

    def render(self) -> str:
        return generate_latest(self._s.registry).decode()


def declare_stream_metrics(
    metrics: Metrics, models: Iterable[str], transports: Iterable[str]
) -> None:
    """The counters a scrape shows from the first one, before anything happened."""
    models = tuple(models)
    transports = tuple(transports)
    metrics.declare(
        "tokenwire_streams_ended_total",
        "streams ended, by model and terminal status",
        models=models,
        statuses=("done", "error", "cancelled"),
    )
    for name, help in (
        ("tokenwire_model_generations_total", "generations finished, per model"),
        ("tokenwire_model_tokens_total", "tokens generated, per model"),
        ("tokenwire_model_errors_total", "generations that ended in a model error, per model"),
    ):
        metrics.declare(name, help, models=models)
    for name, help in (
        ("tokenwire_events_delivered_total", "events written to subscribers, per transport"),
        ("tokenwire_bytes_delivered_total", "bytes written to subscribers, per transport"),
    ):
        metrics.declare(name, help, transports=transports)
    for name, help in (
        ("tokenwire_streams_started_total", "streams started"),
        ("tokenwire_events_published_total", "events appended to stream logs"),
        ("tokenwire_bytes_published_total", "payload bytes appended to stream logs"),
        ("tokenwire_event_loop_stalls_total", "event loop stalls"),
    ):
        metrics.declare(name, help)


def count_end(stream: Any, metrics: Metrics) -> None:
    """Count ``stream`` in ``tokenwire_streams_ended_total{model,status}`` when it ends.
    Its task's done callback runs after the hub's own, which set the status."""
    task: asyncio.Task[None] | None = stream._task
    model = stream.model or ""

    def ended(_: object) -> None:
        metrics.for_model(model).inc("tokenwire_streams_ended_total", status=str(stream.status))

    if task is not None:
        task.add_done_callback(ended)


class LoopLagMonitor:
    """Measures how late the event loop runs a timer: a coroutine sleeps ``interval_s``
    and notes by how much it overslept. A delivery loop that goes round without
    awaiting, or a blocking call, shows up here, as a warning line when it stalls
    the loop for more than ``warn_s``, and as ``tokenwire_event_loop_lag_seconds``
    (the largest lag of the last ``window_s``).

    On a machine with more runnable processes than cores, the loop also runs late
    because the kernel does not schedule it. ``tokenwire_event_loop_own_lag_seconds``
    is the lag less the time the loop's thread waited on a run queue meanwhile
    (``/proc/thread-self/schedstat``; the whole lag where that is not readable): what
    the process itself caused, a blocking call or a loop that does not await."""

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
        self._own: collections.deque[float] = collections.deque(maxlen=self._samples.maxlen)
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None
        metrics.gauge_fn(
            "tokenwire_event_loop_lag_seconds",
            self.lag,
            f"largest event loop lag over the last {window_s:g}s",
        )
        metrics.gauge_fn(
            "tokenwire_event_loop_own_lag_seconds",
            self.own_lag,
            f"largest event loop lag over the last {window_s:g}s, less run-queue waits",
        )
        metrics.describe(
            "tokenwire_event_loop_stalls_total", f"event loop stalls longer than {warn_s:g}s"
        )

    def lag(self) -> float:
        return max(self._samples, default=0.0)

    def own_lag(self) -> float:
        return max(self._own, default=0.0)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="tokenwire:loop-lag"
            )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before, waited = loop.time(), run_queue_wait_s()
            await asyncio.sleep(self.interval_s)
            lag = max(0.0, loop.time() - before - self.interval_s)
            own = max(0.0, lag - (run_queue_wait_s() - waited))
            self._samples.append(lag)
            self._own.append(own)
            if lag > self.warn_s:
                self._metrics.inc("tokenwire_event_loop_stalls_total")
                log.warning("event=loop_stall lag_s=%.3f own_lag_s=%.3f", lag, own)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def run_queue_wait_s() -> float:
    """Seconds this thread has waited on a run queue for a CPU (Linux; 0 elsewhere)."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


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
