"""Model workers over Redis: take generation jobs from the queue and run them as streams.

A :class:`JobRunner` is what ``tokenwire worker`` runs, and what a gateway with
``--model-workers N`` runs beside its HTTP side. It has ``slots`` job slots:

- it renews its node's liveness (tokenwire.broker.redis_jobs) while it has slots;
- it claims a job (``XREADGROUP``) whenever a slot is free, and runs it as a Hub
  stream over the RedisBroker, the same publish path, watchdog and retention as a
  local stream; the events go straight into the stream's Redis log;
- a gateway's own request takes a free slot directly (no queue hop); with no free
  slot it is queued. A job that arrives for a slot a request took meanwhile goes
  back to the queue, for a node with a free slot;
- every node, pure gateways too, reaps once a second what gone nodes held.

``tokenwire worker`` (:func:`run_worker`) loads the models from the same
configuration as ``serve`` and runs only this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from typing import Any

from tokenwire.broker.redis_jobs import Job, JobQueue, every
from tokenwire.errors import StreamNotFound, TokenwireError
from tokenwire.events import Event
from tokenwire.models import GenerationRequest, ModelManager
from tokenwire.models.producer import model_producer
from tokenwire.stream import Hub, Stream, log_event, new_stream_id
from tokenwire.workers import messages

log = logging.getLogger("tokenwire")


class JobRunner:
    """Claims and runs jobs on ``slots`` slots (0: only submits and reaps)."""

    def __init__(
        self,
        hub: Hub,
        models: ModelManager,
        queue: JobQueue,
        slots: int,
        *,
        reap_every_s: float = 1.0,
    ) -> None:
        if slots < 0:
            raise ValueError("slots must be >= 0")
        self.hub = hub
        self.models = models
        self.queue = queue
        self.slots = slots
        self.reap_every_s = reap_every_s
        self.running = 0
        self.claimed = 0
        self._freed = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._ends: set[asyncio.Task[None]] = set()
        self._streams: dict[str, Stream] = {}  # running here

    async def start(self) -> None:
        """Renew liveness (first once now, so jobs may be queued for this node at once),
        claim and reap in the background."""
        loop = asyncio.get_running_loop()
        if self.slots:
            try:
                await self.queue.heartbeat()
            except TokenwireError as exc:  # Redis away: the loop below keeps trying
                log.warning("liveness: %s", exc.message)
            beat = every(self.queue.ttl_s / 3, self.queue.heartbeat, "liveness", self._stop)
            self._tasks.append(loop.create_task(beat, name="tokenwire:liveness"))
            self._tasks.append(loop.create_task(self._claim_loop(), name="tokenwire:claim"))
        reap = every(self.reap_every_s, self.queue.reap, "reaper", self._stop)
        self._tasks.append(loop.create_task(reap, name="tokenwire:reaper"))

    async def submit(self, request: GenerationRequest) -> tuple[str, Stream | None]:
        """Run ``request`` here if a slot is free, else queue it for any worker; the
        stream id, and the stream when it runs here."""
        self.models.resolve(request.model)  # 422 for an unknown model, before anything
        if not self._tasks:
            # Not started (an embedding app whose lifespan never ran): no liveness, so
            # nothing may be registered to reap; run here as without a job queue.
            stream = await self.hub.start(self._events(request, None), model=request.model)
            return stream.id, stream
        if self.running < self.slots and self._admits(request.model):
            self.running += 1
            sid = new_stream_id()
            try:
                await self.queue.run_here(sid)
                await self.hub.broker.create(sid, model=request.model, owner=self.queue.node_id)  # type: ignore[call-arg]
                stream = await self._run(sid, request)
            except BaseException:
                self._free()
                with contextlib.suppress(Exception):
                    await self.queue.release(sid)
                raise
            return sid, stream
        sid = new_stream_id()
        body = messages.encode(messages.Request.from_generation(sid, request))
        await self.queue.submit(sid, body, model=request.model)
        log_event("job_queued", stream=sid, transport="jobs", model=request.model)
        return sid, None

    def _admits(self, model: str) -> bool:
        """Whether this node's backend of ``model`` takes one more generation now (a
        worker pool with a full wait queue does not: the job goes to the queue)."""
        check = getattr(self.models.get(model), "check_admission", None)
        if check is None:
            return True
        try:
            check()
        except TokenwireError:
            return False
        return True

    async def _claim_loop(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                await self._wait_for_slot()
                job = await self.queue.claim(block_ms=1000)
                backoff = 0.5
                if job is None:
                    continue
                if self.running >= self.slots or self._stop.is_set():
                    # A request of this node's took the slot while XREADGROUP waited:
                    # back to the queue, for a node with a free slot.
                    await self.queue.give_back(job)
                    continue
                self.running += 1  # the slot is the job's from here
                try:
                    confirmed = await self.queue.confirm(job)
                except BaseException:
                    self._free()
                    raise
                if not confirmed:  # a reaper handed it on meanwhile: not ours
                    self._free()
                    continue
                self.claimed += 1
                started = False
                try:
                    started = await self._start_job(job)
                finally:
                    if not started:
                        self._free()
                        with contextlib.suppress(Exception):
                            await self.queue.release(job.stream_id)
            except asyncio.CancelledError:
                raise
            except TokenwireError as exc:  # Redis away: try again, less often each time
                log.warning("claiming jobs: %s (again in %gs)", exc.message, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:
                log.exception("claiming jobs failed")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _wait_for_slot(self) -> None:
        while self.running >= self.slots and not self._stop.is_set():
            self._freed.clear()
            await self._freed.wait()

    async def _start_job(self, job: Job) -> bool:
        """Run ``job`` here; False when its stream has ended meanwhile (nothing to run)."""
        try:
            info = await self.hub.broker.info(job.stream_id)
        except StreamNotFound:
            info = None
        if info is None or info.closed:  # stopped (or expired) while it waited
            log_event("job_skipped", stream=job.stream_id, transport="jobs")
            return False
        try:
            request = messages.decode(job.request)
            if not isinstance(request, messages.Request):
                raise messages.MalformedMessageError(f"a job holds {request.type!r}")
            generation: GenerationRequest | None = request.to_generation()
            error: Event | None = None
        except messages.WorkerProtocolError as exc:
            generation, error = None, Event.error(exc.code, exc.message)
        log_event(
            "job_claimed",
            stream=job.stream_id,
            transport="jobs",
            worker=self.queue.node_id,
            attempt=job.attempts + 1,
        )
        if generation is None:
            assert error is not None
            await self._run(job.stream_id, None, error, adopt=True)
        else:
            await self._run(job.stream_id, generation, adopt=True)
        return True

    async def _run(
        self,
        sid: str,
        request: GenerationRequest | None,
        error: Event | None = None,
        *,
        adopt: bool = True,
    ) -> Stream:
        model = request.model if request is not None else None
        producer = self._events(request, error)
        stream = await self.hub.start(producer, model=model, stream_id=sid, adopt=adopt)
        self._streams[sid] = stream
        end = asyncio.get_running_loop().create_task(self._ended(stream))
        self._ends.add(end)
        end.add_done_callback(self._ends.discard)
        return stream

    async def _events(
        self, request: GenerationRequest | None, error: Event | None
    ) -> AsyncIterator[Event]:
        if request is None:
            assert error is not None
            yield error
            return
        try:
            backend = self.models.get(request.model)
        except TokenwireError as exc:  # a model this node does not know
            yield Event.error(exc.code, exc.message)
            return
        metrics = self.hub.metrics.for_model(request.model)
        async for event in model_producer(backend, request, metrics=metrics):
            yield event

    async def _ended(self, stream: Stream) -> None:
        try:
            await stream.wait()
            await self.queue.release(stream.id)
        except Exception as exc:  # Redis away: the entry is reaped once we are gone
            log.warning("releasing job %s: %s", stream.id, exc)
        finally:
            self._streams.pop(stream.id, None)
            self._free()

    def _free(self) -> None:
        self.running -= 1
        self._freed.set()

    def describe(self) -> dict[str, Any]:
        return {
            "node": self.queue.node_id,
            "slots": self.slots,
            "running": self.running,
            "claimed": self.claimed,
        }

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """Stop claiming, end the streams running here (``cancelled {reason:
        "shutdown"}``), then stop renewing liveness and leave. In that order: a node
        that left while its streams still ran would see them reaped as lost."""
        self._stop.set()
        self._freed.set()
        stops = [self.hub.cancel(sid, "shutdown") for sid in list(self._streams)]
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*stops, return_exceptions=True), timeout_s)
        if self._ends:
            await asyncio.wait(set(self._ends), timeout=timeout_s)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
        if self.slots:
            with contextlib.suppress(Exception):
                await self.queue.leave()


async def run_worker(
    broker_url: str,
    models: ModelManager,
    *,
    slots: int,
    max_queue: int,
    ttl_s: float = 3.0,
    max_wait_s: float = 60.0,
    hub_config: Any = None,
) -> int:
    """``tokenwire worker``: run jobs until SIGTERM or SIGINT; then stop claiming and end
    the streams running here (``cancelled {reason: "shutdown"}``)."""
    from tokenwire.broker.redis import RedisBroker
    from tokenwire.broker.redis_jobs import new_node_id
    from tokenwire.stream import HubConfig

    config = hub_config or HubConfig()
    node = new_node_id("worker")
    broker = RedisBroker(
        broker_url, config.retention, window_bytes=config.window_bytes, node_id=node
    )
    hub = Hub(broker, config=config)
    runner = JobRunner(
        hub,
        models,
        JobQueue(broker, max_queue=max_queue, ttl_s=ttl_s, max_wait_s=max_wait_s),
        slots,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await models.begin_self_check()
        await runner.start()
        log_event(
            "worker_ready",
            transport="jobs",
            worker=node,
            slots=slots,
            model=models.default,
            broker=broker_url,
        )
        await stop.wait()
    finally:
        await runner.aclose()
        await hub.aclose()
        await models.aclose()
    return 0


def job_runner_for(hub: Hub, models: ModelManager, config: Any) -> JobRunner | None:
    """The gateway's runner over a Redis hub (``config``: a ServerConfig); None on the
    memory broker, where generations run in the gateway as they always did."""
    from tokenwire.broker.redis import RedisBroker

    if not isinstance(hub.broker, RedisBroker):
        return None
    queue = JobQueue(
        hub.broker,
        max_queue=config.max_queued_jobs,
        ttl_s=config.worker_ttl_s,
        max_wait_s=config.max_job_wait_s,
    )
    return JobRunner(hub, models, queue, config.model_workers)


def worker_command(args: Any) -> int:
    """``tokenwire worker``: settings from the flags, else ``TOKENWIRE_*`` (the same
    variables as ``serve``), models from the same sources as ``serve``."""
    import sys

    from tokenwire.broker import is_shared
    from tokenwire.models import default_manager
    from tokenwire.server import logformat
    from tokenwire.server.config import ServerConfig, config_path

    def refuse(message: str) -> int:
        print(f"tokenwire worker: error: {message}", file=sys.stderr)
        return 2

    try:
        config = ServerConfig.from_env(
            config_file=args.config,
            broker=args.broker,
            model_workers=args.model_workers,
            default_model=args.model,
        )
        models = default_manager(
            default=args.model, config_file=config_path(args.config), models=args.models
        )
    except (ValueError, TokenwireError) as exc:
        return refuse(exc.message if isinstance(exc, TokenwireError) else str(exc))
    if not is_shared(config.broker) or not config.broker.startswith(("redis", "rediss", "unix")):
        return refuse(
            f"--broker {config.broker!r}: a worker takes its jobs from Redis; "
            "give --broker redis://host:port/db (or TOKENWIRE_BROKER)"
        )
    if config.model_workers < 1:
        return refuse(f"--model-workers must be at least 1, not {config.model_workers}")
    logformat.configure(args.log_level, args.log_format)
    try:
        return asyncio.run(
            run_worker(
                config.broker,
                models,
                slots=config.model_workers,
                max_queue=config.max_queued_jobs,
                ttl_s=config.worker_ttl_s,
                max_wait_s=config.max_job_wait_s,
                hub_config=config.hub,
            )
        )
    except TokenwireError as exc:
        from tokenwire.workers.report import start_failure_paragraph

        if models.readiness == "failed":
            print(start_failure_paragraph(models, exc), file=sys.stderr)
            return 1
        print(f"tokenwire worker: error: {exc.message}", file=sys.stderr)
        return 1
