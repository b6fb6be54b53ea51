"""permessage-deflate (RFC 7692) for text frames only, under uvicorn.

JSON event frames compress several-fold (the keys and the stream id repeat from
frame to frame, and the compressor keeps its window across messages), so
``tokenwire serve`` negotiates deflate by default (``TOKENWIRE_WS_COMPRESSION=0``
turns it off; the figures are in docs/tensors.md). Tensor chunks go out as
binary frames of raw array bytes, which deflate barely shrinks at full CPU cost:
RFC 7692 lets a sender leave any message uncompressed (RSV1 clear), and
:class:`TextOnlyDeflate` does that for binary messages.

Neither ASGI's ``websocket.send`` nor uvicorn has a per-message switch, and
websockets' ``PerMessageDeflate`` compresses every data frame, so the switch is
made here: :func:`protocol_class` is uvicorn's websockets-sansio protocol with
its deflate factory swapped for one that builds :class:`TextOnlyDeflate`, with
uvicorn's own parameters (12-bit windows, ``memLevel`` 5).
"""

from __future__ import annotations

from typing import Any

from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Frame, Opcode


class TextOnlyDeflate(PerMessageDeflate):
    """Compresses text messages; binary messages (and their continuations) are sent
    as they are."""

    _binary = False

    def encode(self, frame: Frame) -> Frame:
        if frame.opcode is Opcode.BINARY or (frame.opcode is Opcode.CONT and self._binary):
            self._binary = not frame.fin
            return frame
        self._binary = False
        return super().encode(frame)


class TextOnlyDeflateFactory(ServerPerMessageDeflateFactory):
    def process_request_params(self, params: Any, accepted_extensions: Any) -> Any:
        response, extension = super().process_request_params(params, accepted_extensions)
        text_only = TextOnlyDeflate.__new__(TextOnlyDeflate)
        text_only.__dict__.update(extension.__dict__)
        return response, text_only


def protocol_class() -> type:
    """uvicorn's websockets-sansio protocol, compressing text messages only."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    class TextDeflateProtocol(WebSocketsSansIOProtocol):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.conn.available_extensions = [
                _text_only(f) if type(f) is ServerPerMessageDeflateFactory else f
                for f in self.conn.available_extensions or ()
            ]

    return TextDeflateProtocol


def _text_only(factory: ServerPerMessageDeflateFactory) -> TextOnlyDeflateFactory:
    text_only = TextOnlyDeflateFactory.__new__(TextOnlyDeflateFactory)
    text_only.__dict__.update(factory.__dict__)
    return text_only
