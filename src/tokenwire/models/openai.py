"""A backend for any OpenAI-compatible server (OpenAI, vLLM, llama.cpp's server…).

It streams ``POST {base_url}/chat/completions`` with ``stream: true`` and
``stream_options: {include_usage: true}``: an SSE body of
``chat.completion.chunk`` objects whose ``choices[0].delta.content`` are the
text pieces, ``finish_reason`` on the last choice chunk, then (when the server
honours ``include_usage``) one chunk with empty ``choices`` and the ``usage``
of the whole request, and finally ``data: [DONE]``.

Servers that ignore ``include_usage`` (``llama_cpp.server`` does) send no
usage; then ``completion_tokens`` is the number of content deltas (one per
token on the servers we know) and ``prompt_tokens`` is 0 (unknown).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from tokenwire.events import loads
from tokenwire.models._http import DEFAULT_TIMEOUT, ClientPerLoop, mid_stream_errors, open_stream
from tokenwire.models.base import Finish, GenerationRequest, Usage
from tokenwire.models.errors import UpstreamProtocolError
from tokenwire.sse import SSEParser


class OpenAIBackend:
    """Streams chat completions from an OpenAI-compatible ``base_url`` (ending in ``/v1``)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        model: str | None = None,
        *,
        name: str = "openai",
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.model = model
        all_headers = {"Accept": "text/event-stream", **(headers or {})}
        if api_key:
            all_headers["Authorization"] = f"Bearer {api_key}"
        self._clients = ClientPerLoop(timeout, all_headers)

    def request_body(self, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model or request.model,
            "messages": [dict(m) for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
        }
        if request.stop:
            body["stop"] = list(request.stop)
        if request.seed is not None:
            body["seed"] = request.seed
        return body

    async def generate(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
        parser = SSEParser()
        deltas = 0
        finish_reason: str | None = None
        usage: Usage | None = None
        async with open_stream(self._clients.get(), self.url, self.request_body(request)) as resp:
            with mid_stream_errors(self.url):
                async for data in resp.aiter_bytes():
                    for message in parser.feed(data):
                        if message.data == "[DONE]":
                            yield Finish(finish_reason or "stop", usage or Usage(0, deltas))
                            return
                        chunk = self._chunk(message.data)
                        if chunk.get("usage"):
                            usage = _usage(chunk["usage"], self.url)
                        for choice in chunk.get("choices") or ():
                            content = (choice.get("delta") or {}).get("content")
                            if content:
                                deltas += 1
                                yield content
                            if choice.get("finish_reason"):
                                finish_reason = str(choice["finish_reason"])
        if finish_reason is None:
            raise UpstreamProtocolError(self.url, "the stream ended before data: [DONE]")
        # Some servers close the body after the last chunk without [DONE].
        yield Finish(finish_reason, usage or Usage(0, deltas))

    def _chunk(self, data: str) -> dict[str, Any]:
        try:
            chunk = loads(data)
        except ValueError as exc:
            raise UpstreamProtocolError(self.url, f"a chunk is not JSON: {data[:200]!r}") from exc
        if not isinstance(chunk, dict):
            raise UpstreamProtocolError(self.url, f"a chunk is not an object: {data[:200]!r}")
        if chunk.get("error"):
            # An error after the response started (OpenAI, vLLM): the status stays 200.
            err = chunk["error"]
            text = err.get("message", err) if isinstance(err, dict) else err
            raise UpstreamProtocolError(self.url, f"error mid-stream: {text}")
        return chunk

    async def aclose(self) -> None:
        await self._clients.aclose()


def _usage(raw: Any, url: str) -> Usage:
    if not isinstance(raw, Mapping):
        raise UpstreamProtocolError(url, f"usage is not an object: {raw!r}")
    return Usage(int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0))
