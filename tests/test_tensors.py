"""Tensors: framing, the binary chunk frame, reassembly (pure, in-process)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tokenwire.events import TENSOR_CHUNK, TENSOR_END, TENSOR_HEADER, Event, dumps, loads
from tokenwire.tensors import (
    TensorAssembler,
    TensorChecksumError,
    TensorChunkError,
    TensorError,
    TensorFrameError,
    TensorHeaderError,
    TensorOptions,
    TensorTooLargeError,
    TensorTruncatedError,
    UnknownTensorError,
    bfloat16_to_float32,
    decode_chunk_frame,
    encode_chunk_frame,
    encode_chunk_frame_parts,
    is_tensor,
    tensor_to_frames,
    tensors_to_frame_stream,
)
from tokenwire.tensors import arrays as tensor_arrays

NATIVE = ["bool", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"]
BIG = [">i2", ">i4", ">i8", ">u2", ">u4", ">u8", ">f2", ">f4", ">f8", ">c8", ">c16"]
ALL_DTYPES = [np.dtype(d) for d in NATIVE + BIG]


# -- delivery: the same events as each transport hands them to a client ------


def as_event(event: Event) -> Any:
    return event


def as_json(event: Event) -> Any:
    # SSE / NDJSON / WS text: the event object, chunk bytes in base64.
    return loads(dumps(event.to_dict()))


def as_ws_binary(event: Event) -> Any:
    # WebSocket: chunks as binary frames, everything else as JSON text frames.
    if event.kind == TENSOR_CHUNK:
        return encode_chunk_frame("st_test", event)
    return as_json(event)


def as_ws_decoded(event: Event) -> Any:
    if event.kind == TENSOR_CHUNK:
        stream_id, obj = decode_chunk_frame(encode_chunk_frame("st_test", event))
        assert stream_id == "st_test"
        return obj
    return as_json(event)


DELIVERIES = [as_event, as_json, as_ws_binary, as_ws_decoded]


def wire_bytes(x: np.ndarray[Any, Any]) -> bytes:
    """What must arrive: the elements in C order, little-endian."""
    return x.astype(x.dtype.newbyteorder("<")).tobytes()


def assemble(events: list[Event], deliver: Callable[[Event], Any] = as_event, **kw: Any) -> Any:
    assembler = TensorAssembler(**kw)
    results = [assembler.feed(deliver(ev)) for ev in events]
    assert all(r is None for r in results[:-1])
    assert assembler.pending == ()
    return results[-1]


def assert_same(out: np.ndarray[Any, Any], x: np.ndarray[Any, Any]) -> None:
    assert out.shape == x.shape
    assert out.dtype == x.dtype.newbyteorder("<")
    assert out.tobytes() == wire_bytes(x)
    assert np.array_equal(out, x, equal_nan=x.dtype.kind in "fc")


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray[Any, Any]:
    dtype = draw(st.sampled_from(ALL_DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    x = draw(hnp.arrays(dtype, shape))
    layout = draw(st.sampled_from(["c", "transposed", "stepped", "reversed", "fortran"]))
    if layout == "transposed":
        x = x.T
    elif layout == "stepped" and x.ndim:
        x = x[..., ::2]
    elif layout == "reversed" and x.ndim:
        x = x[::-1]
    elif layout == "fortran":
        x = np.asfortranarray(x)
    return x


# -- round trips ---------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(x=arrays(), chunk_bytes=st.integers(1, 200), deliver=st.sampled_from(DELIVERIES))
def test_round_trip_is_bit_exact(
    x: np.ndarray[Any, Any], chunk_bytes: int, deliver: Callable[[Event], Any]
) -> None:
    events = list(tensor_to_frames(x, chunk_bytes=chunk_bytes))
    header = events[0].fields
    assert header["byteorder"] == "little"
    assert header["chunk_bytes"] % x.itemsize == 0
    assert header["strides"] == list(np.empty(x.shape, x.dtype).strides) or 0 in x.shape
    assert len(events) == header["chunks"] + 2
    assert_same(assemble(events, deliver), x)


@settings(max_examples=100, deadline=None)
@given(
    xs=st.lists(arrays(), min_size=1, max_size=4),
    data=st.data(),
    deliver=st.sampled_from(DELIVERIES),
)
def test_interleaved_out_of_order_with_duplicates(
    xs: list[np.ndarray[Any, Any]], data: st.DataObject, deliver: Callable[[Event], Any]
) -> None:
    streams = [list(tensor_to_frames(x, chunk_bytes=16)) for x in xs]
    headers = [s[0] for s in streams]
    ends = [s[-1] for s in streams]
    chunks = [c for s in streams for c in s[1:-1]]
    resent = data.draw(st.lists(st.sampled_from(chunks), max_size=5)) if chunks else []
    middle = data.draw(st.permutations(chunks + resent))
    assembler = TensorAssembler()
    for ev in [*headers, *middle]:
        assert assembler.feed(deliver(ev)) is None
    for x, end in zip(xs, ends, strict=True):
        assert_same(assembler.feed(deliver(end)), x)
    assert assembler.pending == () and assembler.pending_bytes == 0


@pytest.mark.parametrize("deliver", DELIVERIES)
def test_zero_d_and_empty(deliver: Callable[[Event], Any]) -> None:
    scalar = np.array(2.5, dtype=np.float32)
    out = assemble(list(tensor_to_frames(scalar)), deliver)
    assert out.shape == () and out == scalar

    empty = np.zeros((3, 0, 2), dtype=np.int16)
    events = list(tensor_to_frames(empty))
    assert [e.kind for e in events] == [TENSOR_HEADER, TENSOR_END]
    assert events[0].fields["chunks"] == 0
    assert events[-1].fields["checksum"] == "crc32:00000000"
    assert_same(assemble(events, deliver), empty)


def test_header_fields() -> None:
    x = np.arange(10, dtype=">f4").reshape(2, 5)
    header, *chunks, end = tensor_to_frames(x, chunk_bytes=18, tensor_id="t1", meta={"layer": 3})
    assert header.kind == TENSOR_HEADER
    assert header.fields == {
        "tensor_id": "t1",
        "shape": [2, 5],
        "dtype": "float32",
        "strides": [20, 4],
        "byteorder": "little",
        "nbytes": 40,
        "chunk_bytes": 16,  # rounded down to whole float32s
        "chunks": 3,
        "meta": {"layer": 3},
    }
    assert [(c.fields["index"], c.fields["offset"], len(c.binary or b"")) for c in chunks] == [
        (0, 0, 16),
        (1, 16, 16),
        (2, 32, 8),
    ]
    import zlib

    assert end.fields == {"tensor_id": "t1", "checksum": f"crc32:{zlib.crc32(wire_bytes(x)):08x}"}


def test_chunks_are_lazy_views_of_the_array() -> None:
    x = np.arange(1024, dtype=np.uint8)
    frames = tensor_to_frames(x, chunk_bytes=256)
    next(frames)
    first = next(frames)
    assert isinstance(first.binary, memoryview)
    assert first.binary.obj is not None
    x[0] = 99  # no copy was taken: the chunk sees the array
    assert first.binary[0] == 99


def test_chunk_bytes_at_least_one_item() -> None:
    header = next(tensor_to_frames(np.zeros(4, np.complex128), chunk_bytes=5))
    assert header.fields["chunk_bytes"] == 16 and header.fields["chunks"] == 4


def test_tensor_id_default_and_factory() -> None:
    a = next(tensor_to_frames(np.zeros(1))).fields["tensor_id"]
    b = next(tensor_to_frames(np.zeros(1))).fields["tensor_id"]
    assert a != b and a.startswith("tn_")
    assert a.replace("_", "").replace("-", "").isalnum()
    header = next(tensor_to_frames(np.zeros(1), id_factory=lambda: "mine"))
    assert header.fields["tensor_id"] == "mine"


# -- other inputs ------------------------------------------------------------


def test_bytearray_and_memoryview_inputs() -> None:
    out = assemble(list(tensor_to_frames(bytearray(b"hello"), chunk_bytes=2)))
    assert out.dtype == np.uint8 and out.tobytes() == b"hello"

    floats = np.arange(6, dtype=np.float32)
    view = memoryview(floats.tobytes()).cast("f", (2, 3))
    out = assemble(list(tensor_to_frames(view)))
    assert out.shape == (2, 3) and np.array_equal(out, floats.reshape(2, 3))


class DLPackOnly:
    """A foreign tensor that only speaks DLPack (what a torch CPU tensor offers)."""

    def __init__(self, array: np.ndarray[Any, Any]) -> None:
        self._array = array

    def __dlpack__(self, **kwargs: Any) -> Any:
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> Any:
        return self._array.__dlpack_device__()


def test_dlpack_input() -> None:
    x = np.arange(12, dtype=np.int32).reshape(3, 4)[:, ::2]
    assert is_tensor(DLPackOnly(x))
    assert_same(assemble(list(tensor_to_frames(DLPackOnly(x)))), x)


def test_torch_cpu_tensor_via_dlpack() -> None:
    import torch  # scripts/setup.sh --dev installs the CPU build

    t = torch.arange(12, dtype=torch.float32).reshape(3, 4).T
    assert is_tensor(t)
    out = assemble(list(tensor_to_frames(t)))
    assert np.array_equal(out, t.contiguous().numpy())


@pytest.mark.parametrize(
    "bad", [np.array(["a"]), np.array([object()]), np.zeros(2, np.longdouble), {"a": 1}, "text"]
)
def test_unsupported_inputs(bad: Any) -> None:
    with pytest.raises(TypeError):
        tensor_to_frames(bad)


@pytest.mark.parametrize("chunk_bytes", [0, -1, 1.5, True])
def test_bad_chunk_bytes(chunk_bytes: Any) -> None:
    with pytest.raises(ValueError, match="chunk_bytes"):
        tensor_to_frames(np.zeros(1), chunk_bytes=chunk_bytes)


def test_is_tensor() -> None:
    assert is_tensor(np.zeros(2)) and is_tensor(np.array(1.0))
    assert is_tensor(memoryview(b"ab"))
    for item in ["tok", b"raw", bytearray(b"x"), np.float32(1), 3, Event.token("x"), {"a": 1}]:
        assert not is_tensor(item)


# -- bfloat16 ------------------------------------------------------------------


def bfloat16_events(bits: np.ndarray[Any, Any]) -> list[Event]:
    events = list(tensor_to_frames(bits, chunk_bytes=4, tensor_id="bf"))
    events[0].fields["dtype"] = "bfloat16"
    return events


def test_bfloat16_without_ml_dtypes_is_uint16_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tensor_arrays, "_ml_dtypes_bfloat16", lambda: None)
    values = np.array([[1.0, -2.5, np.inf], [0.0, 3.140625, -0.0]], dtype=np.float32)
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)
    assembler = TensorAssembler()
    results = [assembler.feed_tensor(as_json(ev)) for ev in bfloat16_events(bits)]
    received = results[-1]
    assert received is not None and received.dtype == "bfloat16"
    assert received.array.dtype == np.uint16 and np.array_equal(received.array, bits)
    assert np.array_equal(bfloat16_to_float32(received.array), values)


def test_bfloat16_with_ml_dtypes() -> None:
    import ml_dtypes

    x = np.array([[1.0, -2.5], [np.nan, 7.0]], dtype=ml_dtypes.bfloat16).T
    events = list(tensor_to_frames(x))
    assert events[0].fields["dtype"] == "bfloat16"
    out = assemble(events, as_json)
    assert out.dtype == ml_dtypes.bfloat16
    assert out.tobytes() == np.ascontiguousarray(x).tobytes()


# -- errors ----------------------------------------------------------------------


def frames(n: int = 10, chunk_bytes: int = 8, tensor_id: str = "t") -> list[Event]:
    return list(
        tensor_to_frames(np.arange(n, dtype=np.int32), chunk_bytes=chunk_bytes, tensor_id=tensor_id)
    )


def feed_all(assembler: TensorAssembler, events: list[Event]) -> Any:
    out = None
    for ev in events:
        out = assembler.feed(ev)
    return out


def test_truncated() -> None:
    events = frames()
    assembler = TensorAssembler()
    with pytest.raises(TensorTruncatedError) as info:
        feed_all(assembler, events[:2] + events[3:])
    assert info.value.tensor_id == "t"
    assert "1 of 5 chunks missing (first missing: 1)" in str(info.value)
    assert assembler.pending == ()


@pytest.mark.parametrize("deliver", DELIVERIES)
def test_corrupt_chunk(deliver: Callable[[Event], Any]) -> None:
    events = frames()
    damaged = bytearray(events[2].binary or b"")
    damaged[0] ^= 0x01
    events[2] = Event(TENSOR_CHUNK, events[2].fields, binary=bytes(damaged))
    with pytest.raises(TensorChecksumError, match="checksum mismatch") as info:
        assemble(events, deliver)
    assert info.value.tensor_id == "t" and isinstance(info.value, TensorError)


def test_corrupt_checksum_field() -> None:
    events = frames()
    events[-1] = Event(TENSOR_END, {"tensor_id": "t", "checksum": "sha1:00"})
    with pytest.raises(TensorChecksumError, match="unsupported checksum"):
        assemble(events)


def test_duplicates_are_ignored() -> None:
    events = frames()
    out = assemble([events[0], events[0], *events[1:3], events[1], *events[3:]])
    assert np.array_equal(out, np.arange(10, dtype=np.int32))


def test_late_duplicates_of_a_finished_tensor_are_ignored() -> None:
    events = frames()
    assembler = TensorAssembler()
    assert feed_all(assembler, events) is not None
    assert assembler.feed(events[1]) is None
    assert assembler.feed(events[-1]) is None


def test_oversized_header() -> None:
    with pytest.raises(TensorTooLargeError, match="exceeds the limit of 39") as info:
        assemble(frames(), max_bytes=39)
    assert isinstance(info.value, TensorHeaderError)
    huge = dict(frames()[0].fields, shape=[1 << 40], nbytes=4 << 40, chunks=(4 << 40) // 8)
    with pytest.raises(TensorTooLargeError):
        TensorAssembler().feed(Event(TENSOR_HEADER, huge))


def test_total_bytes_in_flight_are_bounded() -> None:
    assembler = TensorAssembler(max_bytes=40, max_total_bytes=60)
    assembler.feed(frames(tensor_id="a")[0])
    with pytest.raises(TensorTooLargeError, match="in flight"):
        assembler.feed(frames(tensor_id="b")[0])
    assembler.discard("a")
    assembler.feed(frames(tensor_id="b")[0])
    assert assembler.pending == ("b",) and assembler.pending_bytes == 40


def test_unknown_tensor() -> None:
    events = frames()
    with pytest.raises(UnknownTensorError, match="header was not received"):
        TensorAssembler().feed(events[1])
    with pytest.raises(UnknownTensorError):
        TensorAssembler().feed(events[-1])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"index": 5}, "out of range"),
        ({"index": -1}, "non-negative"),
        ({"offset": 4}, "expected 8"),
        ({"data": "AAAA"}, "has 3 bytes, expected 8"),
        ({"data": "not base64!"}, "not valid base64"),
        ({"data": None}, "no data"),
    ],
)
def test_bad_chunks(change: dict[str, Any], match: str) -> None:
    events = frames()
    assembler = TensorAssembler()
    assembler.feed(events[0])
    bad = {**as_json(events[2]), **change}
    with pytest.raises(TensorChunkError, match=match):
        assembler.feed(bad)
    # The rejected chunk changed nothing: the tensor still completes.
    assert np.array_equal(feed_all(assembler, events[1:]), np.arange(10, dtype=np.int32))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"dtype": "float128"}, "unsupported dtype"),
        ({"shape": [3]}, "does not match"),
        ({"shape": [-10]}, "invalid shape"),
        ({"shape": "10"}, "invalid shape"),
        ({"chunks": 4}, "do not cover"),
        ({"chunk_bytes": 0}, "do not cover"),
        ({"strides": [8]}, "not C-contiguous"),
        ({"byteorder": "middle"}, "byteorder"),
        ({"meta": [1]}, "meta"),
        ({"tensor_id": ""}, "tensor_id"),
    ],
)
def test_bad_headers(change: dict[str, Any], match: str) -> None:
    header = {**as_json(frames()[0]), **change}
    with pytest.raises(TensorHeaderError, match=match):
        TensorAssembler().feed(header)


def test_conflicting_header() -> None:
    assembler = TensorAssembler()
    assembler.feed(frames()[0])
    with pytest.raises(TensorHeaderError, match="different header"):
        assembler.feed(frames(n=12)[0])


def test_big_endian_header_from_a_foreign_producer() -> None:
    x = np.arange(6, dtype=">u4").reshape(2, 3)
    header = {
        "kind": TENSOR_HEADER,
        "tensor_id": "be",
        "shape": [2, 3],
        "dtype": "uint32",
        "byteorder": "big",
        "nbytes": 24,
        "chunk_bytes": 24,
        "chunks": 1,
    }
    import zlib

    chunk = {"kind": TENSOR_CHUNK, "tensor_id": "be", "index": 0, "offset": 0, "data": x.tobytes()}
    end = {
        "kind": TENSOR_END,
        "tensor_id": "be",
        "checksum": f"crc32:{zlib.crc32(x.tobytes()):08X}",
    }
    assembler = TensorAssembler()
    assembler.feed(header)
    assembler.feed(chunk)
    out = assembler.feed(end)
    assert out.dtype == np.dtype("<u4") and np.array_equal(out, x)


def test_other_events_are_ignored() -> None:
    assembler = TensorAssembler()
    assert assembler.feed(Event.token("hi")) is None
    assert assembler.feed({"type": "heartbeat", "ts": 1.0}) is None


def test_received_tensor_carries_id_and_meta() -> None:
    assembler = TensorAssembler()
    results = [
        assembler.feed_tensor(ev)
        for ev in tensor_to_frames(np.ones(3), tensor_id="w", meta={"name": "w"})
    ]
    received = results[-1]
    assert received is not None
    assert (received.tensor_id, received.dtype, received.meta) == ("w", "float64", {"name": "w"})


def test_error_fields_and_message() -> None:
    err = TensorChunkError("t9", "chunk 3 is bad")
    assert (err.tensor_id, err.reason) == ("t9", "chunk 3 is bad")
    assert str(err) == "tensor 't9': chunk 3 is bad"
    assert str(TensorFrameError(None, "short")) == "short"


# -- the WebSocket binary chunk frame ---------------------------------------------------


def test_chunk_frame_is_byte_exact() -> None:
    event = Event(
        TENSOR_CHUNK,
        {"tensor_id": "tn_é", "index": 3, "offset": 0x0102030405},
        seq=0x0A0B,
        binary=b"\x00\xff\x10",
    )
    expected = (
        bytes([1, 5])
        + (5).to_bytes(2, "big")
        + (0x0A0B).to_bytes(8, "big")
        + (3).to_bytes(4, "big")
        + (0x0102030405).to_bytes(8, "big")
        + b"st_ab"
        + "tn_é".encode()
        + b"\x00\xff\x10"
    )
    frame = encode_chunk_frame("st_ab", event)
    assert frame == expected
    prefix, payload = encode_chunk_frame_parts("st_ab", event)
    assert prefix + bytes(payload) == expected
    stream_id, obj = decode_chunk_frame(frame)
    assert stream_id == "st_ab"
    assert {k: v for k, v in obj.items() if k != "data"} == {
        "seq": 0x0A0B,
        "kind": TENSOR_CHUNK,
        "tensor_id": "tn_é",
        "index": 3,
        "offset": 0x0102030405,
    }
    assert bytes(obj["data"]) == b"\x00\xff\x10"


def test_chunk_frame_from_a_rebuilt_event() -> None:
    event = next(e for e in tensor_to_frames(np.arange(3), tensor_id="x") if e.kind == TENSOR_CHUNK)
    rebuilt = Event.from_dict(as_json(event))
    assert encode_chunk_frame("s", rebuilt) == encode_chunk_frame("s", event)


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (b"\x01\x00", "shorter than its header"),
        (struct.pack(">BBHQIQ", 2, 0, 0, 1, 0, 0), "version 2"),
        (struct.pack(">BBHQIQ", 1, 4, 0, 1, 0, 0) + b"st", "shorter than its stream"),
        (struct.pack(">BBHQIQ", 1, 1, 1, 1, 0, 0) + b"\xff" + b"t", "not valid text"),
        (struct.pack(">BBHQIQ", 1, 1, 1, 1, 0, 0) + b"s" + b"\xff", "not valid text"),
    ],
)
def test_malformed_chunk_frames(frame: bytes, match: str) -> None:
    with pytest.raises(TensorFrameError, match=match):
        decode_chunk_frame(frame)
    with pytest.raises(TensorFrameError):
        TensorAssembler().feed(frame)


def test_chunk_frame_encode_errors() -> None:
    chunk = Event(TENSOR_CHUNK, {"tensor_id": "t", "index": 1 << 32, "offset": 0}, binary=b"")
    with pytest.raises(ValueError, match="out of range"):
        encode_chunk_frame("s", chunk)
    with pytest.raises(ValueError, match=r"only tensor\.chunk"):
        encode_chunk_frame("s", Event.token("x"))
    with pytest.raises(ValueError, match="255"):
        encode_chunk_frame(
            "s" * 256, Event(TENSOR_CHUNK, {"tensor_id": "t", "index": 0, "offset": 0}, binary=b"")
        )


# -- tensors_to_frame_stream ---------------------------------------------------------------


async def test_frame_stream_passes_through_and_frames() -> None:
    token = Event.token("hi")
    closed: list[bool] = []

    async def producer() -> Any:
        try:
            yield "text"
            yield np.arange(4, dtype=np.int16)
            yield token
            yield {"app": 1}
        finally:
            closed.append(True)

    ids = iter(["a"])
    out = [
        item
        async for item in tensors_to_frame_stream(
            producer(), chunk_bytes=4, id_factory=lambda: next(ids), meta=lambda x: {"n": x.size}
        )
    ]
    assert out[0] == "text" and out[-2] is token and out[-1] == {"app": 1}
    kinds = [e.kind for e in out[1:-2]]
    assert kinds == [TENSOR_HEADER, TENSOR_CHUNK, TENSOR_CHUNK, TENSOR_END]
    assert out[1].fields["tensor_id"] == "a" and out[1].fields["meta"] == {"n": 4}
    assert np.array_equal(assemble(out[1:-2]), np.arange(4, dtype=np.int16))
    assert closed == [True]


async def test_frame_stream_closes_its_source_early() -> None:
    closed: list[bool] = []

    async def producer() -> Any:
        try:
            while True:
                yield np.zeros(8)
                await asyncio.sleep(0)
        finally:
            closed.append(True)

    stream = tensors_to_frame_stream(producer(), chunk_bytes=8)
    async for event in stream:
        if event.kind == TENSOR_CHUNK:
            break
    await stream.aclose()
    assert closed == [True]


async def test_frame_stream_from_a_sync_iterable() -> None:
    def items() -> Iterator[Any]:
        yield "a"
        yield memoryview(b"xy")

    out = [item async for item in tensors_to_frame_stream(items())]
    assert out[0] == "a" and [e.kind for e in out[1:]] == [TENSOR_HEADER, TENSOR_CHUNK, TENSOR_END]
    assert TensorOptions().chunk_bytes == 256 * 1024
