"""MLX: arrays through the tensor frames, and running producers in an MLX stream."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tokenwire.events import TENSOR_CHUNK, TENSOR_HEADER, Event, dumps, loads
from tokenwire.mlx_context import (
    MLXUnavailableError,
    ProducerOptions,
    default_device,
    default_stream,
    import_mlx,
    new_stream,
    run_in_stream,
    with_stream,
)
from tokenwire.tensors import (
    TensorAssembler,
    TensorHeaderError,
    TensorOptions,
    decode_chunk_frame,
    encode_chunk_frame,
    is_tensor,
    tensor_to_frames,
)
from tokenwire.tensors import arrays as tensor_arrays


def deliver(event: Event) -> Any:
    if event.kind == TENSOR_CHUNK:
        return decode_chunk_frame(encode_chunk_frame("st_mlx", event))[1]
    return loads(dumps(event.to_dict()))


def round_trip(array: Any, **kw: Any) -> Any:
    assembler = TensorAssembler(**kw)
    out = None
    for event in tensor_to_frames(array, chunk_bytes=6):
        out = assembler.feed(deliver(event))
    return out


def current_stream() -> Any:
    mx = import_mlx()
    return mx.default_stream(mx.default_device())


# -- arrays --------------------------------------------------------------------------


MLX_DTYPES = [
    "bool_",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "int32",
    "int64",
    "float16",
    "float32",
    "float64",
    "complex64",
    "bfloat16",
]


@pytest.mark.parametrize("dtype_name", MLX_DTYPES)
def test_mlx_round_trip(dtype_name: str) -> None:
    import mlx.core as mx

    dtype = getattr(mx, dtype_name)
    a = (mx.arange(24) % 7 - 3).astype(dtype).reshape(2, 3, 4)
    if dtype == mx.complex64:
        a = a + 1j * a
    assert is_tensor(a)
    back = round_trip(a, as_mlx=True)
    assert back.dtype == a.dtype and back.shape == a.shape
    assert mx.array_equal(back, a).item()
    if dtype != mx.bfloat16:
        assert np.array_equal(round_trip(a), np.asarray(a))


@settings(max_examples=100, deadline=None)
@given(
    x=hnp.arrays(
        st.sampled_from([np.dtype(d) for d in ["bool", "i1", "u2", "i4", "u8", "f2", "f4", "c8"]]),
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
    ),
    bfloat16=st.booleans(),
    transpose=st.booleans(),
)
def test_mlx_round_trip_any_shape(x: np.ndarray[Any, Any], bfloat16: bool, transpose: bool) -> None:
    import mlx.core as mx

    a = mx.array(x)
    if bfloat16 and x.dtype.kind == "f":
        a = a.astype(mx.bfloat16)
    if transpose:
        a = a.T
    back = round_trip(a, as_mlx=True)
    assert back.dtype == a.dtype and back.shape == a.shape
    bits = mx.uint16 if a.dtype == mx.bfloat16 else a.dtype
    assert np.asarray(back.view(bits)).tobytes() == np.asarray(a.view(bits)).tobytes()


def test_mlx_bfloat16_without_ml_dtypes(monkeypatch: pytest.MonkeyPatch) -> None:
    import mlx.core as mx

    monkeypatch.setattr(tensor_arrays, "_ml_dtypes_bfloat16", lambda: None)
    a = mx.array([[1.0, -2.5, 3.0], [0.5, 65280.0, -0.0]], dtype=mx.bfloat16)
    header = next(tensor_to_frames(a))
    assert header.fields["dtype"] == "bfloat16" and header.fields["nbytes"] == 12
    bits = round_trip(a)
    assert bits.dtype == np.uint16
    assert np.array_equal(bits, np.asarray(a.view(mx.uint16)))
    assert np.array_equal(tensor_arrays.bfloat16_to_float32(bits), np.asarray(a.astype(mx.float32)))


def test_mlx_non_contiguous_and_lazy() -> None:
    import mlx.core as mx

    a = mx.arange(12, dtype=mx.float32).reshape(3, 4)
    for view in (a.T, a[:, ::2], a[::-1], (a @ a.T) + 1, a.astype(mx.bfloat16).T):
        back = round_trip(view, as_mlx=True)
        assert back.shape == view.shape and mx.array_equal(back, view).item()


def test_mlx_zero_d_and_empty() -> None:
    import mlx.core as mx

    for a in (mx.array(3.5), mx.zeros((0, 4), dtype=mx.int32)):
        back = round_trip(a, as_mlx=True)
        assert back.shape == a.shape and mx.array_equal(back, a).item()


def test_complex128_cannot_be_delivered_as_mlx() -> None:
    with pytest.raises(TensorHeaderError, match="complex128"):
        round_trip(np.zeros(2, np.complex128), as_mlx=True)


# -- streams -----------------------------------------------------------------------


def test_stream_helpers() -> None:
    import mlx.core as mx

    assert default_device() == mx.default_device()
    assert default_stream() == mx.default_stream(mx.default_device())
    assert default_stream("cpu") == mx.default_stream(mx.cpu)
    before = current_stream()
    s = new_stream("cpu")
    assert s != before and s.device == mx.cpu
    with with_stream(s) as entered:
        assert entered is s and current_stream() == s
        with with_stream(mx.cpu):
            assert current_stream() == mx.default_stream(mx.cpu)
        assert current_stream() == s
    assert current_stream() == before
    with pytest.raises(ValueError, match="unknown MLX device"):
        new_stream("tpu")


def test_with_stream_decorates_sync_functions() -> None:
    s = new_stream()

    @with_stream(s)
    def work(x: int) -> tuple[int, Any]:
        return x + 1, current_stream()

    assert work(1) == (2, s)
    assert run_in_stream(s, lambda: current_stream()) == s
    assert current_stream() != s


async def test_run_in_stream_scopes_each_step_of_an_async_producer() -> None:
    import mlx.core as mx

    s = new_stream()
    outside = current_stream()
    seen_inside: list[Any] = []
    seen_outside: list[Any] = []
    closed: list[Any] = []

    async def producer() -> AsyncIterator[Any]:
        try:
            for i in range(3):
                seen_inside.append(current_stream())
                await asyncio.sleep(0)  # another task runs here
                seen_inside.append(current_stream())
                yield mx.arange(4) * i
        finally:
            closed.append(current_stream())

    async def neighbour() -> None:
        for _ in range(10):
            seen_outside.append(current_stream())
            await asyncio.sleep(0)

    other = asyncio.create_task(neighbour())
    items = []
    async for item in run_in_stream(s, producer()):
        assert current_stream() == outside  # the consumer is not in the stream
        items.append(item)
        if len(items) == 2:
            break
    await other
    assert all(x == s for x in seen_inside) and len(seen_inside) == 4
    assert all(x == outside for x in seen_outside)
    assert closed == [s]  # leaving the loop closed the producer, inside the stream
    assert mx.array_equal(items[1], mx.arange(4)).item()


async def test_run_in_stream_coroutines_and_cancellation() -> None:
    s = new_stream()
    gate = asyncio.Event()
    cancelled_in: list[Any] = []

    async def compute(x: int) -> tuple[int, Any]:
        await asyncio.sleep(0)
        return x * 2, current_stream()

    assert await run_in_stream(s, compute(21)) == (42, s)
    assert await asyncio.create_task(run_in_stream(s, compute(1))) == (2, s)

    async def waits() -> None:
        try:
            await gate.wait()
        except asyncio.CancelledError:
            cancelled_in.append(current_stream())
            raise

    task = asyncio.create_task(run_in_stream(s, waits()))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled_in == [s]

    async def fails() -> None:
        await asyncio.sleep(0)
        raise KeyError("boom")

    with pytest.raises(KeyError):
        await run_in_stream(s, fails())


async def test_with_stream_decorates_async_functions() -> None:
    s = new_stream()

    @with_stream(s)
    async def gen() -> AsyncIterator[Any]:
        await asyncio.sleep(0)
        yield current_stream()

    @with_stream(s)
    async def coro() -> Any:
        await asyncio.sleep(0)
        return current_stream()

    assert [x async for x in gen()] == [s]
    assert await coro() == s
    assert current_stream() != s


async def test_producer_options_frame_mlx_arrays_in_the_stream() -> None:
    import mlx.core as mx

    s = new_stream()
    streams: list[Any] = []

    async def producer() -> AsyncIterator[Any]:
        streams.append(current_stream())
        yield "thinking"
        yield mx.ones((2, 2), dtype=mx.bfloat16) * 3

    options = ProducerOptions(stream=s, tensor=TensorOptions(chunk_bytes=2, meta={"k": 1}))
    out = [item async for item in options.wrap(producer())]
    assert out[0] == "thinking" and streams == [s]
    assert out[1].kind == TENSOR_HEADER and out[1].fields["meta"] == {"k": 1}
    assert out[1].fields["chunks"] == 4
    assembler = TensorAssembler(as_mlx=True)
    results = [assembler.feed(deliver(ev)) for ev in out[1:]]
    assert mx.array_equal(results[-1], mx.ones((2, 2), dtype=mx.bfloat16) * 3).item()


# -- without MLX -------------------------------------------------------------------


@pytest.fixture
def no_mlx(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes `import mlx.core` fail, as if MLX were not installed.
    monkeypatch.setitem(sys.modules, "mlx", None)
    monkeypatch.setitem(sys.modules, "mlx.core", None)


@pytest.mark.usefixtures("no_mlx")
async def test_without_mlx_clear_import_errors() -> None:
    with pytest.raises(MLXUnavailableError, match=r"mlx\[cpu\]") as info:
        import_mlx()
    assert isinstance(info.value, ImportError)
    for call in (default_stream, new_stream, default_device):
        with pytest.raises(MLXUnavailableError):
            call()
    with pytest.raises(MLXUnavailableError), with_stream("cpu"):
        pass
    assembler = TensorAssembler(as_mlx=True)
    events = list(tensor_to_frames(np.arange(3)))
    assembler.feed(events[0])
    assembler.feed(events[1])
    with pytest.raises(MLXUnavailableError):
        assembler.feed(events[2])


@pytest.mark.usefixtures("no_mlx")
async def test_without_mlx_no_stream_needs_no_mlx() -> None:
    async def producer() -> AsyncIterator[Any]:
        yield "a"
        yield np.arange(2)

    out = [item async for item in ProducerOptions().wrap(producer())]
    assert out[0] == "a" and out[1].kind == TENSOR_HEADER
    assert run_in_stream(None, lambda: 5) == 5
    with with_stream(None):
        pass
