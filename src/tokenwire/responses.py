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

It runs on the session core like every server transport: the source is read
through a bounded buffer (:class:`_BufferedSource`, ``SSEOptions.buffer``
events: the generator waits when it is full) by the one driver, with the SSE
encoder (``id:`` written last) and the lazy heartbeat timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tokenwire import sse
from tokenwire.core.http_encoders import SSE_MEDIA_TYPE, SSEEncoder, stream_headers
from tokenwire.core.http_response import stream_response
from tokenwire.events import TERMINAL_KINDS, Event, to_event
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


class _PlainSSE(SSEEncoder):
    """SSE without a Hub: no open control frame, only the ``retry:`` field first."""

    def open(self, stream_id: str, frame: dict[str, Any]) -> bytes:
        return b"" if self.retry_ms is None else sse.retry_field(self.retry_ms)


class _BufferedSource:
    """The source's events as the driver reads them: numbered from 1 (an event that
    has a seq keeps it), ``done`` after the last item, ``error`` when the source
    stayed silent past ``idle_timeout_s``."""

    stream_id = ""

    def __init__(self, queue: asyncio.Queue[Any], idle_timeout_s: float | None) -> None:
        self._queue = queue
        self._idle = idle_timeout_s
        self._loop = asyncio.get_running_loop()
        self.last_item = self._loop.time()
        self._seq = 0
        self._finished = False
        self._wake: asyncio.Future[None] | None = None

    @property
    def finished(self) -> bool:
        return self._finished

    def wake(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def read(self, max_events: int = 256, timeout: float | None = None) -> list[Event]:
        if self._finished:
            raise RuntimeError("read past the end of the response's source")
        queue = self._queue
        if queue.empty():
            get = asyncio.ensure_future(queue.get())
            self._wake = self._loop.create_future()
            wait = None
            if self._idle is not None:
                wait = max(0.0, self.last_item + self._idle - self._loop.time())
            try:
                await asyncio.wait(
                    {get, self._wake}, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                self._wake = None
                if not get.done():
                    get.cancel()
            if not get.done() or get.cancelled():
                if self._idle is not None and self._loop.time() - self.last_item >= self._idle:
                    message = f"the source yielded nothing for {self._idle}s"
                    return self._number([Event.error("timeout", message)])
                return []
            items = [get.result()]
        else:
            items = []
        while len(items) < max_events and not queue.empty():
            items.append(queue.get_nowait())
        return self._number([Event.done() if item is _END else item for item in items])

    def _number(self, events: list[Event]) -> list[Event]:
        out = []
        for ev in events:
            self._seq += 1
            if not ev.seq:
                ev = Event(ev.kind, ev.fields, seq=self._seq, binary=ev.binary, ts=ev.ts)
            out.append(ev)
            if ev.kind in TERMINAL_KINDS:
                self._finished = True
                break
        return out


class EventStreamResponse(Response):
    """A Starlette response streaming ``source`` as SSE (see the module docstring).

    A real :class:`starlette.responses.Response`: return it from a Starlette or
    FastAPI route (GET or POST); ``response_class=EventStreamResponse`` shows the
    route as ``text/event-stream`` in FastAPI's OpenAPI document."""

    media_type = "text/event-stream"

    def __init__(
        self,
        source: AsyncIterable[Any],
        options: SSEOptions | None = None,
        background: BackgroundTask | None = None,
        status_code: int = 200,  # FastAPI's OpenAPI reads the default from here
    ) -> None:
        self.options = options or SSEOptions()
        self.source = self._prepare(source)
        self.status_code = status_code
        self.background = background
        extra = [(k.lower().encode(), v.encode()) for k, v in (self.options.headers or {}).items()]
        self.raw_headers = stream_headers(SSE_MEDIA_TYPE) + extra

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
        headers = self.raw_headers
        queue: asyncio.Queue[Any] = asyncio.Queue(opts.buffer)
        source = _BufferedSource(queue, opts.idle_timeout_s)
        pump = asyncio.ensure_future(self._pump(queue, source))
        try:
            await stream_response(
                source,
                _PlainSSE(opts.retry_ms, None),
                {},
                headers,
                receive,
                send,
                heartbeat_s=opts.heartbeat_s,
                max_batch_events=opts.buffer,
                metrics=None,
                status=self.status_code,
            )
        finally:
            pump.cancel()  # the client left, or the stream ended: stop the source
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
        if self.background is not None:
            await self.background()

    async def _pump(self, queue: asyncio.Queue[Any], source: _BufferedSource) -> None:
        loop = asyncio.get_running_loop()
        iterator = aiter(self.source)
        try:
            async for item in iterator:
                event = to_event(item)
                await queue.put(event)
                source.last_item = loop.time()
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


def event_stream_response(
    source: AsyncIterable[Any], options: SSEOptions | None = None, **kwargs: Any
) -> EventStreamResponse:
    """Return a correct SSE response for ``source``; ``kwargs`` are :class:`SSEOptions`
    fields (``heartbeat_s=5`` …)."""
    if kwargs:
        base = options or SSEOptions()
        options = SSEOptions(**{**{f: getattr(base, f) for f in base.__slots__}, **kwargs})
    return EventStreamResponse(source, options)
