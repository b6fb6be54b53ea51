"""Tensors end to end, over real sockets with real clients: bit-exact over SSE,
NDJSON and WebSocket.

Two kinds of server:

- ``live``: the tokenwire app of this process, served by uvicorn on a real socket
  from a background thread, with one extra pipeline, ``fixture``, that streams the
  items a test queued (hypothesis-generated arrays of any dtype, shape and
  layout, MLX arrays, tokens, progress) without uploading them;
- ``server``: a real ``tokenwire serve`` process with its built-in ``tensor`` and
  ``denoise`` pipelines.

Clients are httpx (SSE and NDJSON, parsed with :class:`tokenwire.sse.SSEParser` and
:class:`tokenwire.ndjson.NDJSONParser`) and ``websockets`` (``/v1/ws``, chunks as
binary frames). Every event stream is checked for contiguous seqs from 1 and
every tensor for its checksum (the assembler) and its exact bytes.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from websockets.sync.client import connect

from tests.conftest import ServerProcess, free_port
from tokenwire.errors import InvalidRequest
from tokenwire.events import PROGRESS, TENSOR_CHUNK, TERMINAL_KINDS, TOKEN, Event, dumps, loads
from tokenwire.examples import default_pipelines
from tokenwire.examples.denoise import target_image, to_uint8
from tokenwire.examples.synthetic import expected_bytes
from tokenwire.ndjson import NDJSONParser
from tokenwire.server.app import create_app
from tokenwire.server.config import ServerConfig
from tokenwire.sse import SSEParser
from tokenwire.stream import HubConfig
from tokenwire.tensors import ReceivedTensor, TensorAssembler, decode_chunk_frame, tensor_to_frames

pytestmark = pytest.mark.slow

TRANSPORTS = ["sse", "ndjson", "ws"]
NATIVE = ["bool", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"]
BIG = [">i2", ">u4", ">f4", ">f8", ">c16"]
DTYPES = [np.dtype(d) for d in NATIVE + BIG]
MAX_LINE = 32 << 20


# -- the in-process server -------------------------------------------------------------


class LiveServer:
    """The app on a real socket, run by uvicorn on a thread of its own."""

    def __init__(self) -> None:
        self._queued: dict[str, list[Any]] = {}
        self._keys = itertools.count()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        pipelines = default_pipelines()
        pipelines.register("fixture", self._fixture)
        config = ServerConfig(default_model="scripted", hub=HubConfig(grace_s=5.0))
        app = create_app(config=config, pipelines=pipelines)
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error")
        )
        self._thread = threading.Thread(target=self._server.run, name="live-server", daemon=True)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the live server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(30)

    def body(self, *items: Any) -> dict[str, Any]:
        """A ``POST /v1/streams`` body that streams ``items`` (arrays are framed as tensors)."""
        key = str(next(self._keys))
        self._queued[key] = list(items)
        return {"pipeline": "fixture", "params": {"key": key}}

    def _fixture(self, params: Any) -> AsyncIterator[Any]:
        items = self._queued.pop(str(params.get("key")), None)
        if items is None:
            raise InvalidRequest("nothing queued under that key")
        return _aiter(items)


async def _aiter(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    server = LiveServer()
    server.start()
    yield server
    server.stop()


# -- the clients -----------------------------------------------------------------------


# One client for the module: a client per request would load the CA bundle each time.
HTTP = httpx.Client(timeout=30)


def start(url: str, body: dict[str, Any]) -> str:
    response = HTTP.post(url + "/v1/streams", json=body)
    assert response.status_code == 201, response.text
    stream_id: str = response.json()["id"]
    return stream_id


def read_http(
    url: str, stream_id: str, transport: str, *, after: int = 0, limit: int | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The open frame and the events (to the terminal one, or ``limit`` of them)."""
    path = f"{url}/v1/streams/{stream_id}/{'events' if transport == 'sse' else 'ndjson'}"
    opened: dict[str, Any] = {}
    events: list[dict[str, Any]] = []
    sse = SSEParser(max_line_bytes=MAX_LINE, max_event_bytes=MAX_LINE)
    ndjson = NDJSONParser(max_line_bytes=MAX_LINE)
    with HTTP.stream("GET", path, params={"after": after}) as response:
        assert response.status_code == 200
        for data in response.iter_raw():
            if transport == "sse":
                objs = []
                for message in sse.feed(data):
                    obj = loads(message.data)
                    if message.event != "tw-open":
                        assert message.id == str(obj["seq"]) and message.event == obj["kind"]
                    objs.append({"kind": "open", **obj} if message.event == "tw-open" else obj)
            else:
                objs = ndjson.feed(data)
            for obj in objs:
                if obj["kind"] == "open":
                    opened = obj
                elif obj["kind"] != "heartbeat":
                    events.append(obj)
                    if obj["kind"] in TERMINAL_KINDS or len(events) == limit:
                        return opened, events
    raise AssertionError(f"the {transport} response ended before a terminal event")


