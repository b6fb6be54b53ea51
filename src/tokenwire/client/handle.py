"""``StreamHandle``: what the application holds for one stream.

Iterate it (``async for event in handle``), or register callbacks, or await
``text()`` / ``wait()``. Events come out in seq order, each once; the
terminal event is the last one, then iteration ends. An error that ends the
stream (a gap, a 404 on resume, reconnects exhausted) is raised from the
iterator after the events that came before it, never swallowed.

Callbacks run in the consumer's task, as events are consumed (iteration,
``text()`` or ``wait()``), so a callback-only application drives the stream
with ``await handle.wait()``. A callback may be a coroutine function. Its
exceptions propagate to the consumer. ``on_state`` is the exception: state
changes happen in the transport's task and are reported as they happen.

- ``on_chunk(event)``: every non-terminal event (token, progress, metrics, data, tensor.*)
- ``on_done(event)``: the terminal ``done`` or ``cancelled`` event
- ``on_error(exc)``: a :exc:`ClientError` ending the stream, including a terminal
  ``error`` event (as :exc:`StreamFailedError`); it is then raised as well
- ``on_state(StateEvent)``: the transport's state changed
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from tokenwire.client.errors import (
    ClientClosedError,
    ClientError,
    StreamCancelledError,
    StreamFailedError,
)
from tokenwire.client.machine import TransportState
from tokenwire.client.transport import StateEvent, Transport
from tokenwire.events import CANCELLED, ERROR, TERMINAL_KINDS, TOKEN, Event
from tokenwire.tracker import TokenMetrics

Callback = Callable[[Any], Any]


async def _call(callback: Callback | None, arg: Any) -> None:
    if callback is not None:
        result = callback(arg)
        if inspect.isawaitable(result):
            await result


class StreamHandle:
    def __init__(
        self,
        transport: Transport,
        *,
        on_chunk: Callback | None = None,
        on_done: Callback | None = None,
        on_error: Callback | None = None,
        on_state: Callable[[StateEvent], Any] | None = None,
        release: Callable[[Transport], None] | None = None,
    ) -> None:
        self.transport = transport
        self.on_chunk = on_chunk
        self.on_done = on_done
        self.on_error = on_error
        self.on_state = on_state
        self.terminal: Event | None = None
        """The terminal event, once consumed."""
        self._buffer = transport.buffer
        self._last_seq = transport.last_seq
        self._finished = False
        self._release = release
        transport.add_listener(self._state_changed)

    # -- what it is -----------------------------------------------------------------------

    @property
    def stream_id(self) -> str | None:
        return self.transport.stream_id

    @property
    def state(self) -> TransportState:
        return self.transport.state

    @property
    def last_seq(self) -> int:
        """The seq of the last event the application consumed: resume after it with
        ``client.subscribe(stream_id, after=handle.last_seq)``."""
        return self._last_seq

    @property
    def stats(self) -> TokenMetrics:
        """Time to first token, tokens/s and inter-token latency, as received
        (:class:`~tokenwire.tracker.StreamingTracker`; the clock starts at the handle)."""
        return self.transport.tracker.snapshot()

    @property
    def reconnects(self) -> int:
        return self.transport.machine.reconnects

    @property
    def buffered_events(self) -> int:
        """Events received and not yet consumed (at most the buffer's ``max_events``)."""
        return len(self._buffer)

    @property
    def buffered_bytes(self) -> int:
        return self._buffer.nbytes

    # -- consuming ------------------------------------------------------------------------

    def __aiter__(self) -> StreamHandle:
        return self

    async def __anext__(self) -> Event:
        if self._finished:
            raise StopAsyncIteration
        try:
            event = await self._buffer.get()
        except ClientError as exc:
            self._finished = True
            await _call(self.on_error, exc)
            raise
        if event is None:
            self._finished = True
            raise StopAsyncIteration
        self._last_seq = event.seq
        if event.kind in TERMINAL_KINDS:
            self._finished = True
            self.terminal = event
            if event.kind == ERROR:
                await _call(self.on_error, self._failure(event, ""))
            else:
                await _call(self.on_done, event)
        else:
            await _call(self.on_chunk, event)
        return event

    async def wait(self) -> Event:
        """Consume the rest of the stream (running the callbacks); return its terminal
        event, whatever its kind. Raises what ends the stream without one."""
        async for _ in self:
            pass
        if self.terminal is None:
            raise ClientClosedError(
                "the handle was closed before the end", stream_id=self.stream_id
            )
        return self.terminal

    async def text(self) -> str:
        """Consume the rest of the stream and return the text of its tokens: call it
        instead of iterating for the whole answer. Raises :exc:`StreamFailedError` or
        :exc:`StreamCancelledError` (with ``partial_text``) if the stream did not finish."""
        parts: list[str] = []
        async for event in self:
            if event.kind == TOKEN:
                parts.append(event.fields.get("text", ""))
        text = "".join(parts)
        terminal = self.terminal
        if terminal is None:
            raise ClientClosedError(
                "the handle was closed before the end", stream_id=self.stream_id
            )
        if terminal.kind == ERROR or terminal.kind == CANCELLED:
            raise self._failure(terminal, text)
        return text

    def _failure(self, terminal: Event, text: str) -> ClientError:
        fields = terminal.fields
        where = {"stream_id": self.stream_id, "last_seq": terminal.seq}
        if terminal.kind == CANCELLED:
            return StreamCancelledError(str(fields.get("reason", "")), text, **where)
        return StreamFailedError(
            str(fields.get("code", "")), str(fields.get("message", "")), text, **where
        )

    # -- stopping -------------------------------------------------------------------------

    async def cancel(self) -> None:
        """Stop the stream on the server (HTTP ``DELETE``, WebSocket ``cancel``). The
        terminal ``cancelled`` event still arrives through the handle."""
        await self.transport.send({"op": "cancel"})

    def close(self) -> None:
        """Leave: stop receiving and drop what is buffered. The stream keeps running on
        the server for its grace period (a later ``subscribe`` resumes it)."""
        self._finished = True
        self._buffer.discard()
        if self._release is not None:
            self._release(self.transport)

    async def aclose(self) -> None:
        """:meth:`close`, and wait until the link is down."""
        self.close()
        await self.transport.close()

    async def __aenter__(self) -> StreamHandle:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _state_changed(self, event: StateEvent) -> None:
        if self.on_state is not None:
            self.on_state(event)

    def __repr__(self) -> str:
        return f"<StreamHandle {self.stream_id} {self.state} last_seq={self._last_seq}>"
