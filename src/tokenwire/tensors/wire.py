"""WebSocket binary frame for one ``tensor.chunk`` (docs/protocol.md, "Binary tensor
chunk frames"). Big-endian fixed header, then the ids, then the raw chunk bytes::

    0  u8   version (1)        12  u32  chunk index
    1  u8   S, stream id len   16  u64  byte offset of the chunk
    2  u16  T, tensor id len   24  S    stream id (ASCII)
    4  u64  seq                24+S T   tensor id (UTF-8), then the chunk bytes
"""

from __future__ import annotations

import binascii
import struct
from typing import Any

from tokenwire.events import TENSOR_CHUNK, Event
from tokenwire.tensors.errors import TensorFrameError

CHUNK_FRAME_VERSION = 1
_HEADER = struct.Struct(">BBHQIQ")
HEADER_SIZE = _HEADER.size  # 24


def encode_chunk_frame_parts(stream_id: str, event: Event) -> tuple[bytes, memoryview]:
    """The frame as ``(prefix, payload)``: the fixed header and ids, then the chunk bytes
    uncopied. For a transport that can write both without joining them."""
    if event.kind != TENSOR_CHUNK:
        raise ValueError(f"only tensor.chunk events have a binary frame, not {event.kind!r}")
    fields = event.fields
    sid = stream_id.encode("ascii")
    tid = str(fields["tensor_id"]).encode()
    if len(sid) > 0xFF:
        raise ValueError("stream id is longer than 255 bytes")
    if len(tid) > 0xFFFF:
        raise ValueError("tensor id is longer than 65535 bytes")
    payload = event.binary
    if payload is None:
        # An event rebuilt with Event.from_dict keeps its payload base64 in fields.
        data = fields.get("data")
        if data is None:
            raise ValueError("tensor.chunk event has no payload")
        payload = binascii.a2b_base64(data) if isinstance(data, str) else data
    try:
        head = _HEADER.pack(
            CHUNK_FRAME_VERSION,
            len(sid),
            len(tid),
            event.seq,
            fields["index"],
            fields["offset"],
        )
    except struct.error as exc:
        raise ValueError(f"tensor.chunk field out of range for the binary frame: {exc}") from exc
    return head + sid + tid, memoryview(payload).cast("B")


def encode_chunk_frame(stream_id: str, event: Event) -> bytes:
    """One WebSocket binary frame for a ``tensor.chunk`` event (one copy of the payload)."""
    prefix, payload = encode_chunk_frame_parts(stream_id, event)
    return b"".join((prefix, payload))


def decode_chunk_frame(buf: bytes | bytearray | memoryview) -> tuple[str, dict[str, Any]]:
    """``(stream_id, event dict)`` from a binary chunk frame.

    The dict is what the text transports give (``seq``, ``kind``, ``tensor_id``,
    ``index``, ``offset``, ``data``) except that ``data`` is the raw chunk bytes, as
    a ``memoryview`` into ``buf`` (no copy). :class:`TensorAssembler` accepts it.
    """
    view = memoryview(buf).cast("B")
    if len(view) < HEADER_SIZE:
        raise TensorFrameError(None, f"chunk frame of {len(view)} bytes is shorter than its header")
    version, s_len, t_len, seq, index, offset = _HEADER.unpack_from(view)
    if version != CHUNK_FRAME_VERSION:
        raise TensorFrameError(None, f"unsupported chunk frame version {version}")
    start = HEADER_SIZE + s_len + t_len
    if len(view) < start:
        raise TensorFrameError(None, "chunk frame is shorter than its stream and tensor ids")
    try:
        stream_id = bytes(view[HEADER_SIZE : HEADER_SIZE + s_len]).decode("ascii")
        tensor_id = bytes(view[HEADER_SIZE + s_len : start]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TensorFrameError(None, f"chunk frame id is not valid text: {exc}") from exc
    return stream_id, {
        "seq": seq,
        "kind": TENSOR_CHUNK,
        "tensor_id": tensor_id,
        "index": index,
        "offset": offset,
        "data": view[start:],
    }
