"""Tensor -> events: ``tensor.header``, ``tensor.chunk`` * n, ``tensor.end``."""

from __future__ import annotations

import math
import secrets
import zlib
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
)
from dataclasses import dataclass
from typing import Any

import numpy as np

from tokenwire.events import TENSOR_CHUNK, TENSOR_END, TENSOR_HEADER, Event
from tokenwire.tensors.arrays import (
    WIRE_DTYPES,
    byte_view,
    c_strides,
    is_mlx_array,
    to_wire_array,
    wire_dtype,
)

DEFAULT_CHUNK_BYTES = 256 * 1024
MAX_TENSOR_ID_BYTES = 0xFFFF  # the binary chunk frame's u16 length field

IdFactory = Callable[[], str]
MetaArg = Mapping[str, Any] | Callable[[Any], Mapping[str, Any] | None] | None


def new_tensor_id() -> str:
    """A short random URL-safe tensor id (72 random bits; ids are scoped to a stream)."""
    return "tn_" + secrets.token_urlsafe(9)


def checksum(data: Any, crc: int = 0) -> int:
    """CRC-32 (zlib, the same as JS ``crc32`` implementations) of a bytes-like object."""
    return zlib.crc32(data, crc)


def format_checksum(crc: int) -> str:
    return f"crc32:{crc:08x}"


def is_tensor(obj: object) -> bool:
    """Whether :func:`tensors_to_frame_stream` frames ``obj``.

    True for numpy and MLX arrays, objects with ``__dlpack__`` (torch, JAX, CuPy
    tensors) and ``memoryview``. False for everything else, including numpy
    scalars, ``bytes`` and ``bytearray``: those pass through unchanged
    (:func:`tensor_to_frames` still accepts any buffer explicitly).
    """
    if isinstance(obj, np.ndarray | memoryview):
        return True
    if isinstance(obj, str | bytes | bytearray | np.generic | Event):
        return False
    return is_mlx_array(obj) or hasattr(obj, "__dlpack__")


def tensor_to_frames(
    array: Any,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    tensor_id: str | None = None,
    meta: Mapping[str, Any] | None = None,
    id_factory: IdFactory | None = None,
) -> Iterator[Event]:
    """Frame one tensor as a ``tensor.header`` event, its ``tensor.chunk`` events and a
    ``tensor.end`` event.

    ``array`` is a numpy array, an ``mlx.core.array``, anything with ``__dlpack__``
    on the CPU (a torch tensor) or any buffer (``memoryview``, ``bytearray``).

    Layout: the wire always carries the elements in C order, little-endian. A
    non-contiguous input (transposed, sliced with steps, Fortran order) is copied
    to C order once, and a big-endian input is byte-swapped in the same copy;
    every other input is sent straight from its own memory. The header's
    ``strides`` are therefore the C-contiguous byte strides and its ``byteorder``
    is ``"little"``.

    Chunking is lazy: each chunk's ``binary`` is a ``memoryview`` slice of the
    array's bytes, taken when the iterator reaches it, so the chunks reference the
    array: do not modify it until its events are delivered. ``chunk_bytes`` is
    rounded down to a multiple of the item size (at least one item), so every
    chunk holds whole elements; the header gives the value used. An empty array
    has no chunks.

    ``tensor.end`` carries ``checksum`` = ``"crc32:<8 hex digits>"``: the CRC-32
    (zlib's, as computed by any JS crc32) of all the tensor's bytes, computed
    chunk by chunk as they are produced.

    The conversion happens now, so an unsupported input raises here
    (``TypeError``) rather than when iterating. Evaluating a lazy MLX array happens
    here too.
    """
    if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be a positive int, got {chunk_bytes!r}")
    arr, dtype = to_wire_array(array)
    tensor_id = _checked_id(tensor_id, id_factory)
    itemsize = arr.itemsize
    step = max(itemsize, chunk_bytes - chunk_bytes % itemsize)
    header = _header(tensor_id, list(arr.shape), dtype, itemsize, arr.nbytes, step, meta)
    return _frames(header, tensor_id, byte_view(arr), step)


def tensor_frames_from_chunks(
    shape: Iterable[int],
    dtype: str,
    chunks: Iterable[Any],
    *,
    chunk_bytes: int,
    tensor_id: str | None = None,
    meta: Mapping[str, Any] | None = None,
    id_factory: IdFactory | None = None,
) -> Iterator[Event]:
    """Frame a tensor that is produced piece by piece, never whole in memory.

    ``chunks`` yields the tensor's bytes (elements in C order, little-endian) as
    bytes-like objects: each exactly ``chunk_bytes`` long except the last, which
    holds the rest. ``chunk_bytes`` must be a multiple of the item size of
    ``dtype`` (a wire dtype name: ``"float32"``, ``"bfloat16"`` …). The chunks are
    pulled one at a time as the frames are iterated, so a producer behind a
    byte window (docs/tensors.md, flow control) holds at most the window, not the tensor.

    The events are the same as :func:`tensor_to_frames` makes for the same bytes.
    A chunk of the wrong size, or too few or too many chunks, raises
    ``ValueError`` when it is reached (the tensor's end is then never sent).
    """
    if dtype not in WIRE_DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}")
    dims = [int(side) for side in shape]
    if any(side < 0 for side in dims):
        raise ValueError(f"invalid shape {dims!r}")
    itemsize = wire_dtype(dtype).itemsize
    if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be a positive int, got {chunk_bytes!r}")
    if chunk_bytes % itemsize:
        raise ValueError(f"chunk_bytes {chunk_bytes} is not a multiple of {dtype}'s {itemsize}")
    tensor_id = _checked_id(tensor_id, id_factory)
    nbytes = math.prod(dims) * itemsize
    header = _header(tensor_id, dims, dtype, itemsize, nbytes, chunk_bytes, meta)
    return _frames_from(header, tensor_id, iter(chunks), nbytes, chunk_bytes)


