"""A deterministic scripted backend, for tests, benchmarks and demos — never the default."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from tokenwire.models.base import Finish, GenerationRequest, Usage

_WORDS = (
    "Streaming tokens one at a time lets people read the answer while the model "
    "is still thinking, and a stream that resumes after a drop loses nothing."
).split()


def scripted_token(i: int) -> str:
    """The i-th token (0-based) the scripted model emits."""
    word = _WORDS[i % len(_WORDS)]
    return word if i == 0 else " " + word


class ScriptedBackend:
    """Streams exactly ``max_tokens`` tokens, ``delay_ms`` apart."""

    name = "scripted"

    async def generate(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
        delay = request.delay_ms / 1000.0
        for i in range(request.max_tokens):
            if delay:
                await asyncio.sleep(delay)
            elif i % 64 == 63:
                await asyncio.sleep(0)  # stay cancellable and fair when not delayed
            yield scripted_token(i)
        prompt_tokens = len(request.prompt_text.split())
        yield Finish("length", Usage(prompt_tokens, request.max_tokens))

    async def aclose(self) -> None:
        return None
