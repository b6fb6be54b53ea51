"""The ``tensor`` pipeline: synthetic tensors of any size, for tests and benchmarks.

``POST /v1/streams {"pipeline": "tensor", "params": {…}}`` streams ``count``
tensors of ``nbytes`` bytes (or of ``shape``) and ``dtype``, in chunks of
``chunk_bytes`` (raised to at least :data:`MIN_CHUNK_BYTES`). The bytes are never
materialised whole: each chunk is made when the stream's byte window lets the
producer go on, so a 512 MiB tensor costs the server its window and retention,
not 512 MiB (docs/tensors.md, flow control).

The content is a pure function of ``(seed, byte offset)`` (:func:`pattern_bytes`),
so a client checks what it received without the server sending anything else:

- ``fill: "random"`` (default): splitmix64 words, ``seed + k`` for tensor ``k``;
- ``fill: "repeat"``: one random block of ``chunk_bytes`` repeated, costing the
  producer nothing per chunk (what ``bench/tensor_bench.py`` measures with).

``start_delay_ms`` holds the first event back: the byte window throttles a
producer only while someone is subscribed, so a client that POSTs and then
GETs the events of a large tensor gives itself time to attach.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import numpy as np

from tokenwire.errors import InvalidRequestError
from tokenwire.examples.params import check_names, choice_param, int_param, shape_param
from tokenwire.tensors import tensor_frames_from_chunks
from tokenwire.tensors.arrays import WIRE_DTYPES, wire_dtype

MAX_TENSOR_BYTES = 512 * 1024 * 1024
"""The most bytes one request may ask for, all tensors together."""
MAX_CHUNK_BYTES = 16 * 1024 * 1024
MIN_CHUNK_BYTES = 4096
"""512 MiB in chunks of this size is 131,072 events, not 536 million."""
DEFAULT_NBYTES = 1024 * 1024
DEFAULT_CHUNK_BYTES = 256 * 1024
FILLS = ("random", "repeat")
PARAMS = ("nbytes", "shape", "dtype", "chunk_bytes", "seed", "fill", "count", "start_delay_ms")

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


def pattern_bytes(seed: int, offset: int, size: int) -> np.ndarray[Any, Any]:
    """Bytes ``[offset, offset + size)`` of the ``random`` fill for ``seed``, as uint8.

    Word ``k`` (bytes ``8k .. 8k+7``, little-endian) is splitmix64 of
    ``seed * golden + (k + 1) * golden``: any slice is computed on its own.
    """
    first, stop = offset // 8, -(-(offset + size) // 8)
    words = np.arange(first + 1, stop + 1, dtype=np.uint64)
    words *= _GOLDEN
    words += np.uint64((seed * int(_GOLDEN)) & _MASK64)
    words ^= words >> np.uint64(30)
    words *= _MIX1
    words ^= words >> np.uint64(27)
    words *= _MIX2
    words ^= words >> np.uint64(31)
    start = offset - first * 8
    return words.astype("<u8", copy=False).view(np.uint8)[start : start + size]


def pattern_chunks(seed: int, nbytes: int, chunk_bytes: int, fill: str) -> Iterator[Any]:
    """The chunks of one tensor, made one at a time."""
    if fill == "repeat":
        block = pattern_bytes(seed, 0, min(chunk_bytes, nbytes)).tobytes()
        for offset in range(0, nbytes, chunk_bytes):
            size = min(chunk_bytes, nbytes - offset)
            yield block if size == len(block) else block[:size]
        return
    for offset in range(0, nbytes, chunk_bytes):
        yield pattern_bytes(seed, offset, min(chunk_bytes, nbytes - offset))


def expected_bytes(meta: Mapping[str, Any], nbytes: int, chunk_bytes: int) -> bytes:
    """What a tensor of this pipeline holds, from its header's ``meta`` (for checks)."""
    return b"".join(
        bytes(c) for c in pattern_chunks(meta["seed"], nbytes, chunk_bytes, meta["fill"])
    )


class TensorParams:
    """The validated ``params`` of the ``tensor`` pipeline."""

    __slots__ = ("chunk_bytes", "count", "dtype", "fill", "seed", "shape", "start_delay_ms")

    def __init__(self, params: Mapping[str, Any]) -> None:
        check_names("tensor", params, PARAMS)
        dtype = params.get("dtype", "uint8")
        if not isinstance(dtype, str) or dtype not in WIRE_DTYPES:
            raise InvalidRequestError(f"'dtype' must be one of {', '.join(sorted(WIRE_DTYPES))}")
        self.dtype: str = dtype
        itemsize = wire_dtype(dtype).itemsize
        shape = shape_param(params, "shape", max_dims=8)
        if shape is not None and "nbytes" in params:
            raise InvalidRequestError("give 'nbytes' or 'shape', not both")
        if shape is None:
            nbytes = int_param(params, "nbytes", DEFAULT_NBYTES, 0, MAX_TENSOR_BYTES)
            if nbytes % itemsize:
                raise InvalidRequestError(
                    f"'nbytes' must be a multiple of {dtype}'s {itemsize} bytes"
                )
            shape = [nbytes // itemsize]
        self.shape: list[int] = shape
        self.count = int_param(params, "count", 1, 1, 64)
        if self.count * self.nbytes > MAX_TENSOR_BYTES:
            raise InvalidRequestError(
                f"{self.count} tensors of {self.nbytes} bytes exceed the limit of "
                f"{MAX_TENSOR_BYTES} bytes per request"
            )
        chunk_bytes = int_param(params, "chunk_bytes", DEFAULT_CHUNK_BYTES, 1, MAX_CHUNK_BYTES)
        # Every chunk is an event for every subscriber: smaller ones are raised to the
        # minimum (the header says the size used), so a request cannot ask for millions.
        chunk_bytes = max(chunk_bytes, MIN_CHUNK_BYTES)
        # As tensor_to_frames does: whole elements per chunk, at least one.
        self.chunk_bytes = max(itemsize, chunk_bytes - chunk_bytes % itemsize)
        self.seed = int_param(params, "seed", 0, 0, 2**63 - 1)
        self.fill = choice_param(params, "fill", "random", FILLS)
        self.start_delay_ms = int_param(params, "start_delay_ms", 0, 0, 10_000)

    @property
    def nbytes(self) -> int:
        # math.prod of a long list of big sides is a big int: checked against the cap.
        return math.prod(self.shape) * wire_dtype(self.dtype).itemsize


def tensor_pipeline(params: Mapping[str, Any]) -> AsyncIterator[Any]:
    """The ``tensor`` pipeline (validates now, streams when iterated)."""
    return _stream(TensorParams(params))


async def _stream(p: TensorParams) -> AsyncIterator[Any]:
    if p.start_delay_ms:
        await asyncio.sleep(p.start_delay_ms / 1000)
    for k in range(p.count):
        seed = p.seed + k
        chunks = pattern_chunks(seed, p.nbytes, p.chunk_bytes, p.fill)
        meta = {"index": k, "seed": seed, "fill": p.fill}
        frames = tensor_frames_from_chunks(
            p.shape, p.dtype, chunks, chunk_bytes=p.chunk_bytes, tensor_id=f"t{k}", meta=meta
        )
        for n, event in enumerate(frames):
            yield event
            if n % 64 == 63:
                # The hub awaits only when the window is full: let other streams run.
                await asyncio.sleep(0)
