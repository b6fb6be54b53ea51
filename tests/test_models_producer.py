"""model_producer: events from a backend, errors as error events, cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tokenwire import Hub
from tokenwire.events import Event
from tokenwire.models import (
    Finish,
    GenerationRequest,
    ScriptedBackend,
    UpstreamHTTPError,
    Usage,
    model_producer,
)

REQ = GenerationRequest(model="m", messages=({"role": "user", "content": "hi"},), max_tokens=5)


async def collect(events: AsyncIterator[Event]) -> list[Event]:
    return [ev async for ev in events]


async def test_tokens_then_metrics_then_done() -> None:
    events = await collect(model_producer(ScriptedBackend(), REQ))
    kinds = [e.kind for e in events]
    assert kinds == ["token"] * 5 + ["metrics", "done"]
    metrics, done = events[-2].fields, events[-1].fields
    assert metrics["tokens"] == 5
    assert metrics["ttft_ms"] >= 0
    assert {"tokens_per_s", "itl_p50_ms", "itl_p95_ms"} <= set(metrics)
    assert done == {
        "finish_reason": "length",
        "usage": {"prompt_tokens": 1, "completion_tokens": 5, "total_tokens": 6},
    }


class Failing:
    name = "failing"

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def generate(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
        yield "partial"
        raise self.exc

    async def aclose(self) -> None:
        return None


async def test_typed_backend_error_keeps_its_code() -> None:
    exc = UpstreamHTTPError("http://x/v1/chat/completions", 502, "bad gateway")
    events = await collect(model_producer(Failing(exc), REQ))
    assert [e.kind for e in events] == ["token", "error"]
    assert events[-1].fields["code"] == "upstream_http_502"
    assert "bad gateway" in events[-1].fields["message"]


async def test_unexpected_error_is_model_error(caplog: pytest.LogCaptureFixture) -> None:
    events = await collect(model_producer(Failing(RuntimeError("boom")), REQ))
    assert events[-1].kind == "error"
    assert events[-1].fields == {"code": "model_error", "message": "RuntimeError: boom"}


class Watched:
    """Yields forever; records when its generator is closed."""

    name = "watched"

    def __init__(self) -> None:
        self.closed = asyncio.Event()
        self.yielded = 0

    async def generate(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
        try:
            while True:
                await asyncio.sleep(0.001)
                self.yielded += 1
                yield "x"
        finally:
            self.closed.set()

    async def aclose(self) -> None:
        return None


async def test_aclose_reaches_the_backend() -> None:
    backend = Watched()
    events = model_producer(backend, REQ)
    async for ev in events:
        if ev.kind == "token" and backend.yielded >= 3:
            break
    await events.aclose()  # type: ignore[attr-defined]
    assert backend.closed.is_set()


async def test_hub_cancel_reaches_the_backend() -> None:
    backend = Watched()
    hub = Hub()
    stream = await hub.start(model_producer(backend, REQ), model="watched")
    await asyncio.sleep(0.05)
    await hub.cancel(stream.id)
    assert backend.closed.is_set()
    assert (await stream.wait()).kind == "cancelled"
    await hub.aclose()


class NoFinish:
    name = "nofinish"

    async def generate(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
        yield "a"
        yield ""  # empty pieces are not tokens
        yield "b"

    async def aclose(self) -> None:
        return None


async def test_backend_without_finish_still_ends_with_done() -> None:
    events = await collect(model_producer(NoFinish(), REQ))
    assert [e.kind for e in events] == ["token", "token", "metrics", "done"]
    assert events[-1].fields == {"finish_reason": "stop", "usage": None}


async def test_usage_count_overrides_piece_count() -> None:
    class TwoTokenPieces:
        name = "pairs"

        async def generate(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
            yield "ab"
            yield "cd"
            yield Finish("stop", Usage(3, 4))

        async def aclose(self) -> None:
            return None

    events = await collect(model_producer(TwoTokenPieces(), REQ))
    assert events[-2].fields["tokens"] == 4


async def test_figures_are_exported_for_the_metrics_endpoint() -> None:
    from tokenwire.metrics import Metrics

    metrics = Metrics()
    await collect(model_producer(ScriptedBackend(), REQ, metrics=metrics))
    await collect(model_producer(Failing(RuntimeError("x")), REQ, metrics=metrics))
    text = metrics.render()
    assert "tokenwire_model_generations_total 1" in text
    assert "tokenwire_model_tokens_total 5" in text
    assert "tokenwire_model_errors_total 1" in text
    assert "tokenwire_model_ttft_seconds_count 1" in text
    assert "tokenwire_model_itl_p50_seconds_count 1" in text
