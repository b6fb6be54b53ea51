"""What streaming through tokenwire costs, against calling llama-cpp directly, in one run.

Three ways to get the same greedy tokens from the same ``Llama`` instance:

- ``llama-cpp chat``: ``Llama.create_chat_completion(stream=True)`` iterated in
  the calling thread — what an application would write without tokenwire;
- ``llama-cpp loop``: the embedded backend's own token loop, run inline in the
  calling thread — no worker thread, no handoff, no Hub;
- ``tokenwire``: ``Hub.start(model_producer(LlamaCppBackend))`` and a
  subscriber reading the stream — the worker thread, the bounded handoff, the
  broker log and the subscriber cursor all included.

TTFT is measured from the request to the first token the consumer holds;
tokens/s is completion tokens over the time to the last token. Each run starts
from an empty KV cache. Targets: tokens/s ratio >= 0.97, added TTFT p50 <= 5 ms
(``tokenwire`` against ``llama-cpp loop``, which generates exactly the same way).

    python bench/bench_models.py --runs 7 --max-tokens 128
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tokenwire import Hub
from tokenwire.models import GenerationRequest, llamacpp, model_producer
from tokenwire.models.llamacpp import LlamaCppBackend, _run

# Instrumentation for the load-independent figure: when the worker thread hands
# each piece over, and when the subscriber holds it.
_handed_over: list[float] = []
_put = llamacpp._Handoff.put


def _timed_put(self: llamacpp._Handoff, item: object) -> bool:
    if isinstance(item, str):
        _handed_over.append(time.perf_counter())
    return _put(self, item)


llamacpp._Handoff.put = _timed_put  # type: ignore[method-assign]
_worker_started: list[float] = []


def _timed_run(*args: Any, **kwargs: Any) -> Any:
    _worker_started.append(time.perf_counter())
    return _run(*args, **kwargs)


llamacpp._run = _timed_run


@dataclass
class Run:
    ttft_ms: float
    tokens: int
    total_s: float
    delivery_ms: list[float] = field(default_factory=list)
    startup_ms: float = 0.0

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


async def through_tokenwire(hub: Hub, backend: LlamaCppBackend, req: GenerationRequest) -> Run:
    _handed_over.clear()
    _worker_started.clear()
    received: list[float] = []
    start = time.perf_counter()
    stream = await hub.start(model_producer(backend, req), model=req.model)
    tokens = 0
    async for ev in hub.subscribe(stream.id):
        if ev.kind == "token":
            received.append(time.perf_counter())
        elif ev.kind == "done":
            tokens = ev.fields["usage"]["completion_tokens"]
    delivery = [(r - h) * 1000 for r, h in zip(received, _handed_over, strict=True)]
    startup = (_worker_started[0] - start) * 1000
    return Run((received[0] - start) * 1000, tokens, received[-1] - start, delivery, startup)


def summarize(name: str, runs: list[Run]) -> dict[str, Any]:
    return {
        "name": name,
        "ttft_p50": statistics.median(r.ttft_ms for r in runs),
        "tps_p50": statistics.median(r.tokens_per_s for r in runs),
        "ttft_best": min(r.ttft_ms for r in runs),
        "tps_best": max(r.tokens_per_s for r in runs),
        "tokens": statistics.median(r.tokens for r in runs),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: default)")
    parser.add_argument("--prompt", default="Write a long story about a lighthouse keeper.")
    args = parser.parse_args()

    req = GenerationRequest(
        model="smollm2",
        messages=({"role": "user", "content": args.prompt},),
        max_tokens=args.max_tokens,
        temperature=0.0,
        seed=args.seed,
    )
    backend = LlamaCppBackend(n_threads=args.threads)
    await backend.load()
    [instance] = backend._pool.idle_instances()  # the same Llama for every mode
    llama, formatter = instance.llama, instance.formatter
    hub = Hub()
    load_before = f"{os.getloadavg()[0]:.2f}"

    modes: dict[str, Callable[[], Any]] = {
        "llama-cpp chat": lambda: direct_chat(llama, req),
        "llama-cpp loop": lambda: direct_loop(llama, formatter, req),
        "tokenwire": lambda: through_tokenwire(hub, backend, req),
    }
    results: dict[str, list[Run]] = {name: [] for name in modes}
    for fn in modes.values():  # warm-up, not counted
        out = fn()
        if asyncio.iscoroutine(out):
            await out
    for i in range(args.runs):
        order = list(modes.items())
        order = order[i % len(order) :] + order[: i % len(order)]  # rotate: no mode always first
        for name, fn in order:
            out = fn()
            results[name].append(await out if asyncio.iscoroutine(out) else out)
    await hub.aclose()

    rows = [summarize(name, runs) for name, runs in results.items()]
    print(
        f"SmolLM2-135M-Instruct Q4_1, greedy, seed {args.seed}, max_tokens {args.max_tokens}, "
        f"{args.runs} rounds, {llama.n_threads} llama.cpp threads, "
        f"load average {load_before} -> {os.getloadavg()[0]:.2f}\n"
    )
    header = ("mode", "TTFT p50", "best", "tok/s p50", "best", "tokens")
    print("{:<15} {:>9} {:>7} {:>10} {:>7} {:>7}".format(*header))
    for row in rows:
        print(
            f"{row['name']:<15} {row['ttft_p50']:>9.1f} {row['ttft_best']:>7.1f} "
            f"{row['tps_p50']:>10.1f} {row['tps_best']:>7.1f} {row['tokens']:>7.0f}"
        )
    # Paired per round (modes of one round ran back to back): drifts in machine
    # load cancel out of the ratio and the difference.
    tw = results["tokenwire"]
    print()
    for base_name in ("llama-cpp loop", "llama-cpp chat"):
        base = results[base_name]
        ratio = statistics.median(
            t.tokens_per_s / b.tokens_per_s for t, b in zip(tw, base, strict=True)
        )
        added = statistics.median(t.ttft_ms - b.ttft_ms for t, b in zip(tw, base, strict=True))
        verdict = (
            f"  targets: ratio >= 0.97 {'met' if ratio >= 0.97 else 'MISSED'}, "
            f"+TTFT <= 5 ms {'met' if added <= 5.0 else 'MISSED'}"
            if base_name == "llama-cpp loop"
            else ""
        )
        print(
            f"tokenwire vs {base_name}: tokens/s ratio {ratio:.3f}, "
            f"added TTFT p50 {added:+.2f} ms (paired medians){verdict}"
        )
    delivery = sorted(ms for run in tw for ms in run.delivery_ms)
    p50 = delivery[len(delivery) // 2]
    p95 = delivery[min(len(delivery) - 1, int(len(delivery) * 0.95))]
    startup = statistics.median(run.startup_ms for run in tw)
    first = statistics.median(run.delivery_ms[0] for run in tw)
    print(
        f"tokenwire delivery, worker thread hand-over to subscriber, per token: "
        f"p50 {p50:.3f} ms, p95 {p95:.3f} ms, max {delivery[-1]:.3f} ms"
    )
    print(
        f"tokenwire's own share of TTFT (load-independent): request to worker thread "
        f"{startup:.3f} ms + first hand-over {first:.3f} ms = {startup + first:.3f} ms (p50)"
    )


if __name__ == "__main__":
    asyncio.run(main())
