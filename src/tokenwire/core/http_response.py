"""One streamed HTTP response driven by the core: SSE, NDJSON and the chat formats.

The response is the headers, the encoder's open frame, then whatever the driver
writes, then the end of the body. One task per connection and nothing else but
one owned task that waits for ``http.disconnect`` (cancelled when the response
ends, whoever ends it) and wakes the source's pending read. A client that goes
away only leaves (the caller closes the subscription and the stream's grace
period starts); it never stops the stream (docs/protocol.md, "WebSocket": stop
is not leave).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Sequence
from typing import Any

from starlette.types import Message, Receive, Send

from tokenwire.asgi import wait_disconnect
from tokenwire.core.broadcast import Broadcasts, Member
from tokenwire.core.delivery import Delivery, Heartbeat
from tokenwire.core.driver import HeartbeatTimer, Source, Stop, drive
from tokenwire.core.encoder import Encoder, SharedBatches
from tokenwire.core.http_direct import body_send, direct_body
from tokenwire.core.shutdown import Connections
from tokenwire.metrics import Metrics


class Disconnect:
    """The one task per connection that waits for ``http.disconnect`` and stops the
    driver. Cancelled by :meth:`close`, whoever ends the response."""

    __slots__ = ("_stop", "_task")

    def __init__(self, receive: Receive, stop: Stop) -> None:
        self._stop = stop
        self._task = asyncio.ensure_future(wait_disconnect(receive))
        self._task.add_done_callback(self._on_done)

    def _on_done(self, _: asyncio.Future[Message]) -> None:
        self._stop.stop()

    async def close(self) -> None:
        self._task.remove_done_callback(self._on_done)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task


class _Link:
    """An open response, as graceful shutdown sees it (core/shutdown.py)."""

    __slots__ = ("done", "stop")
    multiplexed = False

    def __init__(self, stop: Stop) -> None:
        self.stop = stop
        self.done = asyncio.get_running_loop().create_future()

    async def shutdown(self, timeout: float) -> None:
        self.stop.shut_down()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.done), timeout)


async def stream_response(
    source: Source,
    encoder: Encoder[bytes],
    open_frame: dict[str, Any],
    headers: Sequence[tuple[bytes, bytes]],
    receive: Receive,
    send: Send,
    *,
    heartbeat_s: float,
    max_batch_events: int,
    metrics: Metrics | None,
    shared: SharedBatches[tuple[bytes, int]] | None = None,
    connections: Connections | None = None,
    status: int = 200,
    broadcasts: Broadcasts | None = None,
    coalesce_s: float = 0.0,
) -> None:
    """Answer ``status`` (200) with ``source`` encoded by ``encoder`` until the terminal event, a
    disconnect, or the server's shutdown. The caller owns ``source`` (and closes it).

    With ``broadcasts``, the response follows its stream's broadcast while it is live
    (core/broadcast.py), where the server lets it write directly (core/http_direct.py)."""
    loop = asyncio.get_running_loop()
    heartbeat = Heartbeat(heartbeat_s, loop.time())
    delivery = Delivery(source.stream_id, encoder, heartbeat, shared)

    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    send_body = body_send(send)

    def write(body: bytes) -> Awaitable[None]:
        # send's own awaitable, not a coroutine around it: one frame less per write
        return send_body({"type": "http.response.body", "body": body, "more_body": True})

    for body, _, _ in delivery.open(open_frame, loop.time()):
        if body:
            await write(body)
    stop = Stop(source)
    watcher = Disconnect(receive, stop)
    timer = HeartbeatTimer(heartbeat, source.wake)
    link = _Link(stop)
    if connections is not None:
        connections.add(link)
    follow = None
    out = direct_body(send) if broadcasts is not None else None
    if broadcasts is not None and out is not None:
        member = Member(source, delivery, out)

        def follow() -> asyncio.Future[None] | None:
            return broadcasts.follow(member, coalesce_s)

    try:
        await drive(
            source,
            delivery,
            write,
            stop,
            metrics,
            max_batch_events,
            follow=follow,
            coalesce_s=coalesce_s,
        )
        if not stop.stopped:
            await send_body({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        timer.cancel()
        if connections is not None:
            connections.discard(link)
        link.done.set_result(None)
        await watcher.close()
