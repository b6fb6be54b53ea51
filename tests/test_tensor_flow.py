"""Flow control: a 256 MiB tensor to a deliberately slow client keeps the server's
memory bounded by its byte window and retention, not by the tensor.

A real ``tokenwire serve`` with an 8 MiB window and 9 MiB of retention (the window
and a few chunks: less, and the slow client would fall out of retention) streams
the built-in ``tensor`` pipeline, which makes the tensor chunk by chunk (it never
exists whole on the server). The client reads slowly for the first 48 MiB
(sleeping between socket reads, so TCP pushes back), then at full speed, and
checks every byte (CRC-32 and content). Meanwhile the test samples the server's
RSS with psutil, and how far the producer is ahead of the client.

Asserted: peak RSS <= baseline + window + 80 MiB of stated slack, for a 256 MiB
tensor. The slack is where the other bytes go (docs/tensors.md, "Flow control"):
retention keeps the last 9 MiB of chunks for resumers plus their SSE encoding
(4/3 of that) once read; the SSE endpoint writes what its cursor read in one
body, so up to a window of encoded chunks is in flight, joined twice (the batch,
then uvicorn's chunked framing); and the allocator keeps freed chunk buffers.
Measured here: SSE +71 MiB, WebSocket +23 MiB. Without the window the producer
would be done (and the slow client dropped by retention) within the first second.

Also here, pure: making a tensor chunk by chunk (``tensor_frames_from_chunks``),
which is what lets a producer stay within the window.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
from websockets.sync.client import connect

from tests.conftest import ServerFactory
from tokenwire.events import TERMINAL_KINDS, dumps, loads
from tokenwire.examples.synthetic import pattern_bytes
from tokenwire.sse import SSEParser
from tokenwire.tensors import (
    TensorAssembler,
    decode_chunk_frame,
    tensor_frames_from_chunks,
    tensor_to_frames,
)

pytestmark = pytest.mark.slow

MiB = 1 << 20
WINDOW = 8 * MiB
RETENTION = 9 * MiB
SLACK = 80 * MiB
NBYTES = 256 * MiB
CHUNK = 256 * 1024
SLOW_BYTES = 48 * MiB  # the client reads this much of the tensor slowly
SLOW_READ_SLEEP_S = 0.003  # after each socket read of at most 64 KiB: ~15-20 MB/s


class RSSMonitor:
    """Samples a process's RSS every few milliseconds on a thread; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self.samples += 1
            time.sleep(0.005)

    @contextmanager
    def watching(self) -> Iterator[RSSMonitor]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()


class Progress:
    """How far the client and the producer are, sampled while the client is slow."""

    def __init__(self) -> None:
        self.received = 0  # tensor bytes the client has
        self.max_lead = 0  # the most the producer was ahead of the client, in bytes

    def sample(self, client: httpx.Client, status_url: str) -> None:
        # seq 1 is the header; seq n >= 2 is chunk n - 2, so last_seq - 1 chunks exist.
        produced = (client.get(status_url).json()["last_seq"] - 1) * CHUNK
        self.max_lead = max(self.max_lead, min(produced, NBYTES) - self.received)


def body() -> dict[str, Any]:
    # The window throttles a producer only while someone is subscribed: the delay lets
    # the client attach first (docs/tensors.md).
    params = {"nbytes": NBYTES, "chunk_bytes": CHUNK, "seed": 11, "start_delay_ms": 300}
    return {"pipeline": "tensor", "params": params}


def read_sse_slowly(url: str, progress: Progress) -> Any:
    receiver = TensorAssembler(max_bytes=NBYTES)
    parser = SSEParser(max_line_bytes=4 * MiB)
    array = None
    with httpx.Client(base_url=url, timeout=60) as client:
        stream_id = client.post("/v1/streams", json=body()).json()["id"]
        with client.stream("GET", f"/v1/streams/{stream_id}/events") as response:
            reads = 0
            for data in response.iter_raw():
                for message in parser.feed(data):
                    if message.event == "tw-open":
                        continue
                    event = loads(message.data)
                    assert event["kind"] not in ("error", "cancelled"), event
                    if event["kind"] == "tensor.chunk":
                        progress.received += CHUNK
                    array = receiver.feed(event) if array is None else array
                    if event["kind"] in TERMINAL_KINDS:
                        return array
                if progress.received < SLOW_BYTES:
                    time.sleep(SLOW_READ_SLEEP_S)
                    reads += 1
                    if reads % 50 == 0:
                        progress.sample(client, f"/v1/streams/{stream_id}")
    raise AssertionError("the SSE response ended before its terminal event")


def read_ws_slowly(url: str, progress: Progress) -> Any:
    receiver = TensorAssembler(max_bytes=NBYTES)
    array = None
    ws_url = "ws" + url.removeprefix("http") + "/v1/ws"
    # max_queue=2: the client's reader thread stops reading the socket when two
    # messages wait, so a slow recv() loop pushes back through TCP.
    with (
        httpx.Client(base_url=url, timeout=60) as client,
        connect(ws_url, max_size=None, compression=None, max_queue=2) as ws,
    ):
        ws.send(dumps({"op": "start", "request": body()}).decode())
        stream_id = None
        reads = 0
        while True:
            message = ws.recv(timeout=60)
            if isinstance(message, bytes):
                event: Any = message
                progress.received += len(decode_chunk_frame(message)[1]["data"])
            else:
                event = loads(message)
                if event["type"] == "started":
                    stream_id = event["stream"]
                    continue
                assert event["type"] in ("open", "event", "heartbeat"), event
                if event["type"] != "event":
                    continue
                assert event["kind"] not in ("error", "cancelled"), event
            array = receiver.feed(event) if array is None else array
            if not isinstance(event, bytes) and event["kind"] in TERMINAL_KINDS:
                return array
            if progress.received < SLOW_BYTES:
                time.sleep(SLOW_READ_SLEEP_S * 4)  # a message is 256 KiB: 4 socket reads
                reads += 1
                if reads % 12 == 0:
                    progress.sample(client, f"/v1/streams/{stream_id}")


