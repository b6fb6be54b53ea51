"""ModelManager: the registry that maps model names to backends, and where it is configured.

Sources, later ones overriding earlier ones for the same name:

1. built-ins: ``smollm2`` (``llamacpp:``, the embedded model; alias
   ``SmolLM2-135M-Instruct``) and ``scripted`` (``scripted:``);
2. a TOML config file, table ``[models]`` (see :meth:`ModelManager.from_config`);
3. the environment: ``TOKENWIRE_MODELS="name=URL,name=URL"``;
4. command-line flags (``--models`` with the same syntax, ``--model`` for the default).

The default model is, first found: the ``--model`` flag, ``TOKENWIRE_MODEL``,
``default`` in the config file, ``smollm2``. URLs are described in
:mod:`tokenwire.models.registry`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from tokenwire.errors import InvalidRequestError, UnknownModelError
from tokenwire.models.base import ModelBackend
from tokenwire.models.registry import ModelURL, backend_from_url, load_backend_modules, schemes

BackendFactory = Callable[[], ModelBackend]

DEFAULT_MODEL = "smollm2"
BUILTIN_MODELS: dict[str, str] = {"smollm2": "llamacpp:", "scripted": "scripted:"}
if importlib.util.find_spec("mlx") is not None:  # the extra tokenwire[mlx]
    BUILTIN_MODELS["smollm2-mlx"] = "mlx:"
BUILTIN_ALIASES: dict[str, str] = {"SmolLM2-135M-Instruct": "smollm2"}

ENV_MODEL = "TOKENWIRE_MODEL"
ENV_MODELS = "TOKENWIRE_MODELS"


class ModelManager:
    """Maps model names (and aliases) to backends. Backends are created lazily, once,
    on first use."""

    def __init__(self, default: str | None = None) -> None:
        self._factories: dict[str, BackendFactory] = {}
        self._backends: dict[str, ModelBackend] = {}
        self._urls: dict[str, str] = {}
        self._aliases: dict[str, str] = {}
        self.default = default
        # lazy: models start on first use; starting -> ready | failed: the self-check
        self.readiness = "lazy"
        self.startup_error: Exception | None = None
        self._check: asyncio.Task[None] | None = None

    # -- registration ---------------------------------------------------------

    def register(
        self,
        name: str,
        backend: ModelBackend | BackendFactory,
        *,
        aliases: Iterable[str] = (),
    ) -> None:
        if not name:
            raise ValueError("a model needs a name")
        self._backends.pop(name, None)
        self._urls.pop(name, None)
        if isinstance(backend, ModelBackend):
            self._backends[name] = backend
            self._factories[name] = lambda b=backend: b  # type: ignore[misc]
        else:
            self._factories[name] = backend
        for alias in aliases:
            self._aliases[alias] = name
        if self.default is None:
            self.default = name

    def register_url(
        self,
        name: str,
        url: str,
        settings: Mapping[str, Any] | None = None,
        *,
        aliases: Iterable[str] = (),
    ) -> None:
        """Register ``name`` as the backend ``url`` describes (checked now, built on first use)."""
        kind = ModelURL.parse(url).kind
        if kind not in schemes():
            raise InvalidRequestError(
                f"model {name!r}: unknown backend {kind!r} in {url!r}; "
                f"known: {', '.join(schemes())}"
            )
        frozen = dict(settings or {})
        self.register(name, lambda: backend_from_url(name, url, frozen), aliases=aliases)
        self._urls[name] = url

    # -- lookup -----------------------------------------------------------------

    def names(self) -> list[str]:
        return list(self._factories)

    def resolve(self, name: str | None = None) -> str:
        """The registered name that ``name`` (a name, an alias, or None for the default) means."""
        key = name or self.default
        if key is not None and key not in self._factories:
            key = self._aliases.get(key, key)
        if key is None or key not in self._factories:
            raise UnknownModelError(str(name or self.default), self.names())
        return key

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._factories or name in self._aliases)

    def get(self, name: str | None = None) -> ModelBackend:
        key = self.resolve(name)
        backend = self._backends.get(key)
        if backend is None:
            backend = self._backends[key] = self._factories[key]()
        return backend

    def describe(self) -> list[dict[str, Any]]:
        """One entry per model: ``id``, ``url`` (None for a backend object),
        ``default``, ``aliases``."""
        return [
            {
                "id": name,
                "url": self._urls.get(name),
                "default": name == self.default,
                "aliases": sorted(a for a, n in self._aliases.items() if n == name),
            }
            for name in self._factories
        ]

    def states(self) -> dict[str, dict[str, Any]]:
        """Per model: its workers' state (``describe()`` of a worker backend),
        ``in_process``, or ``not_started`` for a backend not built yet."""
        out: dict[str, dict[str, Any]] = {}
        for name in self._factories:
            backend = self._backends.get(name)
            describe = getattr(backend, "describe", None)
            if describe is not None:
                out[name] = describe()
            else:
                out[name] = {"state": "not_started" if backend is None else "in_process"}
        return out

    # -- start-up self-check ----------------------------------------------------

    def begin_self_check(self, names: Iterable[str] | None = None) -> asyncio.Task[None]:
        """Start the self-check now (``readiness`` becomes ``starting``): each named
        model (default: the default model) starts, and a worker backend's workers
        each generate one token. The task ends ``ready`` or raises (``failed``)."""
        if self._check is None:
            self.readiness = "starting"
            wanted = list(names) if names is not None else [self.default] if self.default else []
            self._check = asyncio.create_task(self._self_check(wanted))
        return self._check

    async def _self_check(self, names: list[str]) -> None:
        try:
            for name in names:
                backend = self.get(name)
                start = getattr(backend, "start", None) or getattr(backend, "load", None)
                if start is not None:
                    await start()
        except Exception as exc:
            self.readiness = "failed"
            self.startup_error = exc
            raise
        self.readiness = "ready"

    async def aclose(self) -> None:
        if self._check is not None and not self._check.done():
            self._check.cancel()
        for backend in self._backends.values():
            await backend.aclose()
        self._backends.clear()

    # -- configuration ----------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        *,
        models: Mapping[str, Any] | str | None = None,
        default: str | None = None,
        config: str | Path | Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        builtins: bool = True,
    ) -> ModelManager:
        """Build a manager from every source (see the module docstring).

        ``config`` is a TOML file path, or its already-parsed ``[models]`` table::

            [models]
            default = "remote"
            remote = "openai+http://127.0.0.1:8080/v1#smollm2"
            [models.big]
            url = "openai+https://api.openai.com/v1#gpt-4o-mini"
            api_key_env = "OPENAI_API_KEY"

        ``models`` (from the command line) is ``"name=URL,…"`` or a mapping
        like the table above. ``env`` defaults to ``os.environ``.
        """
        env = os.environ if env is None else env
        load_backend_modules(env)
        manager = cls()
        if builtins:
            for name, url in BUILTIN_MODELS.items():
                manager.register_url(name, url)
            for alias, name in BUILTIN_ALIASES.items():
                manager._aliases[alias] = name
        table = _config_table(config)
        file_default = table.pop("default", None)
        if file_default is not None and not isinstance(file_default, str):
            raise InvalidRequestError("[models] default must be a model name")
        for source in (table, parse_models_spec(env.get(ENV_MODELS, "")), _as_table(models)):
            for name, entry in source.items():
                url, settings = _entry(name, entry)
                manager.register_url(name, url, settings)
        manager.default = (
            default
            or env.get(ENV_MODEL)
            or file_default
            or (DEFAULT_MODEL if DEFAULT_MODEL in manager else next(iter(manager.names()), None))
        )
        if manager.default is not None:
            manager.resolve(manager.default)  # an unknown default fails now, not per request
        return manager


def default_manager(
    *,
    default: str | None = None,
    config_file: str | Path | None = None,
    models: Mapping[str, Any] | str | None = None,
    env: Mapping[str, str] | None = None,
) -> ModelManager:
    """The built-in models (``smollm2``, the default, and ``scripted``) plus whatever
    the config file, the environment and ``models`` add; see ``from_config``."""
    return ModelManager.from_config(models=models, default=default, config=config_file, env=env)


def parse_models_spec(spec: str) -> dict[str, str]:
    """``"a=openai+http://h:1/v1#m,b=scripted:"`` -> ``{"a": "openai+…", "b": "scripted:"}``."""
    out: dict[str, str] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, url = item.partition("=")
        if not sep or not name.strip() or not url.strip():
            raise InvalidRequestError(f"bad model spec {item!r}: write name=URL")
        out[name.strip()] = url.strip()
    return out


def _as_table(models: Mapping[str, Any] | str | None) -> dict[str, Any]:
    if models is None:
        return {}
    if isinstance(models, str):
        return dict(parse_models_spec(models))
    return dict(models)


def _config_table(config: str | Path | Mapping[str, Any] | None) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    try:
        with open(config, "rb") as f:
            doc = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidRequestError(f"cannot read config file {config}: {exc}") from exc
    table = doc.get("models", {})
    if not isinstance(table, dict):
        raise InvalidRequestError(f"{config}: [models] must be a table")
    return dict(table)


def _entry(name: str, entry: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, Mapping) and isinstance(entry.get("url"), str):
        settings = {k: v for k, v in entry.items() if k != "url"}
        return entry["url"], settings
    raise InvalidRequestError(f"model {name!r}: give a URL string or a table with 'url'")
