"""Actors on the Hub (seed 001): stream_ask callbacks, the async iterator, errors,
timeouts, fan-out, cancellation, and SessionActor with a real model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest

from tokenwire import Hub
from tokenwire.actors import (
    Actor,
    ActorNotFoundError,
    ActorTimeoutError,
    Router,
    SessionActor,
    StreamingNotSupportedError,
    TokenStreamEvent,
)
from tokenwire.models import Finish, GenerationRequest, ModelManager, Usage, default_manager
from tokenwire.stream import Emitter
from tokenwire.workers import WorkerBackend


class Echo(Actor):
    """Answers ``echo`` with its payload; streams the payload's words."""

    async def receive(self, type: str, payload: Any) -> Any:
        if type == "slow":
            await asyncio.sleep(10)
        return payload

    async def stream(self, type: str, payload: Any) -> AsyncIterator[str]:
        for word in str(payload).split():
            await asyncio.sleep(0.001)
            yield word


class Emitting(Actor):
    """Streams through the emit-callback form."""

    def __init__(self) -> None:
        self.stopped = asyncio.Event()

    async def receive(self, type: str, payload: Any) -> Any:
        return None

    async def stream(self, type: str, payload: Any, emit: Emitter) -> None:
        try:
            for i in range(int(payload)):
                await emit(f"t{i}")
                await asyncio.sleep(0.005)
        finally:
            self.stopped.set()


class Silent(Actor):
    async def receive(self, type: str, payload: Any) -> Any:
        return "ok"


@pytest.fixture
async def router() -> AsyncIterator[Router]:
    hub = Hub()
    r = Router(hub)
    r.register("echo", Echo())
    r.register("emit", Emitting())
    r.register("silent", Silent())
    yield r
    await hub.aclose()


async def test_ask(router: Router) -> None:
    assert await router.ask("echo", "echo", {"a": 1}) == {"a": 1}


async def test_stream_ask_calls_back_per_token_then_done(router: Router) -> None:
    seen: list[TokenStreamEvent] = []

    async def on_chunk(chunk: TokenStreamEvent) -> None:
        seen.append(chunk)

    result = await router.stream_ask("echo", "say", "one two three", on_chunk=on_chunk)
    assert [c.type for c in seen] == ["token", "token", "token", "done"]
    assert [c.content for c in seen[:3]] == ["one", "two", "three"]
    assert [c.seq for c in seen] == [1, 2, 3, 4]
    assert all(c.timestamp > 0 for c in seen)
    assert result.ok and result.text == "onetwothree" and result.tokens == 3
    assert result.stream_id.startswith("st_")


async def test_plain_function_callbacks_and_emit_form(router: Router) -> None:
    seen: list[str] = []
    result = await router.stream_ask("emit", "count", 4, on_chunk=lambda c: seen.append(c.type))
    assert seen == ["token"] * 4 + ["done"]
    assert result.text == "t0t1t2t3"


async def test_async_iterator(router: Router) -> None:
    chunks = [c async for c in router.stream("echo", "say", "a b")]
    assert [(c.type, c.content) for c in chunks] == [("token", "a"), ("token", "b"), ("done", None)]


async def test_errors_are_typed(router: Router) -> None:
    with pytest.raises(ActorNotFoundError) as nf:
        await router.ask("nobody", "x")
    assert nf.value.code == "actor_not_found"
    with pytest.raises(StreamingNotSupportedError) as ns:
        await router.stream_ask("silent", "x", None, on_chunk=print)
    assert ns.value.code == "streaming_not_supported"
    with pytest.raises(StreamingNotSupportedError):
        async for _ in router.stream("silent", "x"):
            pass


async def test_timeouts(router: Router) -> None:
    with pytest.raises(ActorTimeoutError):
        await router.ask("echo", "slow", None, timeout=0.05)
    emitting = router.get("emit")
    assert isinstance(emitting, Emitting)
    with pytest.raises(ActorTimeoutError) as info:
        await router.stream_ask("emit", "count", 10_000, on_chunk=lambda c: None, timeout=0.1)
    assert info.value.code == "actor_timeout"
    await asyncio.wait_for(emitting.stopped.wait(), 5)  # the timed-out answer was stopped
    emitting.stopped.clear()
    with pytest.raises(ActorTimeoutError):
        async for _ in router.stream("emit", "count", 10_000, timeout=0.1):
            pass
    await asyncio.wait_for(emitting.stopped.wait(), 5)


async def test_fan_out_to_several_consumers(router: Router) -> None:
    stream = await router.open_stream("emit", "count", 20)
    via_callback: list[str] = []

    async def iterate() -> list[str]:
        return [c.content or c.type async for c in router.follow(stream.id)]

    results = await asyncio.gather(
        iterate(),
        iterate(),
        router.stream_ask(
            "emit",
            "count",
            on_chunk=lambda c: via_callback.append(c.content or c.type),
            stream_id=stream.id,
        ),
    )
    expected = [f"t{i}" for i in range(20)] + ["done"]
    assert results[0] == expected and results[1] == expected and via_callback == expected
    assert results[2].text == "".join(expected[:-1])


