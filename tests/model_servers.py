"""Upstream model servers for the backend tests.

- :class:`ReplayServer`: a raw asyncio HTTP/1.1 server in its own thread that
  replays Ollama's documented ``/api/chat`` NDJSON stream and OpenAI's
  ``/v1/chat/completions`` SSE stream (with the ``include_usage`` chunk), plus
  their error shapes. Ollama itself cannot be installed here.
- :func:`start_llama_server`: a real ``python -m llama_cpp.server`` serving the
  embedded GGUF file on a free port.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ServerProcess

WORDS = "The quick brown fox jumps over the lazy dog and keeps on running far away".split()
CREATED_AT = "2025-10-26T17:15:24.097767Z"


def piece(i: int) -> str:
    word = WORDS[i % len(WORDS)]
    return word if i == 0 else " " + word


@dataclass
class ReplayServer:
    """Model names pick the behaviour: ``replay`` streams; ``missing`` is a 404;
    ``broken`` fails mid-stream; ``slow`` waits 20 ms between pieces."""

    host: str = "127.0.0.1"
    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    disconnects: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ReplayServer:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(asyncio.start_server(self._handle, self.host, 0))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=run, name="replay-server", daemon=True)
        self._thread.start()
        ready.wait(5)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {
                k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)
            }
            body = json.loads(await reader.readexactly(int(headers.get("content-length", "0"))))
            self.requests.append({"path": path, "body": body, "headers": headers})
            if method == "POST" and path == "/api/chat":
                await self._ollama(body, writer)
            elif method == "POST" and path == "/v1/chat/completions":
                await self._openai(body, writer)
            else:
                await self._json(writer, 404, {"error": "404 page not found"})
        except (ConnectionError, asyncio.IncompleteReadError):
            self.disconnects += 1
        finally:
            writer.close()

    async def _json(self, writer: asyncio.StreamWriter, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        writer.write(
            b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (status, len(data), data)
        )
        await writer.drain()

    async def _chunked(self, writer: asyncio.StreamWriter, ctype: str, parts: Any) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n" % ctype.encode()
        )
        async for data in parts:
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def _ollama(self, body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        model = body["model"]
        if model == "missing":
            await self._json(writer, 404, {"error": f"model '{model}' not found"})
            return
        limit = int(body.get("options", {}).get("num_predict", 8))

        async def lines() -> Any:
            for i in range(limit):
                if model == "broken" and i == 2:
                    yield b'{"error":"an error was encountered while running the model"}\n'
                    return
                await asyncio.sleep(0.02 if model == "slow" else 0.001)
                msg = {"role": "assistant", "content": piece(i)}
                obj = {"model": model, "created_at": CREATED_AT, "message": msg, "done": False}
                yield json.dumps(obj).encode() + b"\n"
            final = {
                "model": model,
                "created_at": CREATED_AT,
                "message": {"role": "assistant", "content": ""},
                "done_reason": "length",
                "done": True,
                "total_duration": 4353619900,
                "load_duration": 63915300,
                "prompt_eval_count": 26,
                "prompt_eval_duration": 246847000,
                "eval_count": limit,
                "eval_duration": 4032296000,
            }
            yield json.dumps(final).encode() + b"\n"

        await self._chunked(writer, "application/x-ndjson", lines())

    async def _openai(self, body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        model = body["model"]
        if model == "missing":
            error = {
                "message": f"The model `{model}` does not exist",
                "type": "invalid_request_error",
            }
            await self._json(writer, 404, {"error": error})
            return
        limit = int(body.get("max_tokens", 8))
        include_usage = body.get("stream_options", {}).get("include_usage", False)
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model}

        def event(obj: Any) -> bytes:
            return b"data: " + json.dumps(obj).encode() + b"\n\n"

        async def events() -> Any:
            first = {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "finish_reason": None,
            }
            yield event({**base, "choices": [first]})
            for i in range(limit):
                if model == "broken" and i == 2:
                    yield event(
                        {"error": {"message": "upstream overloaded", "type": "server_error"}}
                    )
                    return
                await asyncio.sleep(0.02 if model == "slow" else 0.001)
                choice = {"index": 0, "delta": {"content": piece(i)}, "finish_reason": None}
                yield event({**base, "choices": [choice], "usage": None})
            last = {"index": 0, "delta": {}, "finish_reason": "length"}
            yield event({**base, "choices": [last]})
            if include_usage:
                usage = {"prompt_tokens": 9, "completion_tokens": limit, "total_tokens": 9 + limit}
                yield event({**base, "choices": [], "usage": usage})
            yield b"data: [DONE]\n\n"

        await self._chunked(writer, "text/event-stream", events())


LlamaServer = ServerProcess  # a subprocess with a URL and a log, like tokenwire's own


def start_llama_server(model_path: str, port: int, log_path: Path) -> LlamaServer:
    """``python -m llama_cpp.server`` on ``port``, ready to answer (or an error)."""
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            model_path,
            "--model_alias",
            "smollm2",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    server = LlamaServer(f"http://127.0.0.1:{port}", proc, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited: {server.log()[-2000:]}")
        try:
            if httpx.get(f"{server.url}/v1/models", timeout=1.0).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise TimeoutError("llama_cpp.server did not start within 60 s")
