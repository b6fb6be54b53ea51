"""Graceful shutdown: every open connection gets its final frame, then the process exits.

On SIGTERM (``tokenwire serve`` runs :meth:`Connections.drain` before uvicorn's
own shutdown, which would otherwise wait for streaming responses forever), in
this order (docs/protocol.md, "Shutdown"):

1. the streams this server runs are stopped: each gets its terminal event
   ``cancelled {reason: "shutdown"}``, which its subscribers receive as usual;
2. every connection still open writes its final frame and ends: SSE a
   ``: server_shutdown`` comment and the end of the body, NDJSON the end of the
   body, WebSocket an ``error {code: "server_shutdown"}`` frame per stream still
   subscribed and close code 1001 (going away), Socket.IO an ``error`` event per
   job still subscribed and a disconnect.

Each step is bounded in time, so the process exits within seconds however many
subscriptions are open.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from tokenwire.stream import Hub

log = logging.getLogger("tokenwire")


class Link(Protocol):
    """An open connection that can end itself gracefully."""

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
        """Stop ``hub``'s running streams (None: leave them to their owner), then end
        every open connection with its final frame, in about ``timeout`` seconds."""
        self.closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if hub is not None:
            running = [s.id for s in list(hub.streams.values()) if not s.status.ended]
            stops = [loop.create_task(hub.cancel(sid, "shutdown")) for sid in running]
            if stops:
                await asyncio.wait(stops, timeout=timeout / 3)
                for task in stops:
                    if task.done() and not task.cancelled():
                        task.exception()  # a stream forgotten meanwhile: nothing to stop
                    else:
                        task.cancel()
        links = list(self._links)
        log.info("event=shutdown transport=server connections=%d", len(links))
        left = max(0.1, deadline - loop.time())
        ends = [loop.create_task(link.shutdown(left)) for link in links]
        if ends:
            finished, pending = await asyncio.wait(ends, timeout=left + 0.5)
            for end in pending:
                end.cancel()
            for end in finished:
                if not end.cancelled() and end.exception() is not None:
                    log.warning("a connection failed to shut down: %s", end.exception())
