"""A backend that crashes the process it runs in, on purpose — tests only.

Loaded through ``TOKENWIRE_BACKEND_MODULES=tests.crashing_backend`` (the
server and every worker import it), it registers the worker scheme ``crash:``:

- ``crash:?after=N`` streams the scripted text and crashes when it would emit
  token ``N`` (0: at the first token, so already in the worker's self-check,
  which generates one token);
- ``how=abort`` (default, ``os.abort()``: SIGABRT), ``segv`` (a real
  segmentation fault through ctypes), ``exit`` (``os._exit(3)``);
- ``at=load`` crashes while the worker loads the backend instead;
- ``load_ms=T`` makes loading take T ms (a slow model start);
- ``delay_ms`` in the request spaces the tokens, as for ``scripted``.

``after`` larger than the answer gives a well-behaved worker model, handy to
show that other worker models carry on.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

from tokenwire.models.base import Finish, GenerationRequest, ModelBackend, Usage
from tokenwire.models.registry import ModelURL, register_scheme
from tokenwire.models.scripted import scripted_token


def crash(how: str) -> None:
    if how == "segv":
        ctypes.string_at(0)  # reads address 0: SIGSEGV
    elif how == "exit":
        os._exit(3)
    os.abort()


class CrashingBackend:
    def __init__(self, name: str, after: int, how: str, at: str, load_ms: int = 0) -> None:
        self.name = name
        self.after = after
        self.how = how
        self.at = at
        self.load_ms = load_ms

    async def load(self) -> None:
        await asyncio.sleep(self.load_ms / 1000)
        if self.at == "load":
            crash(self.how)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
        delay = request.delay_ms / 1000.0
        for i in range(request.max_tokens):
            if i == self.after:
                crash(self.how)
            await asyncio.sleep(delay)
            yield scripted_token(i)
        yield Finish("length", Usage(1, request.max_tokens))

    async def aclose(self) -> None:
        return None


def _factory(name: str, url: ModelURL, settings: Mapping[str, Any]) -> ModelBackend:
    return CrashingBackend(
        name,
        after=url.int_param("after", 3),
        how=url.params.get("how", "abort"),
        at=url.params.get("at", "generate"),
        load_ms=url.int_param("load_ms", 0),
    )


register_scheme("crash", _factory, worker=True)
