"""Tensor throughput over loopback: WebSocket (binary), SSE (base64) and NDJSON.

One real ``tokenwire serve`` process; one client (this process) per run. Each
run starts the built-in ``tensor`` pipeline (``fill: "repeat"``, so producing a
chunk costs the server nothing and the transport is what is measured) and reads
the stream to its end with the real wire parsers (:class:`tokenwire.sse.SSEParser`,
:class:`tokenwire.ndjson.NDJSONParser`, the WebSocket binary chunk frame). Two
clients:

- ``tensor``: every event goes to a :class:`tokenwire.tensors.TensorAssembler`,
  which decodes each chunk into the tensor and verifies its CRC-32;
- ``wire``: frames are parsed, payloads counted, not decoded.

MB/s is tensor bytes / wall time from the first event to the last (10^6 bytes/s).
Server and client share this machine's cores, so CPU time per MB of each side is
reported too, and "cpu-bound": bytes / the busier side's CPU time, the rate with
a core each.

    python bench/tensor_bench.py            # 256 MiB per run (about two minutes)
    python bench/tensor_bench.py --quick    # 64 MiB per run
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
    mode: str  # "tensor": decoded and reassembled; "wire": frames parsed only
    nbytes: int
    seconds: float
    server_cpu: float
    client_cpu: float

    @property
    def mb_s(self) -> float:
        return self.nbytes / self.seconds / MB

    @property
    def cpu_mb_s(self) -> float:
        """The rate if server and client each had a core: bytes / the busier one's CPU time."""
        return self.nbytes / max(self.server_cpu, self.client_cpu, 1e-9) / MB


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


async def one_run(
    url: str, transport: str, chunk_bytes: int, nbytes: int, seed: int, mode: str
) -> float:
    """Stream one tensor; the seconds from its first event to the last."""
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
    received = 0
    first = 0.0
    async for item in remote_events(url, body, transport):
        if not first:
            first = time.perf_counter()
        if mode == "tensor":
            array = assembler.feed(item) if array is None else array
        elif isinstance(item, bytes):
            received += len(item) - (24 + len(item[24 : 24 + item[1] + 2]))  # header, ids
        elif item.get("kind") == "tensor.chunk":
            received += len(item["data"]) * 3 // 4
    seconds = time.perf_counter() - first
    if mode == "wire":
        if received < nbytes - 3 * (nbytes // chunk_bytes):
            raise RuntimeError(f"{transport}: {received} of {nbytes} bytes arrived")
        return seconds
    if array is None:
        raise RuntimeError(f"{transport}: no tensor arrived")
    # Spot-check the content (the assembler verified the checksum of all of it).
    block = pattern_bytes(seed, 0, chunk_bytes).tobytes()
    if array[:chunk_bytes].tobytes() != block or array[-chunk_bytes:].tobytes() != block:
        raise RuntimeError(f"{transport}: wrong content")
    return seconds


def measure(
    url: str, proc: psutil.Process, transport: str, chunk_bytes: int, nbytes: int, mode: str
) -> Result:
    me = psutil.Process()
    s0, c0 = proc.cpu_times(), me.cpu_times()
    seconds = asyncio.run(one_run(url, transport, chunk_bytes, nbytes, chunk_bytes, mode))
    s1, c1 = proc.cpu_times(), me.cpu_times()
    return Result(
        transport,
        chunk_bytes,
        mode,
        nbytes,
        seconds,
        (s1.user + s1.system) - (s0.user + s0.system),
        (c1.user + c1.system) - (c0.user + c0.system),
    )


def table(results: Sequence[Result]) -> str:
    lines = [
        f"{'transport':<9} {'chunk':>7} {'client':<8} {'MB/s':>6} {'cpu-bound':>10} "
        f"{'target':>7} {'server cpu':>10} {'client cpu':>10}",
    ]
    for r in results:
        target = TARGETS_MB_S.get(r.transport)
        lines.append(
            f"{r.transport:<9} {_size(r.chunk_bytes):>7} {r.mode:<8} {r.mb_s:>6.0f} "
            f"{r.cpu_mb_s:>10.0f} {'' if target is None else f'{target:.0f}':>7} "
            f"{r.server_cpu / r.nbytes * 1e9:>7.2f} ms {r.client_cpu / r.nbytes * 1e9:>7.2f} ms"
        )
    return "\n".join(lines)


def _size(n: int) -> str:
    return f"{n // (1 << 20)} MiB" if n >= 1 << 20 else f"{n // 1024} KiB"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 MiB per run instead of 256 MiB")
    parser.add_argument("--nbytes", type=int, default=None, help="tensor bytes per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the best is kept")
    parser.add_argument(
        "--transports", default="ws,sse,ndjson", help="comma-separated: ws, sse, ndjson"
    )
    parser.add_argument(
        "--modes", default="tensor,wire", help="comma-separated: tensor (decode), wire"
    )
    args = parser.parse_args(argv)
    nbytes = args.nbytes or (64 if args.quick else 256) * (1 << 20)
    results: list[Result] = []
    load = os.getloadavg()[0]
    with server() as (url, proc):
        transports = args.transports.split(",")
        if "ws" in transports and not has_websocket(url):
            print("(no /v1/ws on this server: WebSocket skipped)")
            transports.remove("ws")
        for transport in transports:
            for chunk_bytes in CHUNKS:
                for mode in args.modes.split(","):
                    # Warm up (imports, connection, allocator), then keep the best run.
                    measure(url, proc, transport, chunk_bytes, min(nbytes, 16 << 20), mode)
                    runs = [
                        measure(url, proc, transport, chunk_bytes, nbytes, mode)
                        for _ in range(args.repeat)
                    ]
                    best = max(runs, key=lambda r: r.mb_s)
                    results.append(best)
                    print(
                        f"{transport} {_size(chunk_bytes)} {mode}: {best.mb_s:.0f} MB/s "
                        f"({best.cpu_mb_s:.0f} cpu-bound)",
                        flush=True,
                    )
    print()
    print(
        f"Tensor throughput over loopback: {nbytes / MB:.0f} MB per run, best of {args.repeat}; "
        f"{os.cpu_count()} cores, load average {load:.1f} before / "
        f"{os.getloadavg()[0]:.1f} after."
    )
    print("MB/s: wall clock, first event to last. cpu-bound: bytes / the busier side's")
    print("CPU time (each side on its own core). cpu: CPU time per MB, server and client.")
    print("client tensor: chunks decoded into the tensor, CRC-32 verified; wire: frames only.")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
