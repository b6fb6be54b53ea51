"""The worker process: ``python -m tokenwire.workers --name NAME --url URL [--settings JSON]``.

It builds the backend ``URL`` names in this process (the registry's in-process
factory), loads it, generates one token as a self-check, says ``ready``, then
serves the ``request`` and ``cancel`` messages read from stdin, one generation
at a time, answering on stdout. Its real stdout is kept for the messages; what
anything else prints to stdout (a native library, say) goes to stderr. It
exits when stdin closes: a worker never outlives its gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from tokenwire.errors import TokenwireError
from tokenwire.models.base import Finish, GenerationRequest, ModelBackend
from tokenwire.workers import messages as wm

# The first message shows which worker this is; the self-check prompt is tiny.
SELF_CHECK = GenerationRequest(
    model="self-check", messages=({"role": "user", "content": "Hi"},), max_tokens=1, temperature=0.0
)


class Worker:
    def __init__(self, backend: ModelBackend, writer: asyncio.StreamWriter) -> None:
        self.backend = backend
        self.writer = writer
        self._task: asyncio.Task[None] | None = None
        self._current: str | None = None

    def send(self, msg: wm.Message) -> None:
        self.writer.write(wm.frame(msg))

    async def serve(self, reader: asyncio.StreamReader) -> int:
        decoder = wm.Decoder()
        while data := await reader.read(65536):
            try:
                batch = decoder.feed(data)
            except wm.WorkerProtocolError as exc:
                print(f"tokenwire worker: {exc.message}", file=sys.stderr)
                return 2
            for msg in batch:
                self._handle(msg)
        # stdin closed: the gateway stopped us, or is gone
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        return 0

    def _handle(self, msg: wm.Message) -> None:
        if isinstance(msg, wm.Request):
            if self._task is not None and not self._task.done():
                self.send(wm.Error(msg.id, "worker_busy", "this worker is already generating"))
                return
            self._current = msg.id
            self._task = asyncio.create_task(self._generate(msg))
        elif isinstance(msg, wm.Cancel):
            if msg.id == self._current and self._task is not None:
                self._task.cancel()

    async def _generate(self, msg: wm.Request) -> None:
        sent = 0
        terminal: wm.Message
        transport = self.writer.transport
        try:
            pieces = self.backend.generate(msg.to_generation())
            try:
                terminal = wm.Finish(msg.id, "stop", 0, 0)
                async for item in pieces:
                    if isinstance(item, Finish):
                        usage = item.usage
                        terminal = wm.Finish(
                            msg.id, item.finish_reason, usage.prompt_tokens, usage.completion_tokens
                        )
                        break
                    if item:
                        # One message per piece: when the gateway falls behind, the pipe
                        # transport buffers them and sends many in one write.
                        self.send(wm.Text.of(msg.id, item))
                        sent += 1
                        if transport.get_write_buffer_size() > 65536:
                            await self.writer.drain()
            finally:
                close = getattr(pieces, "aclose", None)
                if close is not None:
                    await close()
        except asyncio.CancelledError:
            terminal = wm.Finish(msg.id, "cancelled", 0, sent)
        except TokenwireError as exc:
            terminal = wm.Error(msg.id, exc.code, exc.message)
        except Exception as exc:
            terminal = wm.Error(msg.id, "model_error", f"{type(exc).__name__}: {exc}")
        self._current = None
        self.send(terminal)


async def _self_check(backend: ModelBackend) -> None:
    pieces = backend.generate(SELF_CHECK)
    try:
        async for _ in pieces:
            pass
    finally:
        close = getattr(pieces, "aclose", None)
        if close is not None:
            await close()


async def _pipes(in_fd: int, out_fd: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(in_fd, "rb", 0)
    )
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(out_fd, "wb", 0)
    )
    return reader, asyncio.StreamWriter(transport, protocol, None, loop)


async def run(name: str, url: str, settings: dict[str, Any], in_fd: int, out_fd: int) -> int:
    from tokenwire.models.registry import load_backend_modules, local_backend_from_url

    reader, writer = await _pipes(in_fd, out_fd)
    writer.write(wm.frame(wm.Hello(os.getpid(), url)))
    try:
        load_backend_modules()
        # A worker serves one generation at a time: its backend needs one instance.
        backend = local_backend_from_url(name, url, {**settings, "instances": 1, "max_queue": 1})
        t0 = time.perf_counter()
        load = getattr(backend, "load", None)
        if load is not None:
            await load()
        t1 = time.perf_counter()
        await _self_check(backend)
        t2 = time.perf_counter()
    except Exception as exc:
        code = exc.code if isinstance(exc, TokenwireError) else "model_error"
        message = exc.message if isinstance(exc, TokenwireError) else f"{type(exc).__name__}: {exc}"
        writer.write(wm.frame(wm.Error(None, code, message)))
        await writer.drain()
        return 1
    writer.write(wm.frame(wm.Ready(round((t1 - t0) * 1000, 3), round((t2 - t1) * 1000, 3))))
    try:
        return await Worker(backend, writer).serve(reader)
    finally:
        await backend.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tokenwire.workers", description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--settings", default="{}", help="backend settings, a JSON object")
    args = parser.parse_args(argv)
    settings = json.loads(args.settings)
    if not isinstance(settings, dict):
        parser.error("--settings must be a JSON object")
    faulthandler.enable()  # a native crash still says where, on stderr
    out_fd = os.dup(1)
    os.dup2(2, 1)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(run(args.name, args.url, settings, 0, out_fd))


def _loop_factory() -> Any:
    """uvloop when it is installed (uvicorn[standard] brings it), as the server uses."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
