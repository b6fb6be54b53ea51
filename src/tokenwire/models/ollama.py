"""A backend for Ollama's native chat API, ``POST /api/chat`` (``application/x-ndjson``).

The body streams one JSON object per line::

    {"model":"llama3.2","created_at":"…","message":{"role":"assistant","content":"Hel"},"done":false}
    …
    {"model":"llama3.2","created_at":"…","message":{"role":"assistant","content":""},
     "done":true,"done_reason":"stop","prompt_eval_count":26,"eval_count":12,…}

The last object (``done: true``) carries the usage: ``prompt_eval_count`` and
``eval_count``. An error before the stream starts is a non-2xx status with
``{"error": "…"}``; one after it started is a line ``{"error": "…"}`` under
the 200 status already sent. Sampling settings go in ``options``
(``num_predict``, ``temperature``, ``top_p``, ``seed``, ``stop``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from tokenwire.models._http import DEFAULT_TIMEOUT, ClientPerLoop, mid_stream_errors, open_stream
from tokenwire.models.base import Finish, GenerationRequest, Usage
from tokenwire.models.errors import UpstreamProtocolError
from tokenwire.ndjson import NDJSONParser, NDJSONProtocolError


class OllamaBackend:
    """Streams ``/api/chat`` from an Ollama server at ``base_url`` (e.g. ``http://127.0.0.1:11434``)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:11434",
        model: str | None = None,
        *,
        name: str = "ollama",
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/api/chat"
        self.model = model
        self._clients = ClientPerLoop(
            timeout, {"Accept": "application/x-ndjson", **(headers or {})}
        )

    def request_body(self, request: GenerationRequest) -> dict[str, Any]:
        options: dict[str, Any] = {
            "num_predict": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
        }
        if request.seed is not None:
            options["seed"] = request.seed
        if request.stop:
            options["stop"] = list(request.stop)
        return {
            "model": self.model or request.model,
            "messages": [dict(m) for m in request.messages],
            "stream": True,
            "options": options,
        }

    async def generate(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
        parser = NDJSONParser()
        async with open_stream(self._clients.get(), self.url, self.request_body(request)) as resp:
            with mid_stream_errors(self.url):
                async for data in resp.aiter_bytes():
                    for obj in self._feed(parser, data):
                        if obj.get("error"):
                            raise UpstreamProtocolError(
                                self.url, f"error mid-stream: {obj['error']}"
                            )
                        content = (obj.get("message") or {}).get("content")
                        if content:
                            yield content
                        if obj.get("done"):
                            yield Finish(
                                str(obj.get("done_reason") or "stop"),
                                Usage(
                                    int(obj.get("prompt_eval_count") or 0),
                                    int(obj.get("eval_count") or 0),
                                ),
                            )
                            return
        raise UpstreamProtocolError(self.url, "the stream ended before a line with done: true")

    def _feed(self, parser: NDJSONParser, data: bytes) -> list[dict[str, Any]]:
        try:
            objs = parser.feed(data)
        except NDJSONProtocolError as exc:
            raise UpstreamProtocolError(self.url, f"bad NDJSON: {exc}") from exc
        if not all(isinstance(o, dict) for o in objs):
            raise UpstreamProtocolError(self.url, "an NDJSON line is not an object")
        return objs

    async def aclose(self) -> None:
        await self._clients.aclose()
