"""Errors raised while framing or reassembling tensors.

::

    TokenwireError                   (tokenwire.errors)
    └── TensorError                  tensor_id, reason
         ├── TensorHeaderError       a header that is malformed, unsupported or conflicting
         │    └── TensorTooLargeError  nbytes over the assembler's bound
         ├── UnknownTensorError      a chunk or end for a tensor whose header never came
         ├── TensorChunkError        index out of range, offset or size mismatch, bad payload
         ├── TensorTruncatedError    tensor.end arrived with chunks missing
         ├── TensorChecksumError     the reassembled bytes do not match the checksum (corrupt)
         └── TensorFrameError        a malformed WebSocket binary chunk frame

Errors a producer makes by calling the framing API wrongly (an unsupported
object or dtype, a bad ``chunk_bytes``) are plain ``TypeError`` / ``ValueError``.
"""

from __future__ import annotations

from tokenwire.errors import TokenwireError


class TensorError(TokenwireError):
    """A tensor stream cannot be reassembled. ``tensor_id`` is ``None`` when unknown."""

    status = 422
    code = "tensor_error"

    def __init__(self, tensor_id: str | None, reason: str) -> None:
        super().__init__(reason)
        self.args = (tensor_id, reason)
        self.tensor_id = tensor_id
        self.reason = reason

    def __str__(self) -> str:
        if self.tensor_id is None:
            return self.reason
        return f"tensor {self.tensor_id!r}: {self.reason}"


class TensorHeaderError(TensorError):
    """A ``tensor.header`` that is malformed, unsupported or conflicts with one in flight."""


class TensorTooLargeError(TensorHeaderError):
    """A ``tensor.header`` announces more bytes than the assembler accepts."""


class UnknownTensorError(TensorError):
    """A ``tensor.chunk`` or ``tensor.end`` for a tensor with no header in flight."""


class TensorChunkError(TensorError):
    """A ``tensor.chunk`` that does not fit its header (index, offset, size, payload)."""


class TensorTruncatedError(TensorError):
    """``tensor.end`` arrived before every chunk did."""


class TensorChecksumError(TensorError):
    """The reassembled bytes do not match the checksum in ``tensor.end``."""


class TensorFrameError(TensorError):
    """A WebSocket binary chunk frame that does not follow docs/protocol.md."""