def read_ws(url: str, body: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """Start ``body`` over ``/v1/ws``: the open frame and the events (dicts, and the
    binary frames of ``tensor.chunk`` events as bytes)."""
    opened: dict[str, Any] = {}
    items: list[Any] = []
    ws_url = "ws" + url.removeprefix("http") + "/v1/ws"
    with connect(ws_url, max_size=None, compression=None, open_timeout=10) as ws:
        ws.send(dumps({"op": "start", "id": "t", "request": body}).decode())
        stream_id = None
        while True:
            message = ws.recv(timeout=30)
            if isinstance(message, bytes):
                sid, _ = decode_chunk_frame(message)
                assert sid == stream_id
                items.append(message)
                continue
            obj = loads(message)
            if obj["type"] == "started":
                stream_id = obj["stream"]
            elif obj["type"] == "open":
                opened = obj
            elif obj["type"] == "event":
                assert obj.pop("stream") == stream_id
                items.append(obj)
                if obj["kind"] in TERMINAL_KINDS:
                    return opened, items
            elif obj["type"] == "error":
                raise AssertionError(f"server error: {obj}")


def stream_events(url: str, body: dict[str, Any], transport: str) -> list[Any]:
    """Start a stream and read it all over ``transport``; seqs are checked."""
    if transport == "ws":
        opened, items = read_ws(url, body)
    else:
        opened, items = read_http(url, start(url, body), transport)
    assert opened["recovered"] is True and opened["first_seq"] == 1
    last = 0
    for item in items:
        # A coalesced catch-up frame covers from_seq..seq (docs/protocol.md).
        obj = decode_chunk_frame(item)[1] if isinstance(item, bytes) else item
        assert obj.get("from_seq", obj["seq"]) == last + 1 and obj["seq"] >= last + 1
        last = obj["seq"]
    assert items[-1]["kind"] == "done", items[-1]
    return items


def kind_of(item: Any) -> str:
    return TENSOR_CHUNK if isinstance(item, bytes) else str(item["kind"])


def tensors_of(items: list[Any], **assembler: Any) -> list[ReceivedTensor]:
    receiver = TensorAssembler(**assembler)
    out = [t for t in map(receiver.feed_tensor, items) if t is not None]
    assert receiver.pending == ()
    return out


def step(x: np.ndarray[Any, Any], chunk_bytes: int) -> int:
    """``chunk_bytes``, raised so that no tensor has more than ~256 chunks (time)."""
    return max(chunk_bytes, x.nbytes // 256)


def wire_bytes(x: np.ndarray[Any, Any]) -> bytes:
    """What must arrive: the elements in C order, little-endian."""
    return x.astype(x.dtype.newbyteorder("<")).tobytes()


def assert_same(out: np.ndarray[Any, Any], x: np.ndarray[Any, Any]) -> None:
    assert out.shape == x.shape and out.dtype == x.dtype.newbyteorder("<")
    assert out.tobytes() == wire_bytes(x)


# -- hypothesis: any array, any layout ---------------------------------------------------


def random_array(dtype: np.dtype[Any], shape: tuple[int, ...], seed: int) -> np.ndarray[Any, Any]:
    """Random bits (NaN payloads, subnormals and all) of any dtype; bools are 0 or 1."""
    raw = np.random.default_rng(seed).integers(0, 256, math.prod(shape) * dtype.itemsize, np.uint8)
    if dtype.kind == "b":
        raw %= 2
    return raw.view(dtype).reshape(shape)


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray[Any, Any]:
    """Small arrays from hypothesis' elements, or up to ~1 MB of random bits; any layout."""
    dtype = draw(st.sampled_from(DTYPES))
    if draw(st.booleans()):
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6))
        x = draw(hnp.arrays(dtype, shape))
    else:
        shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=64))
        x = random_array(dtype, shape, draw(st.integers(0, 2**32)))
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


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_random_arrays_round_trip_bit_exact(live: LiveServer, transport: str) -> None:
    @settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(xs=st.lists(arrays(), min_size=1, max_size=3), chunk_bytes=st.integers(1, 700))
    def check(xs: list[np.ndarray[Any, Any]], chunk_bytes: int) -> None:
        frames = [ev for x in xs for ev in tensor_to_frames(x, chunk_bytes=step(x, chunk_bytes))]
        items = stream_events(live.url, live.body(*frames), transport)
        received = tensors_of(items)
        assert len(received) == len(xs)
        for got, x in zip(received, xs, strict=True):
            assert_same(got.array, x)

    check()