def _frames_from(
    header: Event, tensor_id: str, chunks: Iterator[Any], nbytes: int, step: int
) -> Iterator[Event]:
    yield header
    crc = 0
    try:
        for index, offset in enumerate(range(0, nbytes, step)):
            piece = next(chunks, None)
            if piece is None:
                raise ValueError(f"tensor {tensor_id!r}: chunk {index} is missing")
            view = memoryview(piece).cast("B")
            expected = min(step, nbytes - offset)
            if len(view) != expected:
                raise ValueError(
                    f"tensor {tensor_id!r}: chunk {index} has {len(view)} bytes, "
                    f"expected {expected}"
                )
            crc = zlib.crc32(view, crc)
            yield Event(
                TENSOR_CHUNK,
                {"tensor_id": tensor_id, "index": index, "offset": offset},
                binary=view,
            )
        if next(chunks, None) is not None:
            raise ValueError(f"tensor {tensor_id!r}: more chunks than its {nbytes} bytes")
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    yield Event(TENSOR_END, {"tensor_id": tensor_id, "checksum": format_checksum(crc)})


def _checked_id(tensor_id: str | None, id_factory: IdFactory | None) -> str:
    if tensor_id is None:
        tensor_id = (id_factory or new_tensor_id)()
    if not isinstance(tensor_id, str) or not tensor_id:
        raise ValueError(f"tensor_id must be a non-empty str, got {tensor_id!r}")
    if len(tensor_id.encode()) > MAX_TENSOR_ID_BYTES:
        raise ValueError(f"tensor_id is longer than {MAX_TENSOR_ID_BYTES} bytes")
    return tensor_id


def _header(
    tensor_id: str,
    shape: list[int],
    dtype: str,
    itemsize: int,
    nbytes: int,
    step: int,
    meta: Mapping[str, Any] | None,
) -> Event:
    return Event(
        TENSOR_HEADER,
        {
            "tensor_id": tensor_id,
            "shape": shape,
            "dtype": dtype,
            "strides": c_strides(tuple(shape), itemsize),
            "byteorder": "little",
            "nbytes": nbytes,
            "chunk_bytes": step,
            "chunks": -(-nbytes // step),
            "meta": dict(meta) if meta is not None else None,
        },
    )


def _frames(header: Event, tensor_id: str, payload: memoryview, step: int) -> Iterator[Event]:
    yield header
    crc = 0
    for index, offset in enumerate(range(0, len(payload), step)):
        piece = payload[offset : offset + step]
        crc = zlib.crc32(piece, crc)
        yield Event(
            TENSOR_CHUNK, {"tensor_id": tensor_id, "index": index, "offset": offset}, binary=piece
        )
    yield Event(TENSOR_END, {"tensor_id": tensor_id, "checksum": format_checksum(crc)})


@dataclass(frozen=True, slots=True)
class TensorOptions:
    """How a producer's tensors are framed (chunk size, dtype on the wire).

    ``meta`` is a mapping put in every header, or a callable that receives the
    tensor and returns its header's ``meta``.
    """

    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    id_factory: IdFactory | None = None
    meta: MetaArg = None


async def tensors_to_frame_stream(
    source: AsyncIterable[Any] | Iterable[Any],
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    id_factory: IdFactory | None = None,
    meta: MetaArg = None,
) -> AsyncGenerator[Any, None]:
    """Pass a producer's items through, framing every tensor (:func:`is_tensor`) with
    :func:`tensor_to_frames`. Strings, events and anything else pass unchanged.

    Closing this generator closes ``source`` when it has ``aclose``/``close``.
    """
    iterator = aiter(source) if isinstance(source, AsyncIterable) else _from_sync(source)
    try:
        async for item in iterator:
            if not is_tensor(item):
                yield item
                continue
            item_meta = meta(item) if callable(meta) else meta
            for event in tensor_to_frames(
                item, chunk_bytes=chunk_bytes, meta=item_meta, id_factory=id_factory
            ):
                yield event
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


async def _from_sync(items: Iterable[Any]) -> AsyncGenerator[Any, None]:
    iterator = iter(items)
    try:
        for item in iterator:
            yield item
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
