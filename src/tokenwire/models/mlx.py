"""The embedded SmolLM2 GGUF run on MLX: the ``mlx:`` scheme, built-in model ``smollm2-mlx``.

What runs (docs/models.md, "MLX"):

- ``mx.load(path, return_metadata=True)`` reads the GGUF file; the weights stay
  quantized and every matmul is ``mx.quantized_matmul`` on them
  (:mod:`~tokenwire.models.mlx_llama`); the tokenizer and the chat template
  come from the file's metadata (:mod:`~tokenwire.models.mlx_tokenizer`).
- Sampling is :mod:`~tokenwire.models.sampling` (temperature, top-k, top-p,
  min-p, as llama.cpp chains them); stop strings, ``max_tokens`` and the context
  bound behave as on the llama.cpp backend, and so does the usage it reports.
- **The device context.** Generation runs in one thread per backend, inside an
  MLX stream of that thread on the device the options name (``device=cpu|gpu``
  in the URL or the config table, or a ``Device``/``Stream`` given to the
  class; see docs/models.md, the device context): the CPU here, the GPU on Apple
  silicon. MLX streams belong to the thread that made them, so a ``Stream``
  given from another thread names its device, and the generation thread makes
  its own stream there. Nothing else in the process has its MLX default changed.
- Concurrency: one generation at a time per backend (a worker process has one);
  up to ``max_queue`` more wait, beyond that :class:`ModelBusyError`. Cancelling the
  consumer sets a flag the thread checks before every token, and between
  chunks of :data:`PROMPT_CHUNK` prompt tokens: it stops within one token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenwire.models.base import Finish, GenerationRequest, Usage
from tokenwire.models.errors import ContextLengthExceededError, ModelBusyError, ModelError
from tokenwire.models.llamacpp import _Handoff, _StopMatcher, default_model_path
from tokenwire.models.logprobs import PieceLogprobs
from tokenwire.models.sampling import Sampler, SamplerSettings

log = logging.getLogger(__name__)

PROMPT_CHUNK = 32  # prompt tokens evaluated between two looks at the stop flag


@dataclass(frozen=True, slots=True)
class MLXSettings:
    model_path: str
    n_ctx: int = 2048
    top_k: int = 40
    min_p: float = 0.05
    prefix_cache: bool = True


class _PromptCache:
    """The KV caches of the last generation and the tokens they hold: a prompt that
    starts the same way (the chat template's system message, an earlier turn)
    evaluates only what follows. Prompt evaluation is the slow part on a CPU."""

    def __init__(self, caches: list[Any]) -> None:
        self.caches = caches
        self.tokens: list[int] = []

    def reuse(self, prompt: list[int], enabled: bool) -> int:
        """Keep the common prefix (never all of ``prompt``: its last token makes the
        first logits); the number of positions kept."""
        common = 0
        if enabled:
            limit = min(len(prompt) - 1, len(self.tokens))
            while common < limit and prompt[common] == self.tokens[common]:
                common += 1
        for cache in self.caches:
            cache.trim(common)
        del self.tokens[common:]
        return common


class _Loaded:
    """What one load of the file gives: the model, its tokenizer, its chat template."""

    def __init__(self, path: str, n_ctx: int) -> None:
        from tokenwire.models.mlx_llama import load
        from tokenwire.models.mlx_tokenizer import ChatTemplate, GGUFTokenizer

        t0 = time.perf_counter()
        self.model, meta = load(path)
        self.tokenizer = GGUFTokenizer(meta)
        self.template = ChatTemplate.from_metadata(meta, self.tokenizer)
        self.kv = _PromptCache(self.model.new_cache(n_ctx))
        self.load_s = time.perf_counter() - t0


class MLXBackend:
    """A llama GGUF model on MLX (default: the embedded SmolLM2-135M-Instruct)."""

    def __init__(
        self,
        model_path: str | None = None,
        *,
        name: str = "smollm2-mlx",
        device: Any = "cpu",
        n_ctx: int = 2048,
        top_k: int = 40,
        min_p: float = 0.05,
        max_queue: int = 16,
        handoff_bound: int = 256,
        prefix_cache: bool = True,
    ) -> None:
        if max_queue < 0 or handoff_bound < 1 or n_ctx < 16:
            raise ValueError("max_queue must be >= 0, handoff_bound >= 1, n_ctx >= 16")
        self.name = name
        self.device = device
        self.settings = MLXSettings(
            model_path or default_model_path(), n_ctx, top_k, min_p, prefix_cache
        )
        self.max_queue = max_queue
        self.handoff_bound = handoff_bound
        self._lock = threading.Lock()
        self._pending = 0  # generations submitted and not finished (running + waiting)
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loaded: _Loaded | None = None
        self.stream: Any = None
        """The MLX stream generations run in, once the generation thread made it."""
        self._stream_error: ModelError | None = None

    # -- admission --------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return max(0, self._pending - 1)

    @property
    def queue_full(self) -> bool:
        return self._pending > self.max_queue

    def check_admission(self) -> None:
        if self.queue_full:
            raise ModelBusyError(self.name, self.queue_depth)

    def _admit(self) -> None:
        with self._lock:
            if self._pending > self.max_queue:
                raise ModelBusyError(self.name, self._pending - 1)
            self._pending += 1

    def _done(self) -> None:
        with self._lock:
            self._pending -= 1

    # -- the generation thread ----------------------------------------------------

    def _submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None:
                self._jobs = queue.SimpleQueue()
                self._thread = threading.Thread(
                    target=self._serve,
                    args=(self._jobs,),
                    name=f"tokenwire-mlx-{self.name}",
                    daemon=True,
                )
                self._thread.start()
            self._jobs.put(job)

    def _serve(self, jobs: queue.SimpleQueue[Callable[[], None] | None]) -> None:
        from tokenwire.mlx_context import import_mlx

        stream: Any = None
        self._stream_error = None
        try:
            mx = import_mlx()
            stream = self.stream = mx.new_stream(_device(mx, self.device))
        except Exception as exc:  # no MLX, or no such device: every job says so
            self._stream_error = ModelError(f"MLX device {self.device!r}: {exc}")
        while (job := jobs.get()) is not None:
            try:
                if stream is None:
                    job()
                    continue
                with mx.stream(stream):
                    job()
            except Exception:  # a job reports its own errors; this thread must live on
                log.exception("MLX generation thread: a job failed")

    async def _call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the generation thread (inside the stream) and await its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def job() -> None:
            result: Any = None
            error: BaseException | None = None
            try:
                if self._stream_error is not None:
                    raise self._stream_error
                result = fn()
            except BaseException as exc:
                error = exc
            with contextlib.suppress(RuntimeError):  # the caller's loop is closed
                loop.call_soon_threadsafe(_settle, future, result, error)

        self._submit(job)
        return await future

    def _ensure_loaded(self) -> _Loaded:
        if self._loaded is None:
            if not Path(self.settings.model_path).is_file():
                raise ModelError(f"the model file {self.settings.model_path} does not exist")
            self._loaded = _Loaded(self.settings.model_path, self.settings.n_ctx)
        return self._loaded

    async def load(self) -> None:
        """Load the model now rather than on the first request."""
        await self._call(self._ensure_loaded)

    # -- generation -------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
        self._admit()
        loop = asyncio.get_running_loop()
        cancelled = threading.Event()
        handoff = _Handoff(loop, self.handoff_bound, cancelled)

        def job() -> None:
            try:
                if cancelled.is_set():
                    return
                if self._stream_error is not None:
                    raise self._stream_error
                finish = _run(self._ensure_loaded(), self.settings, request, handoff.put, cancelled)
                if finish is not None:
                    handoff.put(finish)
            except BaseException as exc:
                handoff.put(exc if isinstance(exc, ModelError) else _wrap(exc))
            finally:
                self._done()

        try:
            self._submit(job)
        except BaseException:
            self._done()
            raise
        try:
            while True:
                item = await handoff.get()
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, str | Finish)
                yield item
                if isinstance(item, Finish):
                    return
        finally:
            handoff.cancel()

    async def aclose(self) -> None:
        """End the generation thread once its queued jobs are done (the weights stay
        loaded: a later request starts a new thread, with a new stream)."""
        with self._lock:
            if self._thread is not None:
                self._jobs.put(None)
                self._thread = None


def _device(mx: Any, device: Any) -> Any:
    if isinstance(device, str):
        if device not in ("cpu", "gpu"):
            raise ValueError(f"unknown MLX device {device!r}: expected 'cpu' or 'gpu'")
        return mx.cpu if device == "cpu" else mx.gpu
    if isinstance(device, mx.Stream):
        return device.device  # a stream belongs to its thread: use its device
    return device


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _wrap(exc: BaseException) -> ModelError:
    err = ModelError(f"MLX failed: {type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err


def _run(
    loaded: _Loaded,
    settings: MLXSettings,
    request: GenerationRequest,
    emit: Callable[[object], bool],
    cancelled: threading.Event,
) -> Finish | None:
    """Generate in the calling thread (inside its MLX stream); ``None`` if cancelled."""
    import mlx.core as mx
    import numpy as np

    tok, model = loaded.tokenizer, loaded.model
    prompt = tok.encode(loaded.template.render(request.messages))
    n_ctx = min(settings.n_ctx, model.cfg.context_length)
    if len(prompt) >= n_ctx:
        raise ContextLengthExceededError(len(prompt), n_ctx)
    budget = min(request.max_tokens, n_ctx - len(prompt))
    sampler = Sampler(
        SamplerSettings(
            temperature=request.temperature,
            top_k=settings.top_k,
            top_p=request.top_p,
            min_p=settings.min_p,
        ),
        seed=request.seed,
    )
    k = request.top_logprobs
    logprobs = PieceLogprobs(k, lambda t: tok.decode([t])) if k is not None else None
    decoder = tok.stream_decoder()
    stops = _StopMatcher(request.stop)
    kv = loaded.kv
    start = kv.reuse(prompt, settings.prefix_cache)
    # In chunks, so that a stop lands between two of them: on a CPU a long prompt
    # takes seconds, and costs the same per token whatever the chunk size.
    for at in range(start, len(prompt), PROMPT_CHUNK):
        if cancelled.is_set():
            return None
        chunk = prompt[at : at + PROMPT_CHUNK]
        logits = model(mx.array(chunk), kv.caches)
        mx.eval(logits)
        kv.tokens += chunk
    produced, reason, hit = 0, "length", False
    while True:
        if cancelled.is_set():
            return None
        row = np.array(logits)
        token = sampler(row)
        if token in tok.eog_ids:
            reason = "stop"
            break
        produced += 1
        if logprobs is not None:
            logprobs.add(row, token)
        text, hit = stops.feed(decoder.decode(tok.token_bytes(token)))
        if text and not emit(logprobs.piece(text) if logprobs is not None else text):
            return None
        if hit:
            reason = "stop"
            break
        if produced >= budget:
            break
        logits = model(mx.array([token]), kv.caches)
        kv.tokens.append(token)
    if cancelled.is_set():
        return None
    if not hit:  # what was held back: an incomplete character, a partial stop string
        tail, hit = stops.feed(decoder.decode(b"", final=True))
        if hit:
            reason = "stop"
        else:
            tail += stops.flush()
        if tail and not emit(logprobs.piece(tail) if logprobs is not None else tail):
            return None
    return Finish(reason, Usage(len(prompt), produced))


def backend_from_settings(name: str, url: Any, settings: Mapping[str, Any]) -> MLXBackend:
    """The registry's factory for ``mlx:`` URLs (``mlx:///abs/path.gguf?device=cpu``)."""

    def get(key: str, default: Any) -> Any:
        return settings.get(key, url.params.get(key, default))

    return MLXBackend(
        url.target or settings.get("path") or None,
        name=name,
        device=str(get("device", "cpu")),
        n_ctx=int(get("n_ctx", 2048)),
        top_k=int(get("top_k", 40)),
        min_p=float(get("min_p", 0.05)),
        max_queue=int(get("max_queue", 16)),
        prefix_cache=str(get("prefix_cache", "true")).lower() in ("1", "true", "yes", "on"),
    )
