"""Graceful shutdown: every open connection gets its final frame, then the process exits.

On SIGTERM (``tokenwire serve`` runs :meth:`Connections.drain` before uvicorn's
own shutdown, which would otherwise wait for streaming responses forever), in
this order (docs/protocol.md, "Shutdown"):

1. every multiplexed connection gets its final frame and is closed: WebSocket
   the close code 1001 (going away), Socket.IO an ``error {code:
   "server_shutdown"}`` event and a disconnect. One frame a connection, not one a
   subscription: 10,000 subscriptions on 10 sockets cost 10 frames;
2. the streams this server runs are stopped: each gets its terminal event
   ``cancelled {reason: "shutdown"}``, which the HTTP responses still reading it
   (SSE, NDJSON, OpenAI, AI SDK) deliver as their final frame, and end;
3. a response whose stream is not this server's to stop (an application's own
   Hub) writes its end frame (SSE: a ``: server_shutdown`` comment) and ends.

Each step is bounded in time, so the process exits within seconds however many
subscriptions are open.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from tokenwire.stream import Hub

log = logging.getLogger("tokenwire")


class Link(Protocol):
    """An open connection that can end itself gracefully."""

    multiplexed: bool
    """A WebSocket or Socket.IO connection (closed first, before streams stop)."""

    async def shutdown(self, timeout: float) -> None: ...


class Connections:
    """The open connections of one app, for :meth:`drain`."""

    def __init__(self) -> None:
        self._links: set[Link] = set()
        self.closing = False

    def add(self, link: Link) -> None:
        self._links.add(link)

    def discard(self, link: Link) -> None:
        self._links.discard(link)

    def __len__(self) -> int:
        return len(self._links)

    async def drain(self, hub: Hub | None, timeout: float = 3.0) -> None:
        """End every open connection with its final frame, stopping ``hub``'s running
        streams on the way (None: leave them to their owner), in about ``timeout``
        seconds."""
        self.closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        subscribers = hub.subscriber_count if hub is not None else None
        log.info(
            "event=shutdown transport=server connections=%d subscribers=%s",
            len(self._links),
            subscribers,
        )
        # One line for the lot, not a subscribe/unsubscribe line per subscription:
        # 10,000 of them would cost the shutdown seconds.
        level = log.level
        log.setLevel(max(logging.WARNING, log.getEffectiveLevel()))
        try:
            await self._end([link for link in self._links if link.multiplexed], timeout / 3)
            if hub is not None:
                running = [s.id for s in list(hub.streams.values()) if not s.status.ended]
                await _bounded([hub.cancel(sid, "shutdown") for sid in running], timeout / 3)
            await self._end(list(self._links), max(0.1, deadline - loop.time()))
        finally:
            log.setLevel(level)

    async def _end(self, links: list[Link], timeout: float) -> None:
        await _bounded([link.shutdown(timeout) for link in links], timeout + 0.5)


async def _bounded(coros: list[Coroutine[Any, Any, Any]], timeout: float) -> None:
    """Run ``coros`` at once; whatever has not ended after ``timeout`` is cancelled."""
    if not coros:
        return
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(coro) for coro in coros]
    finished, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    for task in finished:
        if not task.cancelled() and task.exception() is not None:
            # a stream forgotten meanwhile, a socket already gone: nothing to end
            log.debug("shutdown step failed: %s", task.exception())
