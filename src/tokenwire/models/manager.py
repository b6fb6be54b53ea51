"""ModelManager: the registry that maps model names to backends."""

from __future__ import annotations

from collections.abc import Callable

from tokenwire.errors import UnknownModel
from tokenwire.models.base import ModelBackend

BackendFactory = Callable[[], ModelBackend]


class ModelManager:
    """Maps model names to backends. Backends are created lazily, once, on first use."""

    def __init__(self, default: str | None = None) -> None:
        self._factories: dict[str, BackendFactory] = {}
        self._backends: dict[str, ModelBackend] = {}
        self.default = default

    def register(self, name: str, backend: ModelBackend | BackendFactory) -> None:
        if isinstance(backend, ModelBackend):
            self._backends[name] = backend
            self._factories[name] = lambda b=backend: b  # type: ignore[misc]
        else:
            self._factories[name] = backend
        if self.default is None:
            self.default = name

    def names(self) -> list[str]:
        return list(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def get(self, name: str | None = None) -> ModelBackend:
        key = name or self.default
        if key is None or key not in self._factories:
            raise UnknownModel(str(key), self.names())
        backend = self._backends.get(key)
        if backend is None:
            backend = self._backends[key] = self._factories[key]()
        return backend

    async def aclose(self) -> None:
        for backend in self._backends.values():
            await backend.aclose()
        self._backends.clear()
