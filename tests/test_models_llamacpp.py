"""The embedded model (SmolLM2-135M-Instruct via llama-cpp-python), through the Hub."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tokenwire import Hub, HubConfig
from tokenwire.events import Event
from tokenwire.models import Finish, GenerationRequest, ModelBusyError, model_producer
from tokenwire.models.llamacpp import LlamaCppBackend, _StopMatcher


def request(prompt: str, max_tokens: int = 16, **kw: object) -> GenerationRequest:
    return GenerationRequest(
        model="smollm2",
        messages=({"role": "user", "content": prompt},),
        max_tokens=max_tokens,
        temperature=float(kw.pop("temperature", 0.0)),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def backend() -> LlamaCppBackend:
    return LlamaCppBackend()  # instances=1: concurrent requests queue


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    h = Hub()
    yield h
    await h.aclose()


async def run_stream(hub: Hub, backend: LlamaCppBackend, req: GenerationRequest) -> list[Event]:
    stream = await hub.start(model_producer(backend, req), model=req.model)
    return [ev async for ev in hub.subscribe(stream.id)]


def text_of(events: list[Event]) -> str:
    return "".join(e.fields["text"] for e in events if e.kind == "token")


async def solo(backend: LlamaCppBackend, req: GenerationRequest) -> str:
    out = []
    async for item in backend.generate(req):
        if isinstance(item, str):
            out.append(item)
    return "".join(out)


async def test_tokens_arrive_as_separate_events_then_metrics_then_done(
    hub: Hub, backend: LlamaCppBackend
) -> None:
    events = await run_stream(hub, backend, request("Say hello.", max_tokens=12))
    kinds = [e.kind for e in events]
    assert kinds.count("token") >= 2
    assert kinds[-2:] == ["metrics", "done"]
    assert set(kinds[:-2]) == {"token"}
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    metrics, done = events[-2].fields, events[-1].fields
    assert metrics["ttft_ms"] > 0
    assert metrics["tokens"] == done["usage"]["completion_tokens"]
    assert metrics["tokens_per_s"] > 0
    usage = done["usage"]
    assert usage["prompt_tokens"] > 10  # the chat template's system prompt counts
    assert 0 < usage["completion_tokens"] <= 12
    assert done["finish_reason"] in ("stop", "length")
    assert text_of(events).strip()


async def test_max_tokens_and_determinism_at_temperature_0(backend: LlamaCppBackend) -> None:
    req = request("Write a long story about a lighthouse keeper.", max_tokens=8)
    finishes = []
    outputs = []
    for _ in range(2):
        out = []
        async for item in backend.generate(req):
            if isinstance(item, Finish):
                finishes.append(item)
            else:
                out.append(item)
        outputs.append("".join(out))
    assert outputs[0] == outputs[1]
    assert [f.finish_reason for f in finishes] == ["length", "length"]
    assert finishes[0].usage.completion_tokens == 8


async def test_seed_makes_sampling_reproducible(backend: LlamaCppBackend) -> None:
    req = request("Name a colour.", max_tokens=10, temperature=1.0, seed=1234)
    assert await solo(backend, req) == await solo(backend, req)


async def test_stop_strings_cut_the_text(backend: LlamaCppBackend) -> None:
    full = await solo(backend, request("Write a long story about a lighthouse keeper.", 24))
    words = full.split(" ")
    assert len(words) > 4
    stop = " " + words[3]
    cut = full[: full.index(stop)]
    req = request("Write a long story about a lighthouse keeper.", 24, stop=(stop,))
    items = [item async for item in backend.generate(req)]
    finish = items[-1]
    assert isinstance(finish, Finish) and finish.finish_reason == "stop"
    assert "".join(i for i in items if isinstance(i, str)) == cut


def test_stop_matcher_holds_back_partial_matches() -> None:
    m = _StopMatcher(["END"])
    assert m.feed("abc E") == ("abc ", False)
    assert m.feed("N") == ("", False)
    assert m.feed("x") == ("ENx", False)
    assert m.feed("yEND and more") == ("y", True)
    m2 = _StopMatcher(["\n\n", "##"])
    assert m2.feed("a\n") == ("a", False)
    assert m2.feed("#") == ("\n", False)
    assert m2.feed("#") == ("", True)
    assert _StopMatcher([]).feed("abc") == ("abc", False)


async def test_cancel_mid_way_stops_within_one_token_and_ends_the_thread(
    hub: Hub, backend: LlamaCppBackend
) -> None:
    req = request("Write a long story about a dragon.", max_tokens=400)
    stream = await hub.start(model_producer(backend, req), model="smollm2")
    tokens_seen = 0
    async for ev in hub.subscribe(stream.id):
        if ev.kind == "token":
            tokens_seen += 1
            if tokens_seen == 5:
                break
    threads = backend.worker_threads()
    assert len(threads) == 1
    at_stop = stream.last_seq
    await hub.cancel(stream.id)
    terminal = await stream.wait()
    assert terminal.kind == "cancelled"
    # At most one token follows the stop (here: none, the loop side drops it).
    assert terminal.seq - at_stop - 1 <= 1
    # The generation thread ends promptly, long before 400 tokens could be made.
    threads[0].join(timeout=2.0)
    assert not threads[0].is_alive()
    assert backend.busy == 0
    # The model is free for the next request.
    events = await run_stream(hub, backend, request("Hi", max_tokens=4))
    assert events[-1].kind == "done"


async def test_consumer_leaving_past_grace_cancels_and_ends_the_thread(
    backend: LlamaCppBackend,
) -> None:
    hub = Hub(config=HubConfig(grace_s=0.2))
    try:
        stream = await hub.start(
            model_producer(backend, request("Write a long story.", max_tokens=400)), model="m"
        )
        async for ev in hub.subscribe(stream.id):
            if ev.kind == "token":
                break  # the only subscriber leaves
        threads = backend.worker_threads()
        terminal = await asyncio.wait_for(stream.wait(), 10)
        assert terminal.kind == "cancelled"
        assert terminal.fields["reason"] == "no_subscribers"
        for t in threads:
            t.join(timeout=2.0)
            assert not t.is_alive()
    finally:
        await hub.aclose()


async def test_aclose_of_generate_ends_the_thread(backend: LlamaCppBackend) -> None:
    gen = backend.generate(request("Count to one hundred.", max_tokens=400))
    async for _ in gen:
        break
    [thread] = backend.worker_threads()
    await gen.aclose()  # type: ignore[attr-defined]
    thread.join(timeout=2.0)
    assert not thread.is_alive()
    assert backend.busy == 0


PROMPTS = [
    request("What is the capital of France?", max_tokens=12),
    request("Write a haiku about snow.", max_tokens=12),
    request("List three fruits.", max_tokens=12, seed=7),
]


async def test_concurrent_generations_keep_outputs_apart(
    hub: Hub, backend: LlamaCppBackend
) -> None:
    alone = [await solo(backend, r) for r in PROMPTS]
    assert len(set(alone)) == len(alone)
    together = await asyncio.gather(*(run_stream(hub, backend, r) for r in PROMPTS))
    assert [text_of(evs) for evs in together] == alone


async def test_parallel_instances_keep_outputs_apart(hub: Hub) -> None:
    pair = LlamaCppBackend(instances=2, n_threads=1)
    alone = [await solo(pair, r) for r in PROMPTS]
    together = await asyncio.gather(*(run_stream(hub, pair, r) for r in PROMPTS))
    assert [text_of(evs) for evs in together] == alone


async def test_queue_is_bounded_and_waiting_requests_are_cancellable() -> None:
    tight = LlamaCppBackend(max_queue=1)
    long = request("Write a long story about a cat.", max_tokens=400)
    first = tight.generate(long)
    assert isinstance(await anext(first), str)  # holds the only instance
    waiting = asyncio.ensure_future(anext(tight.generate(long)))
    await asyncio.sleep(0.05)
    assert tight.queue_depth == 1
    with pytest.raises(ModelBusyError) as info:  # the queue (bound 1) is full
        await anext(tight.generate(long))
    assert info.value.code == "model_busy"
    waiting.cancel()  # a queued request leaves the queue at once
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert tight.queue_depth == 0
    await first.aclose()  # type: ignore[attr-defined]
    nxt = tight.generate(request("Hi", max_tokens=2))
    assert [type(x) for x in [i async for i in nxt]][-1] is Finish


async def test_busy_model_becomes_an_error_event(hub: Hub) -> None:
    none_waiting = LlamaCppBackend(max_queue=0)
    holder = none_waiting.generate(request("Write a long story.", max_tokens=400))
    await anext(holder)
    events = await run_stream(hub, none_waiting, request("Hi", max_tokens=2))
    assert events[-1].kind == "error"
    assert events[-1].fields["code"] == "model_busy"
    await holder.aclose()  # type: ignore[attr-defined]


async def test_prompt_longer_than_the_context_is_an_error_event(hub: Hub) -> None:
    small = LlamaCppBackend(n_ctx=64)
    events = await run_stream(hub, small, request("word " * 200, max_tokens=4))
    assert events[-1].kind == "error"
    assert events[-1].fields["code"] == "context_length_exceeded"


async def test_the_event_loop_keeps_running_during_generation(backend: LlamaCppBackend) -> None:
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            await asyncio.sleep(0.002)
            ticks += 1

    task = asyncio.create_task(ticker())
    start = time.perf_counter()
    text = await solo(backend, request("Write a long story.", max_tokens=24))
    elapsed = time.perf_counter() - start
    done = True
    await task
    assert text
    # A loop blocked by generation would tick about once; a free one ticks all along.
    assert ticks > elapsed / 0.002 / 10
