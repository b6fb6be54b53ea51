"""Tensor throughput over loopback: SSE (base64) and WebSocket (binary), and NDJSON.

One real ``tokenwire serve`` process; one client (this process) per run. Each
run starts the built-in ``tensor`` pipeline (``fill: "repeat"``, so producing a
chunk costs the server nothing and the transport is what is measured) and reads
the stream to its end with the real wire parsers (:class:`tokenwire.sse.SSEParser`,
:class:`tokenwire.ndjson.NDJSONParser`, the WebSocket binary chunk frame), feeding
every event to a :class:`tokenwire.tensors.TensorAssembler`, which verifies the
CRC-32 of the reassembled tensor. The figure is tensor bytes / wall time from
the first event received to the reassembled tensor, in MB/s (10^6 bytes/s). Server
and client share this machine's cores; CPU-seconds of each are reported so the
bottleneck shows.

    python bench/tensor_bench.py            # 256 MB per run (about a minute)
    python bench/tensor_bench.py --quick    # 64 MB per run
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from tokenwire.examples.remote import remote_events  # noqa: E402
from tokenwire.examples.synthetic import pattern_bytes  # noqa: E402
from tokenwire.tensors import TensorAssembler  # noqa: E402

TARGETS_MB_S = {"ws": 500.0, "sse": 150.0}
CHUNKS = (64 * 1024, 1024 * 1024)
MB = 1e6
# The window throttles a producer only while someone is subscribed: the pipeline
# waits this long so the client's GET is attached before the first chunk.
START_DELAY_MS = 100


@dataclass
class Result:
    transport: str
    chunk_bytes: int
    nbytes: int
    seconds: float
    server_cpu: float
    client_cpu: float

    @property
    def mb_s(self) -> float:
        return self.nbytes / self.seconds / MB


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def server(**env: str) -> Iterator[tuple[str, psutil.Process]]:
    """A real ``tokenwire serve`` on a free port."""
    port = _free_port()
    full_env = {**os.environ, "TOKENWIRE_MODEL": "scripted", **env}
    cmd = [sys.executable, "-m", "tokenwire", "serve", "--port", str(port)]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [*cmd, "--log-level", "warning"], env=full_env, stdout=log, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(url + "/healthz", timeout=1).raise_for_status()
                    break
                except httpx.HTTPError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        raise RuntimeError(
                            f"server did not start:\n{log.read().decode()}"
                        ) from None
                    time.sleep(0.05)
            yield url, psutil.Process(proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)


def has_websocket(url: str) -> bool:
    """Whether the server has ``/v1/ws``."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    try:
        with connect("ws" + url.removeprefix("http") + "/v1/ws", open_timeout=5):
            return True
    except InvalidStatus:
        return False


async def one_run(url: str, transport: str, chunk_bytes: int, nbytes: int, seed: int) -> float:
    """Stream one tensor; the seconds from its first event to its reassembly."""
    body = {
        "pipeline": "tensor",
        "params": {
            "nbytes": nbytes,
            "chunk_bytes": chunk_bytes,
            "fill": "repeat",
            "seed": seed,
            "start_delay_ms": START_DELAY_MS,
        },
    }
    assembler = TensorAssembler(max_bytes=nbytes)
    array = None
    first = 0.0
    async for item in remote_events(url, body, transport):
        if not first:
            first = time.perf_counter()
        received = assembler.feed(item)
        if received is not None:
            array = received
    seconds = time.perf_counter() - first
    if array is None:
        raise RuntimeError(f"{transport}: no tensor arrived")
    # Spot-check the content (the assembler verified the checksum of all of it).
    block = pattern_bytes(seed, 0, chunk_bytes).tobytes()
    if array[:chunk_bytes].tobytes() != block or array[-chunk_bytes:].tobytes() != block:
        raise RuntimeError(f"{transport}: wrong content")
    return seconds


def measure(
    url: str, proc: psutil.Process, transport: str, chunk_bytes: int, nbytes: int
) -> Result:
    me = psutil.Process()
    s0, c0 = proc.cpu_times(), me.cpu_times()
    seconds = asyncio.run(one_run(url, transport, chunk_bytes, nbytes, seed=chunk_bytes))
    s1, c1 = proc.cpu_times(), me.cpu_times()
    return Result(
        transport,
        chunk_bytes,
        nbytes,
        seconds,
        (s1.user + s1.system) - (s0.user + s0.system),
        (c1.user + c1.system) - (c0.user + c0.system),
    )


def table(results: Sequence[Result]) -> str:
    lines = [
        f"{'transport':<10} {'chunk':>8} {'MB':>6} {'MB/s':>8} {'target':>7} "
        f"{'server cpu s':>12} {'client cpu s':>12}",
    ]
    for r in results:
        target = TARGETS_MB_S.get(r.transport)
        mark = "" if target is None else (" ok" if r.mb_s >= target else " LOW")
        lines.append(
            f"{r.transport:<10} {_size(r.chunk_bytes):>8} {r.nbytes / MB:>6.0f} {r.mb_s:>8.0f} "
            f"{'' if target is None else f'{target:.0f}':>7} "
            f"{r.server_cpu:>12.2f} {r.client_cpu:>12.2f}{mark}"
        )
    return "\n".join(lines)


def _size(n: int) -> str:
    return f"{n // (1 << 20)} MiB" if n >= 1 << 20 else f"{n // 1024} KiB"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 MB per run instead of 256 MB")
    parser.add_argument("--nbytes", type=int, default=None, help="tensor bytes per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the best is kept")
    parser.add_argument(
        "--transports", default="ws,sse,ndjson", help="comma-separated: ws, sse, ndjson"
    )
    args = parser.parse_args(argv)
    nbytes = args.nbytes or (64 if args.quick else 256) * (1 << 20)
    results: list[Result] = []
    with server() as (url, proc):
        transports = args.transports.split(",")
        if "ws" in transports and not has_websocket(url):
            print("(no /v1/ws on this server yet: WebSocket skipped)")
            transports.remove("ws")
        for transport in transports:
            for chunk_bytes in CHUNKS:
                # Warm up (imports, first connection), then keep the best of the runs.
                measure(url, proc, transport, chunk_bytes, min(nbytes, 8 << 20))
                runs = [
                    measure(url, proc, transport, chunk_bytes, nbytes) for _ in range(args.repeat)
                ]
                best = max(runs, key=lambda r: r.mb_s)
                results.append(best)
                print(f"{transport} {_size(chunk_bytes)}: {best.mb_s:.0f} MB/s", flush=True)
    print()
    print(f"tensor throughput over loopback, {os.cpu_count()} cores, best of {args.repeat}")
    print(table(results))
    low = [r for r in results if r.transport in TARGETS_MB_S and r.mb_s < TARGETS_MB_S[r.transport]]
    return 1 if low else 0


if __name__ == "__main__":
    sys.exit(main())
