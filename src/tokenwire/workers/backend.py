"""``WorkerBackend``: a :class:`~tokenwire.models.base.ModelBackend` whose generations
run in a pool of worker processes (one pool per model)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from tokenwire.models.base import Finish, GenerationRequest
from tokenwire.models.errors import ModelStartFailedError
from tokenwire.workers.pool import RestartPolicy, WorkerPool
from tokenwire.workers.process import WorkerSpec


class WorkerBackend:
    """Proxies ``generate`` to a worker process running the backend ``url`` builds.

    ``advice`` turns a failed start into what to do about it (the self-check
    prints it); the registry passes the scheme's own.
    """

    def __init__(
        self,
        name: str,
        url: str,
        settings: Mapping[str, Any] | None = None,
        *,
        instances: int = 1,
        max_queue: int = 16,
        policy: RestartPolicy | None = None,
        advice: Callable[[ModelStartFailedError], str] | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self.advice = advice
        spec = WorkerSpec(name=name, url=url, settings=dict(settings or {}))
        self.pool = WorkerPool(spec, size=instances, max_queue=max_queue, policy=policy)

    @property
    def queue_depth(self) -> int:
        return self.pool.queue_depth

    @property
    def queue_full(self) -> bool:
        return self.pool.queue_full

    def check_admission(self) -> None:
        self.pool.check_admission()

    async def start(self) -> None:
        """Start the workers now; each generates one token before it counts as ready."""
        await self.pool.start()

    def describe(self) -> dict[str, Any]:
        return self.pool.describe()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
        worker = await self.pool.acquire()
        pieces = worker.generate(request)
        try:
            async for item in pieces:
                yield item
        finally:
            await pieces.aclose()  # sends cancel when the consumer leaves early

    async def aclose(self) -> None:
        await self.pool.aclose()
