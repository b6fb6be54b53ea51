"""``event_stream_response``: a correct SSE response from any async iterable.

For a Starlette or FastAPI route that wants to stream without a Hub (seeds 000
and 002). The response:

- frames every item as an event (``str`` → ``token``, an :class:`Event`, a dict
  with ``kind``, any other JSON value → ``data``, arrays → tensor frames);
- numbers events from 1 so the client's ``Last-Event-ID`` is meaningful;
- always ends with exactly one terminal event: ``done`` when the generator
  finishes, ``error`` when it raises or stays silent past ``idle_timeout_s``;
- sends heartbeat comments while the generator is quiet;
- closes the generator as soon as the client disconnects, and never hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Receive, Scope, Send

from tokenwire import sse
from tokenwire.asgi import wait_disconnect
from tokenwire.events import TERMINAL_KINDS, Event, dumps, to_event
from tokenwire.tensors import TensorOptions, tensors_to_frame_stream

log = logging.getLogger("tokenwire")

_END = object()


@dataclass(frozen=True, slots=True)
class SSEOptions:
    heartbeat_s: float = 15.0
    retry_ms: int | None = 2000
    idle_timeout_s: float | None = None
    """End with ``error {code: "timeout"}`` when the source yields nothing for this long."""
    headers: Mapping[str, str] | None = None
    tensor: TensorOptions = field(default_factory=TensorOptions)
    """How arrays the source yields are framed: chunk size, id factory, metadata."""
    stream: Any = None
    """An MLX stream or device to run the source in (``mx.new_stream(mx.cpu)``)."""
    buffer: int = 16
    """Events read ahead of the socket; the source waits when the buffer is full."""


class EventStreamResponse:
    """An ASGI response streaming ``source`` as SSE (see the module docstring)."""

    def __init__(self, source: AsyncIterable[Any], options: SSEOptions | None = None) -> None:
        self.options = options or SSEOptions()
        self.source = self._prepare(source)

    def _prepare(self, source: AsyncIterable[Any]) -> AsyncIterable[Any]:
        opts = self.options

        framed: AsyncIterable[Any] = tensors_to_frame_stream(
            source,
            chunk_bytes=opts.tensor.chunk_bytes,
            id_factory=opts.tensor.id_factory,
            meta=opts.tensor.meta,
        )
        if opts.stream is not None:
            from tokenwire.mlx_context import run_in_stream

            framed = run_in_stream(opts.stream, framed)
        return framed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        opts = self.options
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache, no-transform"),
            (b"x-accel-buffering", b"no"),
        ]
        headers += [(k.lower().encode(), v.encode()) for k, v in (opts.headers or {}).items()]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if opts.retry_ms is not None:
            await send(
                {
                    "type": "http.response.body",
                    "body": sse.retry_field(opts.retry_ms),
                    "more_body": True,
                }
            )

        queue: asyncio.Queue[Any] = asyncio.Queue(opts.buffer)
        pump = asyncio.ensure_future(self._pump(queue))
        watcher = asyncio.ensure_future(wait_disconnect(receive))
        seq = 0
        try:
            while True:
                get = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {get, watcher}, timeout=opts.heartbeat_s, return_when=asyncio.FIRST_COMPLETED
                )
                if watcher in done:
                    get.cancel()
                    return  # the client left: the finally block stops the source
                if not done:
                    get.cancel()
                    await send(
                        {"type": "http.response.body", "body": sse.HEARTBEAT, "more_body": True}
                    )
                    if self._timed_out():
                        event: Any = Event.error(
                            "timeout", f"the source yielded nothing for {opts.idle_timeout_s}s"
                        )
                    else:
                        continue
                else:
                    event = get.result()
                if event is _END:
                    event = Event.done()
                seq += 1
                ev: Event = event
                body = ev.sse() if ev.seq else _with_seq(ev, seq)
                await send({"type": "http.response.body", "body": body, "more_body": True})
                if ev.kind in TERMINAL_KINDS:
                    break
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            for task in (pump, watcher):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher

    def _timed_out(self) -> bool:
        idle = self.options.idle_timeout_s
        if idle is None:
            return False
        loop = asyncio.get_running_loop()
        return loop.time() - self._last_item >= idle

    async def _pump(self, queue: asyncio.Queue[Any]) -> None:
        self._last_item = asyncio.get_running_loop().time()
        iterator = aiter(self.source)
        try:
            async for item in iterator:
                event = to_event(item)
                await queue.put(event)
                self._last_item = asyncio.get_running_loop().time()
                if event.kind in TERMINAL_KINDS:
                    return
            await queue.put(_END)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("event stream source failed")
            await queue.put(Event.error("producer_error", str(exc)))
        finally:
            close = getattr(iterator, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()


def _with_seq(event: Event, seq: int) -> bytes:
    obj = event.to_dict()
    obj["seq"] = seq
    return sse.frame(dumps(obj), event=event.kind, id=seq)


def event_stream_response(
    source: AsyncIterable[Any], options: SSEOptions | None = None, **kwargs: Any
) -> EventStreamResponse:
    """Return a correct SSE response for ``source``; ``kwargs`` are :class:`SSEOptions`
    fields (``heartbeat_s=5`` …)."""
    if kwargs:
        base = options or SSEOptions()
        options = SSEOptions(**{**{f: getattr(base, f) for f in base.__slots__}, **kwargs})
    return EventStreamResponse(source, options)