def test_empty_and_zero_d_arrays(live: LiveServer) -> None:
    xs = [np.array(2.5, np.float32), np.zeros((3, 0, 2), ">i2"), np.zeros(0, np.complex128)]
    for transport in TRANSPORTS:
        items = stream_events(live.url, live.body(*xs), transport)
        received = tensors_of(items)
        for got, x in zip(received, xs, strict=True):
            assert_same(got.array, x)


# -- order: tokens, progress and tensor frames interleaved ---------------------------------


def identity(item: Any) -> tuple[Any, ...]:
    """What identifies an event in order checks (chunk frames decoded)."""
    if isinstance(item, bytes):
        item = decode_chunk_frame(item)[1]
    if isinstance(item, Event):
        item = {"kind": item.kind, **item.fields}
    kind = item["kind"]
    if kind == TOKEN:
        return (TOKEN, item["text"])
    if kind == PROGRESS:
        return (PROGRESS, item["progress"])
    if kind == TENSOR_CHUNK:
        return (kind, item["tensor_id"], item["index"])
    if kind.startswith("tensor."):
        return (kind, item["tensor_id"])
    return (kind,)


def normalized(ids: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """What catch-up coalescing may legally do: merge a run of tokens into one text and
    keep only the last of a run of progress events (docs/protocol.md)."""
    out: list[tuple[Any, ...]] = []
    for ident in ids:
        if out and ident[0] == TOKEN == out[-1][0]:
            out[-1] = (TOKEN, out[-1][1] + ident[1])
        elif out and ident[0] == PROGRESS == out[-1][0]:
            out[-1] = ident
        else:
            out.append(ident)
    return out


@st.composite
def interleavings(draw: st.DrawFn) -> tuple[list[Event], list[np.ndarray[Any, Any]]]:
    """Tokens and progress events woven between (and inside) several tensors' frames,
    each tensor's own frames staying in order."""
    xs = draw(st.lists(arrays(), min_size=0, max_size=3))
    sources: list[list[Event]] = [
        list(tensor_to_frames(x, chunk_bytes=step(x, draw(st.integers(1, 500))), tensor_id=f"x{i}"))
        for i, x in enumerate(xs)
    ]
    words = draw(st.lists(st.text(min_size=1, max_size=5), max_size=30))
    levels = sorted(draw(st.lists(st.floats(0, 1), max_size=10)))
    sources.append([Event.token(w) for w in words])
    sources.append([Event.progress("work", p) for p in levels])
    merged: list[Event] = []
    while any(sources):
        source = draw(st.sampled_from([s for s in sources if s]))
        merged.append(source.pop(0))
    return merged, xs


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tokens_progress_and_tensors_arrive_in_order(live: LiveServer, transport: str) -> None:
    @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=interleavings())
    def check(case: tuple[list[Event], list[np.ndarray[Any, Any]]]) -> None:
        events, xs = case
        sent = [identity(ev) for ev in events]
        items = stream_events(live.url, live.body(*events), transport)
        got = [identity(item) for item in items[:-1]]
        assert normalized(got) == normalized(sent)
        received = {t.tensor_id: t.array for t in tensors_of(items)}
        assert sorted(received) == [f"x{i}" for i in range(len(xs))]
        for i, x in enumerate(xs):
            assert_same(received[f"x{i}"], x)

    check()


