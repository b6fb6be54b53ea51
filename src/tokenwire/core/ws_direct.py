"""Writing WebSocket text frames without the ASGI ``send``, for the broadcast path.

Under uvicorn's websockets-sansio protocol (uvicorn's default, and ``tokenwire
serve``'s with compression off), ``send`` of a text message is the frame
(RFC 6455 §5.2: FIN, opcode 1, a server's frames unmasked) and one
``transport.write``; it waits only while the protocol has paused writing. A
broadcast (core/broadcast.py) frames a batch's messages once and writes the same
bytes to every live connection through :class:`SansIOSocket`, which says it
cannot take a write whenever ``send`` would wait, refuse or frame differently:
before the handshake, once a close is sent, with an extension negotiated
(permessage-deflate compresses per connection), or with writing paused.
"""

from __future__ import annotations

import struct
from typing import Any

from starlette.types import Send
from websockets.protocol import OPEN

from tokenwire.core.http_direct import body_send

Messages = list[str | bytes]


def text_frames(messages: Messages) -> bytes:
    """The WebSocket frames of ``messages`` (text, each one unfragmented frame)."""
    out: list[bytes] = []
    for message in messages:
        data = message.encode() if isinstance(message, str) else message
        n = len(data)
        if n < 126:
            out.append(b"\x81%c" % n)
        elif n < 1 << 16:
            out.append(struct.pack("!BBH", 0x81, 126, n))
        else:
            out.append(struct.pack("!BBQ", 0x81, 127, n))
        out.append(data)
    return b"".join(out)


class SansIOSocket:
    """uvicorn's websockets-sansio connection under an ASGI ``send``: what a direct
    write needs of it. The WebSocket broadcast (server/ws.py) and Socket.IO's
    pre-encoded frames (server/engineio_wire.py) both write through it."""

    __slots__ = ("_proto",)

    def __init__(self, proto: Any) -> None:
        self._proto = proto

    def writable(self) -> bool:
        """A write now goes out as ``send`` would write it: the handshake done, the
        connection open (no close received or sent), no extension negotiated
        (permessage-deflate frames differ per connection) and writing not paused."""
        p = self._proto
        return bool(
            p.handshake_complete
            and p.conn._state is OPEN  # the ``state`` property, without the call
            and not (p.close_sent or p.disconnected or p.conn.extensions)
            and p.writable.is_set()
            and not p.transport.is_closing()
        )

    @property
    def compressed(self) -> bool:
        """An extension (permessage-deflate) was negotiated: never writable."""
        return bool(self._proto.conn.extensions)

    @property
    def paused(self) -> bool:
        """uvicorn's flow control: the transport's buffer is past its high-water mark."""
        return not self._proto.writable.is_set()

    async def wait_resumed(self) -> None:
        await self._proto.writable.wait()

    def write(self, data: bytes) -> None:
        self._proto.transport.write(data)


def direct_socket(send: Send) -> SansIOSocket | None:
    """A direct writer of the connection ``send`` belongs to; None under any other
    WebSocket implementation, or behind a middleware that changes messages."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    proto = getattr(body_send(send), "__self__", None)
    if not isinstance(proto, WebSocketsSansIOProtocol):
        return None
    return SansIOSocket(proto)
