"""The official ``openai`` client receives token logprobs from both real backends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from tests.conftest import ServerFactory, ServerProcess

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "Name a fruit."}]


@pytest.fixture(scope="module")
def server(start_server: ServerFactory) -> Iterator[ServerProcess]:
    srv = start_server(TOKENWIRE_MODEL="smollm2")
    yield srv
    srv.stop()


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as c:
        yield c


@pytest.mark.parametrize("model", ["smollm2", "smollm2-mlx"])
async def test_a_streamed_completion_carries_logprobs(client: AsyncOpenAI, model: str) -> None:
    stream = await client.chat.completions.create(
        model=model,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=5,
        temperature=0,
        logprobs=True,
        top_logprobs=4,
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) == 5
    for chunk in content:
        choice = chunk.choices[0]
        assert choice.logprobs is not None and choice.logprobs.content is not None
        [entry] = choice.logprobs.content
        assert entry.token == choice.delta.content
        assert entry.bytes == list(entry.token.encode("utf-8"))
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == 4
        values = [t.logprob for t in entry.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert entry.top_logprobs[0].token == entry.token  # greedy
        assert entry.top_logprobs[0].bytes == entry.bytes
    text = "".join(c.choices[0].delta.content or "" for c in content)
    assert text == "The fruit I mentioned is"
    # the role chunk and the finish chunk carry none
    assert chunks[0].choices[0].logprobs is None
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_the_whole_answer_gathers_logprobs(client: AsyncOpenAI) -> None:
    answer = await client.chat.completions.create(
        model="smollm2",
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=5,
        temperature=0,
        logprobs=True,
    )
    choice = answer.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    assert "".join(e.token for e in choice.logprobs.content) == choice.message.content
    assert all(e.top_logprobs == [] for e in choice.logprobs.content)  # top_logprobs unset
    plain = await client.chat.completions.create(
        model="smollm2",
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=2,
        temperature=0,
    )
    assert plain.choices[0].logprobs is None


async def test_top_logprobs_needs_logprobs_and_a_range(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        for extra, param in (
            ({"top_logprobs": 3}, "top_logprobs"),
            ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
            ({"logprobs": "yes"}, "logprobs"),
        ):
            body = {"model": "smollm2", "messages": QUESTION, **extra}
            resp = await http.post("/v1/chat/completions", json=body)
            assert resp.status_code == 400, extra
            assert resp.json()["error"]["param"] == param


async def test_the_openai_client_raises_on_a_bad_top_logprobs(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model="smollm2",
            messages=QUESTION,  # type: ignore[arg-type]
            logprobs=True,
            top_logprobs=50,
        )
    assert info.value.status_code == 400
