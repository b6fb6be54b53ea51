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
(``_Socket.write`` in server/socketio_app.py, and :meth:`Wire.takes`): the
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
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import OPEN

from tokenwire.core.http_direct import body_send

__all__ = ["DirectWebSocket", "Wire"]


class Wire:
    """The uvicorn WebSocket connection under one engine.io socket."""

    __slots__ = ("_proto",)

    def __init__(self, proto: WebSocketsSansIOProtocol) -> None:
        self._proto = proto

    @classmethod
    def of(cls, send: Any) -> Wire | None:
        """The connection behind an ASGI ``send``, if it is uvicorn's websockets-sansio
        protocol without extensions (under the wrappers that only observe a send,
        as ``body_send`` finds them)."""
        proto = getattr(body_send(send), "__self__", None)
        if not isinstance(proto, WebSocketsSansIOProtocol) or proto.conn.extensions:
            return None
        return cls(proto)

    def takes(self) -> bool:
        """Open, and below the transport's high-water mark: a write goes out now."""
        proto = self._proto
        return (
            proto.writable.is_set()
            and proto.conn._state is OPEN  # the ``state`` property, without the call
            and not (proto.close_sent or proto.disconnected)
        )

    @property
    def writable(self) -> bool:
        """Below the transport's high-water mark (uvicorn's flow control)."""
        return self._proto.writable.is_set()

    async def wait_writable(self) -> None:
        await self._proto.writable.wait()

    def write(self, frames: bytes) -> None:
        self._proto.transport.write(frames)


class DirectWebSocket(eio_asgi.WebSocket):  # type: ignore[misc]
    """engine.io's ASGI WebSocket, which also gives its socket the :class:`Wire` its
    frames can be written to (``socket.wire``; None where there is none)."""

    async def __call__(self, environ: dict[str, Any]) -> str:
        self.asgi_receive = environ["asgi.receive"]
        self.asgi_send = environ["asgi.send"]
        await self.asgi_send({"type": "websocket.accept"})
        socket = getattr(self.handler, "__self__", None)
        if socket is not None:
            socket.wire = Wire.of(self.asgi_send)
        try:
            await self.handler(self)
        finally:
            if socket is not None:
                socket.wire = None
        return ""
