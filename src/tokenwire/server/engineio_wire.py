"""Pre-encoded Socket.IO frames written straight to an engine.io WebSocket.

python-engine.io sends every packet through the socket's queue, a writer task per
socket (``asyncio.wait_for`` on the queue, a timer per poll), an encode, ASGI's
``websocket.send`` and a WebSocket frame built per call: per delivery to one
live socket, that was most of tokenwire's Python CPU (docs/performance.md). A
server's frames are never masked (RFC 6455, 5.1), so the frame bytes of a packet
are the same for every socket: the encoder builds them once per event
(``Packets.frames``) and a live socket's reader writes them to its uvicorn
transport as they are, as Node's socket.io does with ``wsPreEncoded``.

The direct write is taken only where it cannot reorder or corrupt the stream
(``_Socket.write`` in server/socketio_app.py, and ``SansIOSocket.writable``): the
socket is upgraded to WebSocket, engine.io's queue is empty and its writer is
waiting for it (so no packet of engine.io's, an ack, a ping, an open frame, is
ahead), no control write holds the socket's lock, the
connection is open and its transport below its high-water mark, and no
permessage-deflate was negotiated (compressed frames differ per connection).
Otherwise the packets go through engine.io's queue as before. A polling socket
always goes through the queue.
"""

from __future__ import annotations

from typing import Any

from engineio.async_drivers import asgi as eio_asgi  # type: ignore[import-untyped]

from tokenwire.core.ws_direct import direct_socket

__all__ = ["DirectWebSocket"]


class DirectWebSocket(eio_asgi.WebSocket):  # type: ignore[misc]
    """engine.io's ASGI WebSocket, which also gives its socket the connection its
    frames can be written to (``socket.wire``, a
    :class:`~tokenwire.core.ws_direct.SansIOSocket`; None where there is none)."""

    async def __call__(self, environ: dict[str, Any]) -> str:
        self.asgi_receive = environ["asgi.receive"]
        self.asgi_send = environ["asgi.send"]
        await self.asgi_send({"type": "websocket.accept"})
        socket = getattr(self.handler, "__self__", None)
        if socket is not None:
            wire = direct_socket(self.asgi_send)
            # Accepted: what was negotiated is known. A compressed socket never
            # takes shared frames; it goes through the queue without asking.
            socket.wire = None if wire is None or wire.compressed else wire
        try:
            await self.handler(self)
        finally:
            if socket is not None:
                socket.wire = None
        return ""
