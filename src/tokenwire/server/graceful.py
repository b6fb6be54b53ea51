"""uvicorn's server with tokenwire's graceful shutdown in front of its own.

uvicorn's shutdown closes the listening sockets, asks each connection to close
and then waits for the running responses, which for streaming responses is
forever. This server first runs the app's drain (:mod:`tokenwire.core.shutdown`:
streams stopped, every open connection given its final frame and ended), then
the rest of uvicorn's shutdown, with ``timeout_graceful_shutdown`` as a
backstop. A connection the drain has already closed (a WebSocket in its closing
handshake) refuses uvicorn's own close (``InvalidState``): that is not a
failure of the shutdown, so each connection's close is tried on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

log = logging.getLogger("tokenwire")


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain: Callable[[], Awaitable[None]]) -> None:
        super().__init__(config)
        self._drain = drain

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        logging.getLogger("uvicorn.error").info("Shutting down")
        for server in self.servers:
            server.close()  # no new connection while the open ones end
        for sock in sockets or []:
            sock.close()
        try:
            await asyncio.wait_for(self._drain(), timeout=10.0)
        except Exception:  # a failed drain must not keep the process up
            log.exception("graceful shutdown failed")
        for connection in list(self.server_state.connections):
            with contextlib.suppress(Exception):
                connection.shutdown()
        await asyncio.sleep(0.1)
        try:
            await asyncio.wait_for(
                self._wait_tasks_to_complete(), timeout=self.config.timeout_graceful_shutdown
            )
        except TimeoutError:
            for task in self.server_state.tasks:
                task.cancel(msg="tokenwire: graceful shutdown timed out")
        if not self.force_exit:
            await self.lifespan.shutdown()


def drain_of(app: Any) -> Callable[[], Awaitable[None]]:
    """The app's drain (``create_app`` sets ``app.state.drain``), or one that does nothing."""
    drain = getattr(getattr(app, "state", None), "drain", None)
    if drain is None:

        async def nothing() -> None:
            return None

        return nothing
    return drain  # type: ignore[no-any-return]
