"""What streaming through tokenwire costs, against calling llama-cpp directly, in one run.

Four ways to get the same greedy tokens from the same GGUF file and settings, each
with a ``Llama`` of its own:

- ``llama-cpp chat``: ``Llama.create_chat_completion(stream=True)`` iterated in
  the calling thread — what an application would write without tokenwire;
- ``llama-cpp loop``: the embedded backend's own token loop, run inline in the
  calling thread — no worker, no thread, no handoff, no Hub;
- ``tokenwire``: what ``tokenwire serve`` does: ``Hub.start(model_producer(...))``
  over a :class:`~tokenwire.workers.WorkerBackend`, so each token crosses the
  worker process's thread handoff, its event loop, the pipe, the gateway's
  reader, the broker log and a subscriber cursor;
- ``in-process``: the same without the worker process (``llamacpp:?worker=false``),
  to tell the process hop from the rest.

TTFT is measured from the request to the first token the consumer holds;
tokens/s is completion tokens over the time to the last token. Each run starts
from an empty KV cache; the event loop is uvloop, as under ``tokenwire serve``.

Targets: tokens/s of ``tokenwire`` at least 0.97 of ``llama-cpp loop`` (which
generates exactly the same way; paired per round), and added TTFT p50 at most
2 ms. The added TTFT is measured directly rather than as a difference of two
~300 ms wall-clock TTFTs, whose prompt-evaluation jitter is as large as the
target: the worker imports ``bench/worker_probe.py``, which records when its
llama.cpp thread starts and when it hands over each piece (one clock for every
process on Linux), so the bench knows how long a request takes to reach that
thread and the first piece to reach the subscriber — tokenwire's own share,
the process hop included. The paired wall-clock differences are printed too.
The last line is the hop alone: a worker running the ``scripted`` backend.

With MLX installed, a ``mlx (worker)`` row runs the same request on the MLX
backend (``mlx:``, the same GGUF file, in its own worker, from an empty KV
cache like the others: ``prefix_cache=false``) after the paired rounds, for
``--mlx-runs`` rounds, and a line compares it with ``tokenwire`` (llama.cpp).

    python -m bench.bench_models --runs 7 --max-tokens 128    (tokenwire bench models)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenwire import Hub
from tokenwire.models import GenerationRequest, model_producer
from tokenwire.models.base import ModelBackend
from tokenwire.models.llamacpp import LlamaCppBackend, _chat_formatter, _run, build_stamp
from tokenwire.workers import WorkerBackend


@dataclass
class Run:
    ttft_ms: float
    tokens: int
    total_s: float
    start: float = 0.0
    received: list[float] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.total_s if self.total_s else 0.0


def direct_chat(llama: Any, req: GenerationRequest) -> Run:
    llama.reset()
    start = time.perf_counter()
    first = last = start
    tokens = 0
    for chunk in llama.create_chat_completion(
        messages=[dict(m) for m in req.messages],
        max_tokens=req.max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        seed=req.seed,
        stream=True,
    ):
        if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            last = time.perf_counter()
            if tokens == 0:
                first = last
            tokens += 1
    return Run((first - start) * 1000, tokens, last - start)


def direct_loop(llama: Any, formatter: Any, req: GenerationRequest) -> Run:
    start = time.perf_counter()
    marks: list[float] = []

    def emit(_piece: object) -> bool:
        marks.append(time.perf_counter())
        return True

    finish = _run(llama, formatter, req, emit, threading.Event())
    assert finish is not None
    return Run((marks[0] - start) * 1000, finish.usage.completion_tokens, marks[-1] - start)


async def through_hub(hub: Hub, backend: ModelBackend, req: GenerationRequest) -> Run:
    received: list[float] = []
    start = time.perf_counter()
    stream = await hub.start(model_producer(backend, req), model=req.model)
    tokens = 0
    async for ev in hub.subscribe(stream.id):
        if ev.kind == "token":
            received.append(time.perf_counter())
        elif ev.kind == "done":
            tokens = ev.fields["usage"]["completion_tokens"]
        elif ev.kind == "error":
            raise RuntimeError(f"{ev.fields['code']}: {ev.fields['message']}")
    return Run((received[0] - start) * 1000, tokens, received[-1] - start, start, received)


class Probe:
    """Reads what bench/worker_probe.py wrote in the worker for each tokenwire run."""

    def __init__(self) -> None:
        fd, name = tempfile.mkstemp(prefix="tokenwire-probe-")
        os.close(fd)
        self.path = Path(name)
        self._read = 0
        self.startup_ms: list[float] = []
        self.first_ms: list[float] = []
        self.delivery_ms: list[float] = []

    def env(self) -> dict[str, str]:
        return {
            "TOKENWIRE_BACKEND_MODULES": "bench.worker_probe",
            "TOKENWIRE_BENCH_PROBE": str(self.path),
        }

    def skip(self) -> None:
        """Forget what was written so far (the self-check, the warm-up)."""
        self._read = len(self.path.read_text().splitlines())

    def take(self, run: Run) -> None:
        lines = self.path.read_text().splitlines()[self._read :]
        self._read += len(lines)
        starts = [float(t) for kind, t in (ln.split() for ln in lines) if kind == "start"]
        pieces = [float(t) for kind, t in (ln.split() for ln in lines) if kind == "piece"]
        delivery = [(r - h) * 1000 for r, h in zip(run.received, pieces, strict=True)]
        self.startup_ms.append((starts[-1] - run.start) * 1000)
        self.first_ms.append(delivery[0])
        self.delivery_ms += delivery


def summarize(name: str, runs: list[Run]) -> dict[str, Any]:
    return {
        "name": name,
        "ttft_p50": statistics.median(r.ttft_ms for r in runs),
        "tps_p50": statistics.median(r.tokens_per_s for r in runs),
        "ttft_best": min(r.ttft_ms for r in runs),
        "tps_best": max(r.tokens_per_s for r in runs),
        "tokens": statistics.median(r.tokens for r in runs),
    }


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


async def process_hop(runs: int) -> tuple[float, float]:
    """Request to first token, and per-token time, through a worker with no model in it."""
    backend = WorkerBackend("hop", "scripted:")
    await backend.start()
    hub = Hub()
    req = GenerationRequest(
        model="hop", messages=({"role": "user", "content": "hi"},), max_tokens=64
    )
    try:
        results = [await through_hub(hub, backend, req) for _ in range(runs * 5)]
    finally:
        await hub.aclose()
        await backend.aclose()
    ttft = statistics.median(r.ttft_ms for r in results)
    per_token = statistics.median(r.total_s / max(1, r.tokens - 1) * 1000 for r in results)
    return ttft, per_token


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: default)")
    parser.add_argument("--prompt", default="Write a long story about a lighthouse keeper.")
    parser.add_argument("--mlx-runs", type=int, default=3, help="MLX rounds (0: no MLX row)")
    args = parser.parse_args()

    req = GenerationRequest(
        model="smollm2",
        messages=({"role": "user", "content": args.prompt},),
        max_tokens=args.max_tokens,
        temperature=0.0,
        seed=args.seed,
    )
    settings = {"n_threads": args.threads}
    # One Llama per mode, each used once per round: a Llama used twice per round would
    # find its buffers warmer in the CPU caches than the others do theirs.
    in_process = LlamaCppBackend(n_threads=args.threads)
    chat_llama = in_process.settings.load()
    llama = in_process.settings.load()
    formatter = _chat_formatter(llama)
    await in_process.load()
    probe = Probe()
    os.environ.update(probe.env())  # the worker inherits it
    worker = WorkerBackend("smollm2", "llamacpp:", settings)
    await worker.start()
    del os.environ["TOKENWIRE_BACKEND_MODULES"]
    mlx_worker = None
    if args.mlx_runs > 0 and importlib.util.find_spec("mlx") is not None:
        mlx_worker = WorkerBackend("smollm2-mlx", "mlx:?prefix_cache=false")
        await mlx_worker.start()
    hub = Hub()
    load_before = f"{os.getloadavg()[0]:.2f}"

    modes: dict[str, Callable[[], Run | Awaitable[Run]]] = {
        "llama-cpp chat": lambda: direct_chat(chat_llama, req),
        "llama-cpp loop": lambda: direct_loop(llama, formatter, req),
        "tokenwire": lambda: through_hub(hub, worker, req),
        "in-process": lambda: through_hub(hub, in_process, req),
    }
    results: dict[str, list[Run]] = {name: [] for name in modes}

    async def once(fn: Callable[[], Run | Awaitable[Run]]) -> Run:
        out = fn()
        return await out if asyncio.iscoroutine(out) else out  # type: ignore[return-value]

    try:
        for fn in modes.values():  # warm-up, not counted
            await once(fn)
        probe.skip()
        for i in range(args.runs):
            order = list(modes.items())
            order = order[i % len(order) :] + order[: i % len(order)]  # no mode always first
            for name, fn in order:
                results[name].append(await once(fn))
                if name == "tokenwire":
                    probe.take(results[name][-1])
        hop_ttft, hop_token = await process_hop(args.runs)
        if mlx_worker is not None:
            await through_hub(hub, mlx_worker, req)  # warm-up
            mlx_runs = [await through_hub(hub, mlx_worker, req) for _ in range(args.mlx_runs)]
            results["mlx (worker)"] = mlx_runs
    finally:
        await hub.aclose()
        await worker.aclose()
        if mlx_worker is not None:
            await mlx_worker.aclose()
        probe.path.unlink()
        for direct in (llama, chat_llama):
            direct.close()

    stamp, _ = build_stamp()
    print(
        f"SmolLM2-135M-Instruct Q4_1, greedy, seed {args.seed}, max_tokens {args.max_tokens}, "
        f"{args.runs} rounds, {llama.n_threads} llama.cpp threads, {os.cpu_count()} CPUs "
        f"({cpu_model()}), load average {load_before} -> {os.getloadavg()[0]:.2f}\n"
        f"llama-cpp-python build: {stamp or 'no TOKENWIRE_BUILD stamp'}\n"
    )
    header = ("mode", "TTFT p50", "best", "tok/s p50", "best", "tokens")
    print("{:<15} {:>9} {:>7} {:>10} {:>7} {:>7}".format(*header))
    for row in (summarize(name, runs) for name, runs in results.items()):
        print(
            f"{row['name']:<15} {row['ttft_p50']:>9.1f} {row['ttft_best']:>7.1f} "
            f"{row['tps_p50']:>10.1f} {row['tps_best']:>7.1f} {row['tokens']:>7.0f}"
        )
    # Paired per round (the modes of one round ran back to back): drifts in machine
    # load cancel out of the ratio and the difference.
    print()
    for name, base_name in (
        ("tokenwire", "llama-cpp loop"),
        ("tokenwire", "llama-cpp chat"),
        ("tokenwire", "in-process"),
    ):
        ours, base = results[name], results[base_name]
        ratio = statistics.median(
            t.tokens_per_s / b.tokens_per_s for t, b in zip(ours, base, strict=True)
        )
        added = statistics.median(t.ttft_ms - b.ttft_ms for t, b in zip(ours, base, strict=True))
        print(
            f"{name} vs {base_name}: tokens/s ratio {ratio:.3f}, "
            f"TTFT difference p50 {added:+.2f} ms (paired medians)"
        )
    loop_ttft = [r.ttft_ms for r in results["llama-cpp loop"]]
    jitter = statistics.median(abs(t - statistics.median(loop_ttft)) for t in loop_ttft)
    delivery = sorted(probe.delivery_ms)
    startup = statistics.median(probe.startup_ms)
    first = statistics.median(probe.first_ms)
    own = startup + first
    ratio = statistics.median(
        t.tokens_per_s / b.tokens_per_s
        for t, b in zip(results["tokenwire"], results["llama-cpp loop"], strict=True)
    )
    print(
        f"added TTFT, tokenwire's own share (load-independent, p50): request to the worker's "
        f"llama.cpp thread {startup:.3f} ms + first piece to the subscriber {first:.3f} ms "
        f"= {own:.3f} ms; the wall-clock differences above also hold prompt-evaluation "
        f"jitter (llama-cpp loop alone: +/- {jitter:.2f} ms between runs)"
    )
    print(
        f"per token, worker thread hand-over to subscriber: p50 "
        f"{delivery[len(delivery) // 2]:.3f} ms, "
        f"p95 {delivery[min(len(delivery) - 1, int(len(delivery) * 0.95))]:.3f} ms, "
        f"max {delivery[-1]:.3f} ms"
    )
    print(
        f"targets: tokens/s ratio vs llama-cpp loop {ratio:.3f} >= 0.97 "
        f"{'met' if ratio >= 0.97 else 'MISSED'}; added TTFT p50 {own:.3f} ms <= 2 ms "
        f"{'met' if own <= 2.0 else 'MISSED'}"
    )
    print(
        f"process hop alone (worker running the scripted backend, no model): request to "
        f"first token p50 {hop_ttft:.3f} ms, then {hop_token:.3f} ms per token"
    )
    if "mlx (worker)" in results:
        mlx_row = summarize("mlx", results["mlx (worker)"])
        llama_row = summarize("tokenwire", results["tokenwire"])
        print(
            f"mlx vs tokenwire (llama.cpp), both in a worker, same GGUF: tokens/s "
            f"{mlx_row['tps_p50']:.1f} vs {llama_row['tps_p50']:.1f} "
            f"(x{mlx_row['tps_p50'] / llama_row['tps_p50']:.3f}), TTFT p50 "
            f"{mlx_row['ttft_p50']:.0f} vs {llama_row['ttft_p50']:.0f} ms "
            f"(MLX {_mlx_version()}, CPU)"
        )


def _mlx_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlx")
    except PackageNotFoundError:
        return "?"


def _run_main() -> None:
    try:
        import uvloop  # what tokenwire serve runs on (uvicorn picks it when installed)
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())


if __name__ == "__main__":
    _run_main()
