"""HTTP and WebSocket access lines, an ASGI middleware around the whole app.

One line per request when its response ends (for a stream: when the stream's
connection closes), on the ``tokenwire.access`` logger::

    method=GET path=/v1/streams/st_…/events status=200 duration_ms=812.4 stream=st_…

``stream`` is the stream the request was about: from the path, the
``X-Tokenwire-Stream`` response header, or the ``id`` of the 201 that created it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("tokenwire.access")

_PATH_STREAM = re.compile(r"/v1/streams/(st_[A-Za-z0-9_-]+)")
_BODY_STREAM = re.compile(rb'"id"\s*:\s*"(st_[A-Za-z0-9_-]+)"')


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)  # create_app()'s .state, .router, .sio

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path: str = scope.get("path", "")
        match = _PATH_STREAM.search(path)
        # Two cells and a plain ``def`` (no frame per message): this closure lives as
        # long as the connection (docs/performance.md, idle connections).
        status: int | None = None
        stream: str | None = match.group(1) if match else None
        websocket = scope["type"] == "websocket"

        def observe(message: Message) -> Awaitable[None]:
            nonlocal status, stream
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"x-tokenwire-stream" and stream is None:
                        stream = value.decode("latin-1")
            elif kind == "http.response.body" and stream is None:
                if status == 201 and (found := _BODY_STREAM.search(message.get("body", b""))):
                    stream = found.group(1).decode()
            elif kind == "websocket.accept":
                status = 101
            elif kind == "websocket.close" and status is None:
                status = 403  # closed before the handshake was accepted
            elif kind == "websocket.http.response.start":
                status = message["status"]
            return send(message)

        # It only observes: the direct writers may write past it (core/http_direct.py,
        # ``body_send``, which finds ``send`` in its closure).
        try:
            await self.app(scope, receive, observe)
        except BaseException:
            if status is None:
                status = 500
            raise
        finally:
            fields = {
                "method": "WS" if websocket else scope.get("method", ""),
                "path": path,
                "status": str(status or 0),
                "duration_ms": f"{(time.perf_counter() - started) * 1000:.1f}",
            }
            if stream:
                fields["stream"] = stream
            log.info(" ".join(f"{k}={v}" for k, v in fields.items()), extra={"fields": fields})