# -- MLX -----------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_mlx_arrays_round_trip(live: LiveServer, transport: str) -> None:
    import mlx.core as mx

    base = np.arange(-12, 12).reshape(2, 3, 4)
    sent = []
    for name in ["bool_", "uint8", "int16", "uint32", "int64", "float16", "float32", "bfloat16"]:
        a = mx.array(base).astype(getattr(mx, name))
        sent += [a, a.T]  # a transposed MLX array is framed in C order
    sent += [mx.array(base.astype(np.complex64) * (1 + 2j)), mx.array(3.5), mx.zeros((0, 4))]
    mx.eval(*sent)
    items = stream_events(live.url, live.body("mlx:", *sent), transport)
    assert items[0]["kind"] == TOKEN
    received = tensors_of(items, as_mlx=True)
    assert len(received) == len(sent)
    for got, a in zip(received, sent, strict=True):
        assert isinstance(got.array, mx.array)
        assert got.array.dtype == a.dtype and got.array.shape == a.shape
        bits = mx.uint16 if a.dtype == mx.bfloat16 else a.dtype
        assert bytes(np.asarray(got.array.view(bits))) == bytes(np.asarray(a.view(bits)))


# -- the built-in pipelines on a real `tokenwire serve` ------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tensor_pipeline_round_trip(server: ServerProcess, transport: str) -> None:
    @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        dtype=st.sampled_from(["bool", "uint8", "int16", "float16", "bfloat16", "float32"])
        | st.sampled_from(["int64", "uint64", "float64", "complex64", "complex128"]),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=24),
        chunk_bytes=st.integers(1, 1 << 16),
        seed=st.integers(0, 2**63 - 1),
        fill=st.sampled_from(["random", "repeat"]),
        count=st.integers(1, 3),
    )
    def check(
        dtype: str, shape: tuple[int, ...], chunk_bytes: int, seed: int, fill: str, count: int
    ) -> None:
        nbytes = math.prod(shape) * (2 if dtype == "bfloat16" else np.dtype(dtype).itemsize)
        chunk_bytes = max(chunk_bytes, nbytes // 256)
        params = {"dtype": dtype, "shape": list(shape), "chunk_bytes": chunk_bytes}
        params |= {"seed": seed, "fill": fill, "count": count}
        items = stream_events(server.url, {"pipeline": "tensor", "params": params}, transport)
        headers = [i for i in items if not isinstance(i, bytes) and i["kind"] == "tensor.header"]
        received = tensors_of(items)
        assert len(received) == count
        for k, (got, header) in enumerate(zip(received, headers, strict=True)):
            assert got.meta == {"index": k, "seed": seed + k, "fill": fill}
            assert got.dtype == dtype and list(got.array.shape) == list(shape)
            expected = expected_bytes(got.meta, header["nbytes"], header["chunk_bytes"])
            assert got.array.tobytes() == expected

    check()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_denoise_pipeline(server: ServerProcess, transport: str) -> None:
    params = {"width": 40, "height": 24, "steps": 6, "delay_ms": 0, "seed": 3}
    items = stream_events(server.url, {"pipeline": "denoise", "params": params}, transport)
    receiver = TensorAssembler()
    progress: list[float] = []
    images: list[ReceivedTensor] = []
    for item in items:
        if not isinstance(item, bytes) and item["kind"] == PROGRESS:
            assert item["stage"] == "denoise"
            assert len(images) == len(progress)  # each step: progress, then its image
            progress.append(item["progress"])
        tensor = receiver.feed_tensor(item)
        if tensor is not None:
            images.append(tensor)
    assert progress == [i / 6 for i in range(1, 7)]
    assert [t.meta for t in images] == [{"step": i, "steps": 6} for i in range(1, 7)]
    assert all(t.array.shape == (24, 40, 3) and t.array.dtype == np.uint8 for t in images)
    target = to_uint8(target_image(40, 24, 3) * 2.0 - 1.0)
    errors = [np.abs(t.array.astype(int) - target).mean() for t in images]
    assert errors == sorted(errors, reverse=True) and errors[-1] == 0  # it converges


def test_denoise_mlx_engine_delivers_mlx_arrays(server: ServerProcess) -> None:
    import mlx.core as mx

    params = {"width": 16, "height": 8, "steps": 3, "delay_ms": 0, "engine": "mlx"}
    items = stream_events(server.url, {"pipeline": "denoise", "params": params}, "ws")
    images = tensors_of(items, as_mlx=True)
    assert len(images) == 3 and isinstance(images[-1].array, mx.array)
    target = to_uint8(target_image(16, 8, 0) * 2.0 - 1.0)
    assert np.array_equal(np.asarray(images[-1].array), target)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"pipeline": "nope"}, "no pipeline 'nope'"),
        ({"pipeline": "denoise", "params": {"width": 513}}, "'width' must be within 1..512"),
        ({"pipeline": "denoise", "params": {"steps": 0}}, "'steps' must be within 1..100"),
        ({"pipeline": "denoise", "params": {"seed": "x"}}, "'seed' must be an integer"),
        ({"pipeline": "denoise", "params": {"stpes": 3}}, "no parameter 'stpes'"),
        ({"pipeline": "denoise", "params": [1]}, "'params' must be an object"),
        ({"pipeline": "tensor", "params": {"nbytes": 1 << 40}}, "'nbytes' must be within"),
        ({"pipeline": "tensor", "params": {"nbytes": 3, "dtype": "float32"}}, "multiple of"),
        ({"pipeline": "tensor", "params": {"dtype": "object"}}, "'dtype' must be one of"),
        ({"pipeline": "tensor", "params": {"dtype": ["int8"]}}, "'dtype' must be one of"),
        ({"pipeline": "denoise", "params": {"engine": {}}}, "'engine' must be one of"),
        ({"pipeline": "tensor", "params": {"shape": [1 << 20, 1 << 20]}}, "exceed the limit"),
        ({"pipeline": "tensor", "params": {"count": 64, "nbytes": 1 << 24}}, "exceed the limit"),
        ({"pipeline": "tensor", "params": {"shape": [-1]}}, "non-negative integers"),
        ({"pipeline": "tensor", "params": {"shape": [2], "nbytes": 2}}, "not both"),
        ({"pipeline": "tensor", "params": {"fill": "zeros"}}, "'fill' must be one of"),
    ],
)
def test_pipeline_params_are_validated(
    server: ServerProcess, body: dict[str, Any], message: str
) -> None:
    response = HTTP.post(server.url + "/v1/streams", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and message in error["message"]


@pytest.mark.parametrize("transport", ["sse", "ndjson"])
def test_resume_in_the_middle_of_a_tensor(server: ServerProcess, transport: str) -> None:
    params = {"nbytes": 1 << 20, "chunk_bytes": 1 << 16, "seed": 5, "start_delay_ms": 200}
    stream_id = start(server.url, {"pipeline": "tensor", "params": params})
    receiver = TensorAssembler()
    opened, first = read_http(server.url, stream_id, transport, limit=9)
    for item in first:
        assert receiver.feed_tensor(item) is None
    # Resume a little before where we stopped: the chunks sent again are ignored.
    opened, rest = read_http(server.url, stream_id, transport, after=first[-1]["seq"] - 3)
    assert opened["recovered"] is True and rest[0]["seq"] == first[-1]["seq"] - 2
    received = [t for t in map(receiver.feed_tensor, rest) if t is not None]
    assert len(received) == 1 and receiver.pending == ()
    assert received[0].array.tobytes() == expected_bytes(received[0].meta, 1 << 20, 1 << 16)


def test_denoise_example_command(server: ServerProcess, tmp_path: Any) -> None:
    command = [sys.executable, "-m", "tokenwire.examples.denoise", "--steps", "3", "--delay-ms"]
    command += ["0", "--width", "24", "--height", "16"]
    png = tmp_path / "final.png"
    local = subprocess.run(
        [*command, "--save", str(png)], capture_output=True, text=True, timeout=60
    )
    assert local.returncode == 0, local.stderr
    assert "in-process hub" in local.stdout and "equals the target" in local.stdout
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    remote = subprocess.run(
        [*command, "--url", server.url, "--transport", "ws"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert remote.returncode == 0, remote.stderr
    assert "over ws" in remote.stdout and "step 3/3" in remote.stdout
    assert "equals the target" in remote.stdout
