"""Tensors over event streams.

A tensor travels as three kinds of sequenced events (docs/protocol.md)::

    tensor.header {tensor_id, shape, dtype, strides, byteorder, nbytes, chunk_bytes, chunks, meta}
    tensor.chunk  {tensor_id, index, offset}  + the raw bytes (Event.binary)
    tensor.end    {tensor_id, checksum}       checksum = "crc32:<8 hex digits>"

The bytes are the elements in C order, little-endian; chunk ``i`` holds bytes
``[i * chunk_bytes, (i + 1) * chunk_bytes)``. Text transports carry a chunk's
bytes as base64 ``data``; WebSocket sends them as a binary frame (:mod:`.wire`).

- :func:`tensor_to_frames`, :func:`tensors_to_frame_stream`: producer side;
  :func:`tensor_frames_from_chunks` for a tensor made piece by piece.
- :class:`TensorAssembler`: consumer side, any transport, tensors interleaved.
- :func:`encode_chunk_frame`, :func:`decode_chunk_frame`: the WebSocket binary frame.
"""

from tokenwire.tensors.arrays import BFLOAT16, WIRE_DTYPES, bfloat16_to_float32
from tokenwire.tensors.assembler import DEFAULT_MAX_BYTES, ReceivedTensor, TensorAssembler
from tokenwire.tensors.errors import (
    TensorChecksumError,
    TensorChunkError,
    TensorError,
    TensorFrameError,
    TensorHeaderError,
    TensorTooLargeError,
    TensorTruncatedError,
    UnknownTensorError,
)
from tokenwire.tensors.frames import (
    DEFAULT_CHUNK_BYTES,
    TensorOptions,
    is_tensor,
    new_tensor_id,
    tensor_frames_from_chunks,
    tensor_to_frames,
    tensors_to_frame_stream,
)
from tokenwire.tensors.wire import (
    CHUNK_FRAME_VERSION,
    decode_chunk_frame,
    encode_chunk_frame,
    encode_chunk_frame_parts,
)

__all__ = [
    "BFLOAT16",
    "CHUNK_FRAME_VERSION",
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_MAX_BYTES",
    "WIRE_DTYPES",
    "ReceivedTensor",
    "TensorAssembler",
    "TensorChecksumError",
    "TensorChunkError",
    "TensorError",
    "TensorFrameError",
    "TensorHeaderError",
    "TensorOptions",
    "TensorTooLargeError",
    "TensorTruncatedError",
    "UnknownTensorError",
    "bfloat16_to_float32",
    "decode_chunk_frame",
    "encode_chunk_frame",
    "encode_chunk_frame_parts",
    "is_tensor",
    "new_tensor_id",
    "tensor_frames_from_chunks",
    "tensor_to_frames",
    "tensors_to_frame_stream",
]