async def test_a_follower_leaving_stops_nothing(router: Router) -> None:
    stream = await router.open_stream("emit", "count", 10)
    async with aclosing(router.follow(stream.id)) as events:
        async for _ in events:
            break
    assert (await stream.wait()).kind == "done"


async def test_stopping_iteration_stops_the_answer(router: Router) -> None:
    emitting = router.get("emit")
    assert isinstance(emitting, Emitting)
    async with aclosing(router.stream("emit", "count", 10_000)) as chunks:
        async for chunk in chunks:
            if chunk.type == "token":
                break
    await asyncio.wait_for(emitting.stopped.wait(), 5)
    [stream] = router.hub.streams.values()
    assert (await stream.wait()).kind == "cancelled"


async def test_failing_answer_reaches_the_callback(router: Router) -> None:
    class Broken(Actor):
        async def receive(self, type: str, payload: Any) -> Any:
            return None

        async def stream(self, type: str, payload: Any) -> AsyncIterator[str]:
            yield "partial"
            raise RuntimeError("exploded")

    router.register("broken", Broken())
    seen: list[TokenStreamEvent] = []
    result = await router.stream_ask("broken", "x", None, on_chunk=seen.append)
    assert [c.type for c in seen] == ["token", "error"]
    assert not result.ok and "exploded" in (result.error or "")


# -- SessionActor ---------------------------------------------------------------------


class Recording:
    """A backend that answers 'reply N' and records the messages it was sent."""

    name = "recording"

    def __init__(self) -> None:
        self.seen: list[tuple[dict[str, str], ...]] = []

    async def generate(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
        self.seen.append(tuple(dict(m) for m in request.messages))
        for piece in ("reply", f" {len(self.seen)}"):
            yield piece
        yield Finish("stop", Usage(len(request.messages), 2))

    async def aclose(self) -> None:
        return None


async def test_session_keeps_history_and_forwards_tokens() -> None:
    models = ModelManager()
    backend = Recording()
    models.register("rec", backend)
    router = Router()
    router.register("s1", SessionActor("s1", models, system="Be brief."))
    chunks: list[str] = []
    first = await router.stream_ask(
        "s1", "inference", "Hello", on_chunk=lambda c: chunks.append(c.type)
    )
    assert first.text == "reply 1" and chunks == ["token", "token", "done"]
    assert first.usage == {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}
    second = await router.ask("s1", "inference", {"message": "And?", "max_tokens": 5})
    assert second == "reply 2"
    assert backend.seen[1] == (
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "reply 1"},
        {"role": "user", "content": "And?"},
    )
    assert len(await router.ask("s1", "history")) == 4
    await router.ask("s1", "reset")
    assert await router.ask("s1", "history") == []
    await router.hub.aclose()


async def test_session_bad_payload_is_an_error_chunk() -> None:
    router = Router()
    router.register("s", SessionActor("s", default_manager(env={}), model="scripted"))
    seen: list[TokenStreamEvent] = []
    result = await router.stream_ask("s", "inference", {"nope": 1}, on_chunk=seen.append)
    assert result.code == "invalid_request" and [c.type for c in seen] == ["error"]
    assert await router.ask("s", "history") == []
    await router.hub.aclose()


async def test_session_with_the_embedded_model_and_cancellation() -> None:
    models = default_manager(env={})
    router = Router()
    session = SessionActor("chat", models)  # the default model: smollm2
    router.register("chat", session)
    answer = await router.stream_ask(
        "chat",
        "inference",
        {"message": "Say hi.", "max_tokens": 8, "temperature": 0},
        on_chunk=lambda c: None,
    )
    assert answer.ok and answer.text and 0 < answer.tokens <= 8
    assert [m["role"] for m in await router.ask("chat", "history")] == ["user", "assistant"]
    backend = models.get("smollm2")
    assert isinstance(backend, WorkerBackend)  # the model runs in a worker process
    # The consumer stops iterating: the generation stops and the worker is free again.
    async with aclosing(
        router.stream("chat", "inference", {"message": "Tell a long story.", "max_tokens": 400})
    ) as chunks:
        async for chunk in chunks:
            if chunk.type == "token":
                assert backend.describe()["state"] == "busy"
                break
    for _ in range(200):
        if backend.describe()["state"] == "ready":
            break
        await asyncio.sleep(0.01)
    assert backend.describe()["state"] == "ready"
    assert len(await router.ask("chat", "history")) == 2  # the stopped turn left no trace
    await router.hub.aclose()
    await models.aclose()


async def test_plain_break_without_aclosing_also_stops_the_answer(router: Router) -> None:
    emitting = router.get("emit")
    assert isinstance(emitting, Emitting)
    async for chunk in router.stream("emit", "count", 10_000):
        if chunk.type == "token":
            break  # the generator is finalized by the event loop soon after
    await asyncio.wait_for(emitting.stopped.wait(), 5)
