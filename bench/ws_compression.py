"""What WebSocket permessage-deflate costs and saves: ``python -m bench.ws_compression``.

Two ``tokenwire serve`` processes, ``TOKENWIRE_WS_COMPRESSION=1`` and ``=0``; for each:

- wire bytes, server to client, of one stream read over ``/v1/ws`` through a
  counting TCP relay (the client offers deflate, as browsers do): a 300-token
  answer of the embedded model, and a ``denoise`` tensor stream (binary frames);
- server CPU per delivered event: N WebSocket subscribers (default 200) on one
  scripted 300-token stream, the server's user+system CPU time (``/proc``) over
  the whole run divided by N x 300;
- server memory per connection: RSS growth with 500 open connections.

Prints one table; the figures and the decision are in docs/tensors.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx
from websockets.asyncio.client import connect

TERMINAL = ("done", "error", "cancelled")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    def __init__(self, compression: bool) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "TOKENWIRE_WS_COMPRESSION": "1" if compression else "0",
            "TOKENWIRE_MAX_SUBSCRIBERS_PER_STREAM": "10000",
            "TOKENWIRE_MAX_CONNECTIONS_PER_IP": "0",
        }
        self.log = tempfile.NamedTemporaryFile(prefix="tw-bench-", suffix=".log", delete=False)
        cmd = [sys.executable, "-m", "tokenwire", "serve", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the server did not become ready")

    def cpu_s(self) -> float:
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def relay(target_port: int) -> tuple[asyncio.Server, dict[str, int]]:
    """A TCP relay counting the bytes the server sends to the client."""
    counts = {"down": 0}

    async def pipe(reader: Any, writer: Any, count: bool) -> None:
        while data := await reader.read(65536):
            if count:
                counts["down"] += len(data)
            writer.write(data)
            await writer.drain()
        writer.close()

    async def handle(client_r: Any, client_w: Any) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(
            pipe(client_r, server_w, False), pipe(server_r, client_w, True), return_exceptions=True
        )

    return await asyncio.start_server(handle, "127.0.0.1", 0), counts


async def read_stream(url: str, request: dict[str, Any]) -> tuple[int, str]:
    """Start ``request`` over one WebSocket, read to its terminal event: (frames,
    the negotiated extensions)."""
    frames = 0
    async with connect(url, max_size=None) as ws:
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "") if ws.response else ""
        await ws.send(json.dumps({"op": "start", "id": "b", "request": request}))
        while True:
            msg = await ws.recv()
            frames += 1
            if isinstance(msg, str):
                frame = json.loads(msg)
                if frame.get("type") == "event" and frame.get("kind") in TERMINAL:
                    return frames, extensions


async def wire_bytes(server: Server, request: dict[str, Any]) -> tuple[int, int, str]:
    listener, counts = await relay(server.port)
    port = listener.sockets[0].getsockname()[1]
    try:
        frames, extensions = await read_stream(f"ws://127.0.0.1:{port}/v1/ws", request)
        await asyncio.sleep(0.2)
    finally:
        listener.close()
    return counts["down"], frames, extensions


async def fanout_cpu(server: Server, subscribers: int, tokens: int) -> tuple[float, int]:
    """Server CPU seconds per delivered token event, and the token events delivered."""
    body = {"model": "scripted", "prompt": "bench", "max_tokens": tokens, "delay_ms": 20}
    url = f"ws://127.0.0.1:{server.port}/v1/ws"
    ready = asyncio.Event()
    connected = 0
    delivered = 0

    async def subscriber(sid: str) -> None:
        nonlocal connected, delivered
        async with connect(url, max_size=None) as ws:
            await ws.send(json.dumps({"op": "subscribe", "stream": sid}))
            connected += 1
            if connected == subscribers:
                ready.set()
            while True:
                frame = json.loads(await ws.recv())
                if frame.get("type") != "event":
                    continue
                if frame["kind"] == "token":
                    delivered += frame["seq"] - frame.get("from_seq", frame["seq"]) + 1
                if frame["kind"] in TERMINAL:
                    return

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        sid = (await http.post("/v1/streams", json=body)).json()["id"]
    before = server.cpu_s()
    await asyncio.gather(*(subscriber(sid) for _ in range(subscribers)))
    used = server.cpu_s() - before
    return used / max(1, delivered), delivered


def rss(server: Server) -> int:
    for line in open(f"/proc/{server.proc.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def memory_per_connection(server: Server, conns: int) -> float:
    """RSS growth per open WebSocket connection that has been sent one event."""
    url = f"ws://127.0.0.1:{server.port}/v1/ws"
    body = {"model": "scripted", "prompt": "m", "max_tokens": 1}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        sid = (await http.post("/v1/streams", json=body)).json()["id"]
    before = rss(server)
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(conns):
            ws = await stack.enter_async_context(connect(url, max_size=None))
            await ws.send(json.dumps({"op": "subscribe", "stream": sid}))
            while json.loads(await ws.recv()).get("kind") not in TERMINAL:
                pass
        await asyncio.sleep(0.5)
        return (rss(server) - before) / conns


async def main_async(args: argparse.Namespace) -> None:
    rows = []
    for compression in (True, False):
        server = Server(compression)
        try:
            answer = {"prompt": "Write a long story about a lighthouse keeper.", "max_tokens": 300}
            answer_bytes, answer_frames, ext = await wire_bytes(server, answer)
            params = {"width": 128, "height": 128, "steps": 10, "delay_ms": 0, "seed": 1}
            tensor_bytes, _, _ = await wire_bytes(server, {"pipeline": "denoise", "params": params})
            per_event, delivered = await fanout_cpu(server, args.subscribers, 300)
            per_conn = await memory_per_connection(server, args.connections)
        finally:
            server.stop()
        rows.append(
            (compression, answer_bytes, answer_frames, tensor_bytes, per_event, delivered, per_conn)
        )
        print(f"deflate {'on' if compression else 'off'}: negotiated {ext or '-'}")
    print(f"{'deflate':8} {'answer B':>9} {'frames':>6} {'tensor B':>9} "
          f"{'CPU us/event':>12} {'delivered':>9} {'RSS/conn kB':>11}")  # fmt: skip
    for compression, ab, af, tb, pe, d, pc in rows:
        print(f"{'on' if compression else 'off':8} {ab:>9} {af:>6} {tb:>9} "
              f"{pe * 1e6:>12.1f} {d:>9} {pc / 1024:>11.1f}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--connections", type=int, default=500, help="for RSS per connection")
    asyncio.run(main_async(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
