"""Pipelines: named producers that are not text models (a denoising loop that
streams images, a tensor dump), started with ``POST /v1/streams {"pipeline": name,
"params": {…}}``. Arrays a pipeline yields are framed as tensors automatically.

A pipeline's stream has an **event budget** (``TOKENWIRE_MAX_STREAM_EVENTS``,
1,000,000 by default): past it the stream ends with ``error {code:
"event_budget_exceeded"}``. Each event costs every subscriber a write and the log
an entry, so one request of tiny events (a tensor in 1-byte chunks) must not run
at tens of thousands of events a second for the whole deadline.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from typing import Any

from tokenwire.errors import InvalidRequestError, excerpt
from tokenwire.events import Event

DEFAULT_MAX_STREAM_EVENTS = 1_000_000

PipelineFactory = Callable[[Mapping[str, Any]], AsyncIterable[Any]]


class PipelineRegistry:
    def __init__(self) -> None:
        self._factories: dict[str, PipelineFactory] = {}

    def register(self, name: str, factory: PipelineFactory) -> None:
        self._factories[name] = factory

    def names(self) -> list[str]:
        return sorted(self._factories)

    def create(self, name: Any, params: Any) -> AsyncIterable[Any]:
        """Validate and build the producer; the factory raises InvalidRequestError on bad params."""
        if not isinstance(name, str) or name not in self._factories:
            raise InvalidRequestError(
                f"no pipeline {excerpt(name)}; available: {', '.join(self.names()) or 'none'}"
            )
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise InvalidRequestError("'params' must be an object")
        return self._factories[name](params)


async def within_budget(events: AsyncIterable[Any], limit: int) -> AsyncIterator[Any]:
    """``events`` up to ``limit`` of them, then a terminal ``error`` instead of more."""
    count = 0
    async for event in events:
        count += 1
        if count > limit:
            yield Event.error(
                "event_budget_exceeded",
                f"the stream reached its budget of {limit} events (TOKENWIRE_MAX_STREAM_EVENTS)",
            )
            return
        yield event
