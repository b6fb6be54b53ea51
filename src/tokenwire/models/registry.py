"""Backends by URL scheme: a model is configured as ``name = URL``.

=======================================  ==============================================
URL                                      backend
=======================================  ==============================================
``llamacpp:``                            the embedded SmolLM2-135M-Instruct
``llamacpp:///abs/path/model.gguf``      another GGUF file
``mlx:``                                 the embedded SmolLM2 GGUF run on MLX (``mlx:///path.gguf``)
``openai+http://host:port/v1#model``     an OpenAI-compatible server (``openai+https`` too)
``ollama+http://host:11434#model``       an Ollama server
``scripted:``                            the deterministic scripted backend (tests, demos)
=======================================  ==============================================

The fragment names the model upstream (default: the name the client asked
for). Query parameters are backend settings: ``llamacpp`` takes ``n_ctx``,
``n_threads``, ``instances``, ``max_queue``, ``prefix_cache``; ``mlx`` takes
``device`` (``cpu`` or ``gpu``), ``n_ctx``, ``top_k``, ``min_p``; the HTTP
backends take ``api_key_env`` (the name of the environment variable holding
the key, never the key itself) and ``timeout`` (seconds).

A scheme registered with ``worker=True`` (``llamacpp``, ``mlx``) runs in model worker
processes (:mod:`tokenwire.workers`): :func:`backend_from_url` gives a
:class:`~tokenwire.workers.WorkerBackend` whose pool has ``instances`` worker
processes and a wait queue of ``max_queue``; each worker builds the backend
itself with :func:`local_backend_from_url`. ``worker=false`` (query or
setting) keeps such a model in the server process. Remote backends and
``scripted`` run in the server process.

A new backend kind is one :func:`register_scheme` call; nothing here branches
on the scheme. Modules named in ``TOKENWIRE_BACKEND_MODULES`` (comma-separated)
are imported first, by the server and by every worker, so that they can
register schemes of their own (the tests' crashing backend does).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx

from tokenwire.errors import InvalidRequestError
from tokenwire.models.base import ModelBackend
from tokenwire.models.errors import ModelStartFailedError

ENV_BACKEND_MODULES = "TOKENWIRE_BACKEND_MODULES"


@dataclass(frozen=True, slots=True)
class ModelURL:
    """A parsed model URL. ``target`` is the URL the backend talks to (the part
    after ``kind+``), or the file path for ``llamacpp``."""

    raw: str
    kind: str
    target: str
    model: str | None
    params: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str) -> ModelURL:
        parts = urlsplit(raw.strip())
        if not parts.scheme:
            raise InvalidRequestError(
                f"model URL {raw!r} has no scheme (e.g. llamacpp:, openai+http://…)"
            )
        kind, _, transport = parts.scheme.partition("+")
        if transport:
            target = urlunsplit((transport, parts.netloc, parts.path, "", ""))
        else:
            target = parts.path
        return cls(
            raw=raw,
            kind=kind.lower(),
            target=target,
            model=parts.fragment or None,
            params=dict(parse_qsl(parts.query)),
        )

    def int_param(self, key: str, default: int) -> int:
        value = self.params.get(key)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise InvalidRequestError(f"{self.raw}: {key} must be an integer") from None

    def bool_param(self, key: str, default: bool) -> bool:
        value = self.params.get(key)
        return default if value is None else value.lower() in ("1", "true", "yes", "on")


# name, parsed URL, extra settings (from a config file table) -> backend
SchemeFactory = Callable[[str, ModelURL, Mapping[str, Any]], ModelBackend]

# a failed worker start -> what to do about it, for the start-up self-check
Advice = Callable[[ModelStartFailedError], str]


@dataclass(frozen=True, slots=True)
class Scheme:
    factory: SchemeFactory
    worker: bool = False
    advice: Advice | None = None


_SCHEMES: dict[str, Scheme] = {}


def register_scheme(
    kind: str, factory: SchemeFactory, *, worker: bool = False, advice: Advice | None = None
) -> None:
    """Make ``kind:`` / ``kind+http://…`` URLs build backends with ``factory``; with
    ``worker``, in worker processes (``advice`` explains a worker that fails to start)."""
    _SCHEMES[kind.lower()] = Scheme(factory, worker, advice)


def schemes() -> list[str]:
    return sorted(_SCHEMES)


def _scheme(name: str, url: str) -> tuple[ModelURL, Scheme]:
    parsed = ModelURL.parse(url)
    scheme = _SCHEMES.get(parsed.kind)
    if scheme is None:
        raise InvalidRequestError(
            f"model {name!r}: unknown backend {parsed.kind!r} in {url!r}; "
            f"known: {', '.join(schemes())}"
        )
    return parsed, scheme


def backend_from_url(
    name: str, url: str, settings: Mapping[str, Any] | None = None
) -> ModelBackend:
    """The backend ``url`` describes, registered as model ``name``: in worker
    processes for a worker scheme, else in this process."""
    settings = settings or {}
    parsed, scheme = _scheme(name, url)
    worker = settings.get("worker", parsed.bool_param("worker", True))
    if not (scheme.worker and worker):
        return scheme.factory(name, parsed, settings)
    from tokenwire.workers import WorkerBackend

    def get_int(key: str, default: int) -> int:
        return int(settings[key]) if key in settings else parsed.int_param(key, default)

    return WorkerBackend(
        name,
        url,
        settings,
        instances=get_int("instances", 1),
        max_queue=get_int("max_queue", 16),
        advice=scheme.advice,
    )


def local_backend_from_url(
    name: str, url: str, settings: Mapping[str, Any] | None = None
) -> ModelBackend:
    """The backend ``url`` describes, in this process whatever its scheme (a worker uses this)."""
    parsed, scheme = _scheme(name, url)
    return scheme.factory(name, parsed, settings or {})


def load_backend_modules(env: Mapping[str, str] | None = None) -> None:
    """Import the modules ``TOKENWIRE_BACKEND_MODULES`` names (they register schemes)."""
    spec = (os.environ if env is None else env).get(ENV_BACKEND_MODULES, "")
    for module in filter(None, (m.strip() for m in spec.split(","))):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise InvalidRequestError(
                f"{ENV_BACKEND_MODULES}: cannot import {module}: {exc}"
            ) from exc


def _setting(url: ModelURL, settings: Mapping[str, Any], key: str) -> Any:
    return settings.get(key, url.params.get(key))


def _api_key(url: ModelURL, settings: Mapping[str, Any]) -> str | None:
    env = _setting(url, settings, "api_key_env")
    if env:
        key = os.environ.get(str(env))
        if not key:
            raise InvalidRequestError(f"{url.raw}: environment variable {env} is not set")
        return key
    return None


def _timeout(url: ModelURL, settings: Mapping[str, Any]) -> httpx.Timeout:
    from tokenwire.models._http import DEFAULT_TIMEOUT

    value = _setting(url, settings, "timeout")
    if value is None:
        return DEFAULT_TIMEOUT
    seconds = float(value)
    return httpx.Timeout(connect=min(seconds, 10.0), read=seconds, write=seconds, pool=seconds)


def _llamacpp(name: str, url: ModelURL, settings: Mapping[str, Any]) -> ModelBackend:
    from tokenwire.models.llamacpp import LlamaCppBackend

    def get_int(key: str, default: int) -> int:
        return int(settings[key]) if key in settings else url.int_param(key, default)

    return LlamaCppBackend(
        url.target or settings.get("path") or None,
        name=name,
        n_ctx=get_int("n_ctx", 2048),
        n_threads=get_int("n_threads", 0),
        instances=get_int("instances", 1),
        max_queue=get_int("max_queue", 16),
        prefix_cache=bool(settings.get("prefix_cache", url.bool_param("prefix_cache", False))),
    )


def _openai(name: str, url: ModelURL, settings: Mapping[str, Any]) -> ModelBackend:
    from tokenwire.models.openai import OpenAIBackend

    if not url.target:
        raise InvalidRequestError(f"{url.raw}: write openai+http://host:port/v1#model")
    return OpenAIBackend(
        url.target,
        api_key=_api_key(url, settings),
        model=url.model or settings.get("model"),
        name=name,
        timeout=_timeout(url, settings),
    )


def _ollama(name: str, url: ModelURL, settings: Mapping[str, Any]) -> ModelBackend:
    from tokenwire.models.ollama import OllamaBackend

    if not url.target:
        raise InvalidRequestError(f"{url.raw}: write ollama+http://host:11434#model")
    return OllamaBackend(
        url.target,
        model=url.model or settings.get("model"),
        name=name,
        timeout=_timeout(url, settings),
    )


def _scripted(name: str, url: ModelURL, settings: Mapping[str, Any]) -> ModelBackend:
    from tokenwire.models.scripted import ScriptedBackend

    return ScriptedBackend()


def _mlx(name: str, url: ModelURL, settings: Mapping[str, Any]) -> ModelBackend:
    from tokenwire.models.mlx import backend_from_settings

    return backend_from_settings(name, url, settings)


def _llamacpp_advice(failure: ModelStartFailedError) -> str:
    from tokenwire.models.llamacpp import build_advice

    return build_advice(failure)


register_scheme("llamacpp", _llamacpp, worker=True, advice=_llamacpp_advice)
register_scheme("mlx", _mlx, worker=True)
register_scheme("openai", _openai)
register_scheme("ollama", _ollama)
register_scheme("scripted", _scripted)
