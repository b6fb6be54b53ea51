"""The OpenAI route's statuses and request checks: ``model_busy`` is a 503 also
for a streamed answer, and every field of a chat completion request is checked
the way OpenAI checks it (a bool is not an integer, an empty model is named)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import ServerFactory, ServerProcess

TIGHT = "tight=crash:?after=1000000&max_queue=1"


@pytest.fixture(scope="module")
def tight(start_server: ServerFactory) -> ServerProcess:
    return start_server("--models", TIGHT, TOKENWIRE_BACKEND_MODULES="tests.crashing_backend")


async def chat(client: httpx.AsyncClient, stream: bool) -> tuple[int, str]:
    body = {
        "model": "tight",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 20,
        "delay_ms": 20,
        "stream": stream,
    }
    r = await client.post("/v1/chat/completions", json=body)
    return r.status_code, r.text


@pytest.mark.slow
@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
async def test_model_busy_is_503_never_a_200_with_an_error(
    tight: ServerProcess, stream: bool
) -> None:
    # Requests that arrive together all pass the queue check before any of them
    # takes a place; the ones the queue then refuses must still get 503.
    async with httpx.AsyncClient(base_url=tight.url, timeout=30) as client:
        for _ in range(3):
            answers = await asyncio.gather(*(chat(client, stream) for _ in range(8)))
            statuses = sorted(status for status, _ in answers)
            for status, text in answers:
                if status == 200:
                    assert "model_busy" not in text and "error" not in text, text[:300]
                else:
                    assert status == 503 and '"code":"model_busy"' in text, (status, text)
            assert statuses.count(200) >= 1 and statuses.count(503) >= 1, statuses
