"""Pipelines: named producers that are not text models (a denoising loop that
streams images, a tensor dump), started with ``POST /v1/streams {"pipeline": name,
"params": {…}}``. Arrays a pipeline yields are framed as tensors automatically."""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Mapping
from typing import Any

from tokenwire.errors import InvalidRequest

PipelineFactory = Callable[[Mapping[str, Any]], AsyncIterable[Any]]


class PipelineRegistry:
    def __init__(self) -> None:
        self._factories: dict[str, PipelineFactory] = {}

    def register(self, name: str, factory: PipelineFactory) -> None:
        self._factories[name] = factory

    def names(self) -> list[str]:
        return sorted(self._factories)

    def create(self, name: Any, params: Any) -> AsyncIterable[Any]:
        """Validate and build the producer; the factory raises InvalidRequest on bad params."""
        if not isinstance(name, str) or name not in self._factories:
            raise InvalidRequest(
                f"no pipeline {name!r}; available: {', '.join(self.names()) or 'none'}"
            )
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise InvalidRequest("'params' must be an object")
        return self._factories[name](params)