def warm_up(url: str) -> None:
    """One small tensor on every path first, so imports and caches are in the baseline."""
    with httpx.Client(base_url=url, timeout=30) as client:
        params = {"nbytes": MiB, "chunk_bytes": CHUNK}
        stream_id = client.post("/v1/streams", json={"pipeline": "tensor", "params": params})
        client.get(f"/v1/streams/{stream_id.json()['id']}/events")
    with connect("ws" + url.removeprefix("http") + "/v1/ws", compression=None) as ws:
        ws.send(
            dumps({"op": "start", "request": {"pipeline": "tensor", "params": params}}).decode()
        )
        while not (isinstance(m := ws.recv(timeout=30), str) and '"kind":"done"' in m):
            pass


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_slow_client_keeps_server_memory_bounded_by_the_window(
    start_server: ServerFactory, transport: str
) -> None:
    server = start_server(
        TOKENWIRE_WINDOW_BYTES=str(WINDOW),
        TOKENWIRE_RETENTION_BYTES=str(RETENTION),
        TOKENWIRE_RETENTION_TTL_S="1",
    )
    warm_up(server.url)
    time.sleep(1.5)  # the warm-up streams expire: their bytes are not in the baseline
    progress = Progress()
    read = read_sse_slowly if transport == "sse" else read_ws_slowly
    with RSSMonitor(server.pid).watching() as rss:
        array = read(server.url, progress)

    assert array is not None and array.nbytes == NBYTES  # the checksum was verified
    for offset in (0, SLOW_BYTES, NBYTES - CHUNK):
        assert (
            array[offset : offset + CHUNK].tobytes() == pattern_bytes(11, offset, CHUNK).tobytes()
        )
    growth = rss.peak - rss.baseline
    print(
        f"\n{transport}: 256 MiB to a slow client; window {WINDOW // MiB} MiB, retention "
        f"{RETENTION // MiB} MiB: server RSS baseline {rss.baseline / MiB:.0f} MiB, peak "
        f"{rss.peak / MiB:.0f} MiB (+{growth / MiB:.1f} MiB, {rss.samples} samples); "
        f"producer at most {progress.max_lead / MiB:.1f} MiB ahead of the client"
    )
    assert rss.samples > 100
    assert growth <= WINDOW + SLACK
    # The producer was held back: never further ahead of what the client had than the
    # window, the batch in flight and the socket buffers (no timing involved).
    assert 0 < progress.max_lead <= 3 * WINDOW + 16 * MiB


# -- making a tensor piece by piece (pure) ----------------------------------------------


def test_frames_from_chunks_equal_frames_of_the_whole_array() -> None:
    x = np.arange(1000, dtype=">f4").reshape(10, 100)
    data = x.astype("<f4").tobytes()
    pieces = (data[i : i + 96] for i in range(0, len(data), 96))
    lazy = list(
        tensor_frames_from_chunks(
            [10, 100], "float32", pieces, chunk_bytes=96, tensor_id="t", meta={"a": 1}
        )
    )
    whole = list(tensor_to_frames(x, chunk_bytes=96, tensor_id="t", meta={"a": 1}))
    assert lazy == whole
    out = None
    receiver = TensorAssembler()
    for event in lazy:
        out = receiver.feed(event)
    assert out is not None and np.array_equal(out, x)


def test_frames_from_chunks_pull_one_chunk_at_a_time() -> None:
    pulled: list[int] = []

    def chunks() -> Iterator[bytes]:
        for i in range(4):
            pulled.append(i)
            yield bytes([i]) * 8

    frames = tensor_frames_from_chunks([32], "uint8", chunks(), chunk_bytes=8)
    assert next(frames).kind == "tensor.header" and pulled == []
    assert next(frames).binary == b"\0" * 8 and pulled == [0]
    assert next(frames).binary == b"\1" * 8 and pulled == [0, 1]


@pytest.mark.parametrize(
    ("sizes", "match"),
    [([8, 4], "chunk 1 has 4 bytes, expected 8"), ([8], "chunk 1 is missing"), ([8, 8, 1], "more")],
)
def test_frames_from_chunks_check_sizes(sizes: list[int], match: str) -> None:
    frames = tensor_frames_from_chunks([16], "uint8", (b"x" * n for n in sizes), chunk_bytes=8)
    with pytest.raises(ValueError, match=match):
        list(frames)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (([4], "float128", 8), "unsupported dtype"),
        (([-1], "uint8", 8), "invalid shape"),
        (([4], "float32", 6), "not a multiple"),
        (([4], "uint8", 0), "positive int"),
    ],
)
def test_frames_from_chunks_bad_arguments(args: tuple[Any, ...], match: str) -> None:
    shape, dtype, chunk_bytes = args
    with pytest.raises(ValueError, match=match):
        tensor_frames_from_chunks(shape, dtype, [], chunk_bytes=chunk_bytes)


def test_pattern_bytes_are_a_function_of_the_offset() -> None:
    whole = pattern_bytes(7, 0, 1000).tobytes()
    for offset, size in [(0, 1), (3, 17), (8, 8), (13, 500), (999, 1)]:
        assert pattern_bytes(7, offset, size).tobytes() == whole[offset : offset + size]
    assert pattern_bytes(8, 0, 64).tobytes() != whole[:64]
    assert len(set(whole)) > 200  # looks random
