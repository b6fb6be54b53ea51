"""Events -> tensors: the receiving side of :func:`tensor_to_frames`."""

from __future__ import annotations

import binascii
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tokenwire.events import TENSOR_CHUNK, TENSOR_END, TENSOR_HEADER, Event
from tokenwire.tensors.arrays import WIRE_DTYPES, c_strides, from_wire, to_mlx, wire_dtype
from tokenwire.tensors.errors import (
    TensorChecksumError,
    TensorChunkError,
    TensorError,
    TensorHeaderError,
    TensorTooLargeError,
    TensorTruncatedError,
    UnknownTensorError,
)
from tokenwire.tensors.frames import checksum, format_checksum
from tokenwire.tensors.wire import decode_chunk_frame

DEFAULT_MAX_BYTES = 1 << 30
_MAX_DIMS = 64  # numpy's limit


@dataclass(frozen=True, slots=True)
class ReceivedTensor:
    """A reassembled tensor with what its header said about it."""

    tensor_id: str
    array: Any  # np.ndarray, or mlx.core.array with as_mlx=True
    dtype: str  # the wire dtype name ("bfloat16" even when array is its uint16 bits)
    meta: dict[str, Any] | None


class _Pending:
    """One tensor in flight: its header and the buffer its chunks are written into."""

    __slots__ = (
        "big",
        "buffer",
        "chunk_bytes",
        "chunks",
        "dtype",
        "header",
        "meta",
        "nbytes",
        "received",
        "seen",
        "shape",
        "tensor_id",
        "view",
    )

    def __init__(self, tensor_id: str, header: dict[str, Any]) -> None:
        self.tensor_id = tensor_id
        self.header = header
        self.dtype: str = header["dtype"]
        self.shape: tuple[int, ...] = tuple(header["shape"])
        self.nbytes: int = header["nbytes"]
        self.chunk_bytes: int = header["chunk_bytes"]
        self.chunks: int = header["chunks"]
        self.big = header.get("byteorder", "little") == "big"
        self.meta: dict[str, Any] | None = header.get("meta")
        self.buffer = np.empty(self.nbytes, dtype=np.uint8)
        self.view = self.buffer.data
        # One bit per chunk: at most an eighth of the buffer, whatever chunk_bytes says.
        self.seen = bytearray((self.chunks + 7) // 8)
        self.received = 0

    def has(self, index: int) -> bool:
        return bool(self.seen[index >> 3] >> (index & 7) & 1)

    def mark(self, index: int) -> None:
        self.seen[index >> 3] |= 1 << (index & 7)
        self.received += 1

    def first_missing(self) -> int:
        bits = np.unpackbits(np.frombuffer(self.seen, np.uint8), bitorder="little")
        return int(np.flatnonzero(bits[: self.chunks] == 0)[0])


class TensorAssembler:
    """Rebuilds tensors from their events, several interleaved at once.

    Feed it every event of a stream (other kinds are ignored) as an :class:`Event`,
    as the dict a text transport delivers (``data`` in base64), as the dict
    :func:`decode_chunk_frame` returns (raw ``data``), or as a WebSocket binary
    chunk frame itself (``bytes``). :meth:`feed` returns the array when its
    ``tensor.end`` arrives, else ``None``.

    Memory is bounded: a header preallocates its tensor's buffer, and is refused
    (:class:`TensorTooLargeError`) past ``max_bytes`` for one tensor or
    ``max_total_bytes`` (default 4 x ``max_bytes``) for all tensors in flight.
    Chunks are written straight into the buffer at their offset.

    A chunk that is sent again (same index) is ignored, as is a chunk or end for
    one of the last ``remember`` tensors already completed. A rejected chunk leaves
    the buffer untouched and the tensor in flight (:meth:`discard` drops it); an
    error at ``tensor.end`` (truncated, corrupt) drops the tensor.
    """

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_total_bytes: int | None = None,
        as_mlx: bool = False,
        remember: int = 256,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_total_bytes = 4 * max_bytes if max_total_bytes is None else max_total_bytes
        self.as_mlx = as_mlx
        self._pending: dict[str, _Pending] = {}
        self._pending_bytes = 0
        self._done: deque[str] = deque(maxlen=remember)

    @property
    def pending(self) -> tuple[str, ...]:
        """Ids of the tensors in flight (header seen, end not yet)."""
        return tuple(self._pending)

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def discard(self, tensor_id: str) -> None:
        """Forget a tensor in flight (e.g. after a gap in the stream)."""
        pending = self._pending.pop(tensor_id, None)
        if pending is not None:
            self._pending_bytes -= pending.nbytes

    def clear(self) -> None:
        """Forget every tensor in flight."""
        self._pending.clear()
        self._pending_bytes = 0

    def feed(self, message: Event | Mapping[str, Any] | bytes | bytearray | memoryview) -> Any:
        """Take one event; return the finished array on its ``tensor.end``, else ``None``."""
        received = self.feed_tensor(message)
        return None if received is None else received.array

    def feed_tensor(
        self, message: Event | Mapping[str, Any] | bytes | bytearray | memoryview
    ) -> ReceivedTensor | None:
        """Like :meth:`feed`, returning the tensor with its id, dtype name and meta."""
        kind: Any
        fields: Mapping[str, Any]
        if isinstance(message, Event):
            kind, fields = message.kind, message.fields
            data = message.binary if message.binary is not None else fields.get("data")
        elif isinstance(message, Mapping):
            kind, fields, data = message.get("kind"), message, message.get("data")
        else:
            _, fields = decode_chunk_frame(message)
            kind, data = TENSOR_CHUNK, fields["data"]
        if kind == TENSOR_CHUNK:
            self._chunk(fields, data)
            return None
        if kind == TENSOR_HEADER:
            self._header(fields)
            return None
        if kind == TENSOR_END:
            return self._end(fields)
        return None

    # -- one method per event kind ---------------------------------------------

    def _header(self, fields: Mapping[str, Any]) -> None:
        tensor_id = _tensor_id(fields)
        header = _validated_header(tensor_id, fields, self.as_mlx)
        known = self._pending.get(tensor_id)
        if known is not None:
            if known.header == header:
                return  # the same header sent again
            raise TensorHeaderError(tensor_id, "a different header for a tensor in flight")
        nbytes = header["nbytes"]
        if nbytes > self.max_bytes:
            raise TensorTooLargeError(
                tensor_id, f"{nbytes} bytes exceeds the limit of {self.max_bytes} per tensor"
            )
        if self._pending_bytes + nbytes > self.max_total_bytes:
            raise TensorTooLargeError(
                tensor_id,
                f"{nbytes} more bytes would exceed the limit of {self.max_total_bytes} "
                "bytes of tensors in flight",
            )
        self._pending[tensor_id] = _Pending(tensor_id, header)
        self._pending_bytes += nbytes
        if tensor_id in self._done:
            self._done.remove(tensor_id)  # the id is reused for a new tensor

    def _chunk(self, fields: Mapping[str, Any], data: Any) -> None:
        tensor_id = _tensor_id(fields)
        pending = self._pending.get(tensor_id)
        if pending is None:
            if tensor_id in self._done:
                return
            raise UnknownTensorError(tensor_id, "chunk for a tensor whose header was not received")
        index = _int_field(fields, "index", tensor_id, TensorChunkError)
        offset = _int_field(fields, "offset", tensor_id, TensorChunkError)
        if not 0 <= index < pending.chunks:
            raise TensorChunkError(
                tensor_id, f"chunk index {index} is out of range (tensor has {pending.chunks})"
            )
        if offset != index * pending.chunk_bytes:
            raise TensorChunkError(
                tensor_id,
                f"chunk {index} at offset {offset}, expected {index * pending.chunk_bytes}",
            )
        if pending.has(index):
            return
        payload = _payload(data, tensor_id)
        size = min(pending.chunk_bytes, pending.nbytes - offset)
        if payload.nbytes != size:
            raise TensorChunkError(
                tensor_id, f"chunk {index} has {payload.nbytes} bytes, expected {size}"
            )
        pending.view[offset : offset + size] = payload
        pending.mark(index)

    def _end(self, fields: Mapping[str, Any]) -> ReceivedTensor | None:
        tensor_id = _tensor_id(fields)
        pending = self._pending.get(tensor_id)
        if pending is None:
            if tensor_id in self._done:
                return None
            raise UnknownTensorError(tensor_id, "end of a tensor whose header was not received")
        self.discard(tensor_id)
        if pending.received != pending.chunks:
            missing = pending.chunks - pending.received
            raise TensorTruncatedError(
                tensor_id,
                f"{missing} of {pending.chunks} chunks missing "
                f"(first missing: {pending.first_missing()})",
            )
        expected = fields.get("checksum")
        if expected is not None:
            if not isinstance(expected, str) or not expected.startswith("crc32:"):
                raise TensorChecksumError(tensor_id, f"unsupported checksum {expected!r}")
            actual = format_checksum(checksum(pending.buffer))
            if expected.lower() != actual:
                raise TensorChecksumError(
                    tensor_id, f"checksum mismatch: received {expected}, computed {actual}"
                )
        self._done.append(tensor_id)
        array = from_wire(pending.buffer, pending.dtype, pending.shape, pending.big)
        if self.as_mlx:
            array = to_mlx(array, pending.dtype)
        return ReceivedTensor(tensor_id, array, pending.dtype, pending.meta)


def _tensor_id(fields: Mapping[str, Any]) -> str:
    tensor_id = fields.get("tensor_id")
    if not isinstance(tensor_id, str) or not tensor_id:
        raise TensorHeaderError(None, f"event without a valid tensor_id: {tensor_id!r}")
    return tensor_id


def _int_field(
    fields: Mapping[str, Any], name: str, tensor_id: str, error: type[TensorError]
) -> int:
    value = fields.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise error(tensor_id, f"{name} must be a non-negative int, got {value!r}")
    return value


def _payload(data: Any, tensor_id: str) -> memoryview:
    if isinstance(data, str):
        try:
            data = binascii.a2b_base64(data, strict_mode=True)
        except binascii.Error as exc:
            raise TensorChunkError(tensor_id, f"chunk data is not valid base64: {exc}") from exc
    try:
        return memoryview(data).cast("B")
    except TypeError as exc:
        raise TensorChunkError(tensor_id, "chunk has no data (base64 str or bytes)") from exc


def _validated_header(tensor_id: str, fields: Mapping[str, Any], as_mlx: bool) -> dict[str, Any]:
    """The header's fields, checked for consistency, as a plain dict."""
    dtype = fields.get("dtype")
    if dtype not in WIRE_DTYPES:
        raise TensorHeaderError(tensor_id, f"unsupported dtype {dtype!r}")
    if as_mlx and dtype == "complex128":
        raise TensorHeaderError(tensor_id, "MLX has no complex128")
    shape = fields.get("shape")
    if (
        not isinstance(shape, list | tuple)
        or len(shape) > _MAX_DIMS
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
    ):
        raise TensorHeaderError(tensor_id, f"invalid shape {shape!r}")
    nbytes = _int_field(fields, "nbytes", tensor_id, TensorHeaderError)
    chunk_bytes = _int_field(fields, "chunk_bytes", tensor_id, TensorHeaderError)
    chunks = _int_field(fields, "chunks", tensor_id, TensorHeaderError)
    itemsize = wire_dtype(dtype).itemsize
    if nbytes != math.prod(shape) * itemsize:
        raise TensorHeaderError(tensor_id, f"nbytes {nbytes} does not match {dtype} {shape}")
    if chunk_bytes < 1 or chunks != -(-nbytes // chunk_bytes):
        raise TensorHeaderError(
            tensor_id, f"{chunks} chunks of {chunk_bytes} bytes do not cover {nbytes} bytes"
        )
    strides = fields.get("strides")
    if strides is not None and (
        not isinstance(strides, list | tuple) or list(strides) != c_strides(tuple(shape), itemsize)
    ):
        raise TensorHeaderError(tensor_id, f"strides {strides!r} are not C-contiguous")
    byteorder = fields.get("byteorder", "little")
    if byteorder not in ("little", "big"):
        raise TensorHeaderError(tensor_id, f"invalid byteorder {byteorder!r}")
    meta = fields.get("meta")
    if meta is not None and not isinstance(meta, Mapping):
        raise TensorHeaderError(tensor_id, "meta must be an object")
    return {
        "dtype": dtype,
        "shape": list(shape),
        "nbytes": nbytes,
        "chunk_bytes": chunk_bytes,
        "chunks": chunks,
        "byteorder": byteorder,
        "meta": dict(meta) if meta is not None else None,
    }
