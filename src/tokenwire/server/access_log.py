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
        seen: dict[str, Any] = {"status": None, "stream": match.group(1) if match else None}
        websocket = scope["type"] == "websocket"

        async def observe(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                seen["status"] = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"x-tokenwire-stream" and seen["stream"] is None:
                        seen["stream"] = value.decode("latin-1")
            elif kind == "http.response.body" and seen["stream"] is None:
                if seen["status"] == 201 and (
                    found := _BODY_STREAM.search(message.get("body", b""))
                ):
                    seen["stream"] = found.group(1).decode()
            elif kind == "websocket.accept":
                seen["status"] = 101
            elif kind == "websocket.close" and seen["status"] is None:
                seen["status"] = 403  # closed before the handshake was accepted
            elif kind == "websocket.http.response.start":
                seen["status"] = message["status"]
            await send(message)

        # It only observes: the engine.io WebSocket may write past it (server/engineio_wire.py).
        observe.__wrapped__ = send  # type: ignore[attr-defined]
        try:
            await self.app(scope, receive, observe)
        except BaseException:
            if seen["status"] is None:
                seen["status"] = 500
            raise
        finally:
            fields = {
                "method": "WS" if websocket else scope.get("method", ""),
                "path": path,
                "status": str(seen["status"] or 0),
                "duration_ms": f"{(time.perf_counter() - started) * 1000:.1f}",
            }
            if seen["stream"]:
                fields["stream"] = seen["stream"]
            log.info(" ".join(f"{k}={v}" for k, v in fields.items()), extra={"fields": fields})
