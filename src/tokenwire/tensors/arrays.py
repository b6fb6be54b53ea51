"""Host arrays: what goes on the wire and what comes back.

On the wire a tensor is its elements in C order, little-endian, with a dtype
named as numpy names it. This module turns every accepted input into such a
numpy array (copying only when the layout or byte order demands it) and turns
received bytes back into an array.

bfloat16 has no numpy dtype. On the way out, ``ml_dtypes.bfloat16`` arrays and
MLX ``bfloat16`` arrays are sent as their raw 16-bit patterns with dtype
``"bfloat16"``. On the way back a ``"bfloat16"`` tensor becomes an
``ml_dtypes.bfloat16`` array when ml_dtypes is importable, otherwise a
``uint16`` array of the same bit patterns (:func:`bfloat16_to_float32` widens it).
"""

from __future__ import annotations

import functools
import importlib
import sys
from typing import Any

import numpy as np

from tokenwire.errors import TokenwireError

BFLOAT16 = "bfloat16"

# Wire dtype names (numpy's). float128/complex256 are left out on purpose: their
# layout depends on the platform, so no other reader could decode them.
WIRE_DTYPES = frozenset(
    {
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
        "complex64",
        "complex128",
        BFLOAT16,
    }
)


_INSTALL_HINT = 'pip install "tokenwire[mlx]" (MLX for Linux is "mlx[cpu]")'


class MLXUnavailableError(TokenwireError, ImportError):
    """MLX was needed (an MLX stream, ``as_mlx=True``) but cannot be imported."""

    code = "mlx_unavailable"


def import_mlx() -> Any:
    """``mlx.core``, or :class:`MLXUnavailableError` with an install hint."""
    try:
        return importlib.import_module("mlx.core")
    except ImportError as exc:
        raise MLXUnavailableError(f"MLX is not available ({exc}); {_INSTALL_HINT}") from exc


@functools.cache
def _ml_dtypes_bfloat16() -> np.dtype[Any] | None:
    try:
        ml_dtypes = importlib.import_module("ml_dtypes")
    except ImportError:
        return None
    dtype: np.dtype[Any] = np.dtype(ml_dtypes.bfloat16)
    return dtype


def is_mlx_array(obj: object) -> bool:
    # Checked by name so that mlx is never imported for a stream that carries no MLX.
    cls = type(obj)
    return cls.__name__ == "array" and cls.__module__ == "mlx.core"


def _from_mlx(obj: Any) -> tuple[np.ndarray[Any, Any], str | None]:
    mx = importlib.import_module("mlx.core")
    if obj.dtype == mx.bfloat16:
        # numpy cannot read MLX's bfloat16 buffer format; its bits as uint16 it can.
        return np.asarray(obj.view(mx.uint16)), BFLOAT16
    # np.asarray evaluates the lazy graph and shares MLX's buffer (no copy).
    return np.asarray(obj), None


def _from_dlpack(obj: Any) -> tuple[np.ndarray[Any, Any], str | None]:
    try:
        return np.from_dlpack(obj), None
    except (BufferError, RuntimeError, TypeError, ValueError) as exc:
        torch = sys.modules.get("torch")
        if torch is not None and getattr(obj, "dtype", None) == torch.bfloat16:
            # numpy's DLPack import has no bfloat16; the same bits as int16 it has.
            return np.from_dlpack(obj.view(torch.int16)).view(np.uint16), BFLOAT16
        raise TypeError(
            f"cannot read {type(obj).__name__} through DLPack ({exc}); "
            "move it to CPU memory (and detach it) first"
        ) from exc


def _to_numpy(obj: Any) -> tuple[np.ndarray[Any, Any], str | None]:
    if isinstance(obj, np.ndarray):
        return obj, None
    if isinstance(obj, np.generic):
        return np.asarray(obj), None
    if is_mlx_array(obj):
        return _from_mlx(obj)
    if hasattr(obj, "__dlpack__"):
        return _from_dlpack(obj)
    try:
        view = memoryview(obj)
    except TypeError:
        pass
    else:
        return np.asarray(view), None
    if hasattr(obj, "__array__") or hasattr(obj, "__array_interface__"):
        return np.asarray(obj), None
    raise TypeError(
        f"cannot send {type(obj).__name__} as a tensor: expected a numpy or MLX array, "
        "an object with __dlpack__, or a buffer"
    )


def to_wire_array(obj: Any) -> tuple[np.ndarray[Any, Any], str]:
    """``obj`` as a C-contiguous little-endian numpy array, and its wire dtype name.

    Copies only a non-contiguous or big-endian input; otherwise the result shares
    the input's memory. A bfloat16 input comes back as a ``uint16`` view.
    """
    arr, name = _to_numpy(obj)
    if name is None:
        bf16 = _ml_dtypes_bfloat16()
        if bf16 is not None and arr.dtype == bf16:
            arr, name = arr.view(np.uint16), BFLOAT16
        else:
            name = arr.dtype.name
    if name not in WIRE_DTYPES:
        raise TypeError(f"cannot send dtype {arr.dtype} as a tensor (not a portable numeric type)")
    little = arr.dtype.newbyteorder("<")
    if arr.dtype != little:
        arr = arr.astype(little, order="C")
    elif not arr.flags.c_contiguous:
        arr = arr.copy(order="C")
    return arr, name


def byte_view(arr: np.ndarray[Any, Any]) -> memoryview:
    """The bytes of a C-contiguous array as a flat ``memoryview`` (format ``B``), no copy."""
    return arr.reshape(-1).view(np.uint8).data


def c_strides(shape: tuple[int, ...], itemsize: int) -> list[int]:
    """Byte strides of a C-contiguous array of ``shape``."""
    strides = []
    step = itemsize
    for side in reversed(shape):
        strides.append(step)
        step *= max(side, 1)
    return strides[::-1]


def wire_dtype(name: str) -> np.dtype[Any]:
    """The little-endian numpy dtype that holds a wire dtype's bytes (bfloat16: uint16)."""
    if name == BFLOAT16:
        return np.dtype("<u2")
    return np.dtype(name).newbyteorder("<")


def from_wire(buffer: np.ndarray[Any, Any], name: str, shape: tuple[int, ...], big: bool) -> Any:
    """The array held by ``buffer`` (flat uint8), without a copy unless ``big``."""
    dtype = wire_dtype(name)
    if big:
        arr = buffer.view(dtype.newbyteorder(">")).astype(dtype)
    else:
        arr = buffer.view(dtype)
    arr = arr.reshape(shape)
    if name == BFLOAT16:
        bf16 = _ml_dtypes_bfloat16()
        if bf16 is not None:
            arr = arr.view(bf16)
    return arr


def to_mlx(arr: np.ndarray[Any, Any], name: str) -> Any:
    """A received array as an ``mlx.core.array`` (MLX copies it into its own buffer)."""
    mx = import_mlx()
    if name == BFLOAT16:
        return mx.array(arr.view(np.uint16), dtype=mx.uint16).view(mx.bfloat16)
    # Explicit dtype: left to itself MLX narrows float64 to float32.
    return mx.array(arr, dtype=getattr(mx, "bool_" if name == "bool" else name))


def bfloat16_to_float32(bits: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Widen bfloat16 bit patterns (``uint16``) to float32 exactly."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
