"""A pool of worker processes for one model: a bounded wait queue, restarts, crash loops.

- ``size`` workers, each serving one generation at a time. They start on the
  first request, or at once with :meth:`WorkerPool.start` (the server's
  start-up self-check).
- A request that finds no idle worker waits in a FIFO of at most
  ``max_queue``; one more is refused with ``model_busy`` (HTTP 503). A waiting
  request that is stopped leaves the queue.
- A worker that dies is started again after a backoff that doubles with each
  recent crash (``RestartPolicy``). ``max_crashes`` crashes within
  ``window_s`` is a crash loop: the model is *unavailable* — requests are
  refused with ``model_unavailable`` (HTTP 503), those waiting end with it —
  for ``cooldown_s``, after which the next request tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from tokenwire.models.errors import ModelBusyError, ModelStartFailedError, ModelUnavailableError
from tokenwire.workers.process import WorkerProcess, WorkerSpec, WorkerState


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    window_s: float = 30.0
    max_crashes: int = 3
    cooldown_s: float = 60.0

    def delay(self, recent_crashes: int) -> float:
        return float(min(self.backoff_s * 2 ** max(0, recent_crashes - 1), self.max_backoff_s))


class WorkerPool:
    def __init__(
        self,
        spec: WorkerSpec,
        *,
        size: int = 1,
        max_queue: int = 16,
        policy: RestartPolicy | None = None,
    ) -> None:
        if size < 1 or max_queue < 0:
            raise ValueError("a pool needs size >= 1 and max_queue >= 0")
        self.spec = spec
        self.model = spec.name
        self.max_queue = max_queue
        self.policy = policy or RestartPolicy()
        self.workers = [WorkerProcess(spec, i, self) for i in range(size)]
        self._idle: deque[WorkerProcess] = deque()
        self._waiters: deque[asyncio.Future[WorkerProcess]] = deque()
        self._crashes: deque[float] = deque(maxlen=self.policy.max_crashes)
        self._unavailable: tuple[float, str] | None = None  # (until, reason)
        self._launches: dict[int, asyncio.Task[None]] = {}
        self._started = False
        self._closed = False
        self._checking = False

    # -- admission ------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._waiters)

    @property
    def queue_full(self) -> bool:
        return not self._idle and len(self._waiters) >= self.max_queue

    def unavailable(self) -> ModelUnavailableError | None:
        """The error a request gets now if the model is in a crash loop, else None."""
        if self._unavailable is None:
            return None
        until, reason = self._unavailable
        if time.monotonic() >= until:
            return None  # cooled down: the next request starts the workers again
        return ModelUnavailableError(self.model, reason)

    def check_admission(self) -> None:
        """Raise now what a new request would meet: ``model_unavailable``, ``model_busy``."""
        err = self.unavailable()
        if err is not None:
            raise err
        if self.queue_full:
            raise ModelBusyError(self.model, self.queue_depth)

    async def acquire(self) -> WorkerProcess:
        self.check_admission()
        if self._unavailable is not None:  # cooled down
            self._unavailable = None
            self._crashes.clear()
            self._started = False
        self._ensure_started()
        while self._idle:
            worker = self._idle.popleft()
            if worker.alive and worker.state is WorkerState.READY:
                return worker
        fut: asyncio.Future[WorkerProcess] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            return await fut
        except asyncio.CancelledError:
            with contextlib.suppress(ValueError):
                self._waiters.remove(fut)
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.worker_idle(fut.result())  # handed to us as we were cancelled
            raise

    # -- starting -------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._started or self._closed:
            return
        self._started = True
        for worker in self.workers:
            if not worker.alive and worker.index not in self._launches:
                self._launch(worker, 0.0)

    async def start(self) -> None:
        """Start every worker now and wait until each is ready; raises the first
        :class:`ModelStartFailedError` (for the start-up self-check, which reports a
        failure rather than retry it: the next request starts the workers again)."""
        self._ensure_started()
        launches = [self._launches[w.index] for w in self.workers if w.index in self._launches]
        self._checking = True
        try:
            outcomes = await asyncio.gather(*launches, return_exceptions=True)
        finally:
            self._checking = False
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                self._started = False
                raise outcome
        err = self.unavailable()
        if err is not None:
            raise err

    def _launch(self, worker: WorkerProcess, delay: float) -> None:
        task = asyncio.create_task(self._start_worker(worker, delay))
        self._launches[worker.index] = task
        task.add_done_callback(functools.partial(self._launched, worker.index))

    def _launched(self, index: int, task: asyncio.Task[None]) -> None:
        if self._launches.get(index) is task:
            del self._launches[index]
        if not task.cancelled():
            task.exception()  # retrieved: start() or worker_exited reports it

    async def _start_worker(self, worker: WorkerProcess, delay: float) -> None:
        if delay:
            worker.state = WorkerState.RESTARTING
            await asyncio.sleep(delay)
        if self._closed or self._unavailable is not None:
            return
        try:
            await worker.start()
        except ModelStartFailedError:
            raise  # worker_exited already counted the crash and scheduled what follows
        self.worker_idle(worker)

    # -- the workers tell us --------------------------------------------------

    def worker_idle(self, worker: WorkerProcess) -> None:
        if not worker.alive or worker.state is not WorkerState.READY:
            return
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(worker)
                return
        if worker not in self._idle:
            self._idle.append(worker)

    def worker_exited(self, worker: WorkerProcess, how: str) -> None:
        with contextlib.suppress(ValueError):
            self._idle.remove(worker)
        if self._closed or self._checking or self.unavailable() is not None:
            return
        now = time.monotonic()
        self._crashes.append(now)
        recent = sum(1 for t in self._crashes if now - t <= self.policy.window_s)
        if recent >= self.policy.max_crashes:
            self._mark_unavailable(
                f"its worker crashed {recent} times within {self.policy.window_s:g} s "
                f"(last: it {how}); retrying in {self.policy.cooldown_s:g} s"
            )
            return
        worker.restarts += 1
        worker.state = WorkerState.RESTARTING
        self._launch(worker, self.policy.delay(recent))

    def _mark_unavailable(self, reason: str) -> None:
        self._unavailable = (time.monotonic() + self.policy.cooldown_s, reason)
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(ModelUnavailableError(self.model, reason))
        for worker in self.workers:
            worker.kill()  # a half-working model is stopped whole until the cooldown ends

    # -- state ----------------------------------------------------------------

    @property
    def state(self) -> str:
        if self.unavailable() is not None:
            return "unavailable"
        states = {w.state for w in self.workers}
        if self._idle:
            return "ready"
        if WorkerState.BUSY in states:
            return "busy"
        if WorkerState.RESTARTING in states:
            return "restarting"
        if WorkerState.STARTING in states:
            return "starting"
        return "stopped"

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "state": self.state,
            "workers": [w.describe() for w in self.workers],
            "waiting": len(self._waiters),
            "max_queue": self.max_queue,
        }
        err = self.unavailable()
        if err is not None:
            out["reason"] = err.reason
        return out

    async def aclose(self) -> None:
        self._closed = True
        for task in list(self._launches.values()):
            task.cancel()
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(ModelUnavailableError(self.model, "the server is shutting down"))
        await asyncio.gather(*(w.stop() for w in self.workers), return_exceptions=True)
