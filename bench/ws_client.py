"""A client process for the WebSocket and Socket.IO fan-out bench: many raw
WebSocket connections on one loop.

Each connection is an :class:`asyncio.Protocol` (no WebSocket library, no
permessage-deflate offered): it writes the upgrade request by hand, then parses
RFC 6455 frames itself (server frames are unmasked; its own are masked, as the
RFC requires). Two protocols over it:

- ``ws``: tokenwire's ``/v1/ws``; sends ``{"op":"subscribe","stream":ID,"after":0}``
  and reads ``{"type":"event",…}`` text frames;
- ``socketio``: Engine.IO v4 over WebSocket at ``/socket.io/?EIO=4&transport=websocket``;
  sends the Socket.IO CONNECT (``40``), then ``42["subscribe",{"jobId":ID,"lastSequence":0}]``,
  answers Engine.IO pings (``2`` -> ``3``) and reads ``42["model:chunk",{…}]`` packets.

Like :mod:`bench.sse_client`, it checks that seqs are contiguous from 1 (a merged
catch-up frame covering ``a..b`` counts ``b - a + 1`` tokens), records
publish-to-receive latency per token from the stamp in its text (receive time
taken once per read), and talks to the orchestrator over stdout: ``READY
<attached> <failed>`` once every connection has its ``open`` frame, then one
JSON result line; latencies (int64 ns) go to ``--out``. ``--mode idle`` holds the
connections instead until a line on stdin, closes them and prints ``CLOSED``.

Run: ``python -m bench.ws_client --port P --stream ID --conns N --protocol ws ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import resource
import sys
import time
from array import array
from typing import cast

from bench import connect

WS_EVENT = re.compile(
    rb'"seq":(\d+),"kind":"([a-z.]+)"(?:,"text":"([^"]*)")?(?:,"from_seq":(\d+))?'
)
SIO_CHUNK = re.compile(
    rb'"chunk":"([^"]*)","sequence":(\d+),.*?"metadata":\{[^}]*?(?:"from_seq":(\d+))?\}'
)
SIO_OTHER = re.compile(rb'^42\["job:([a-z]+)",\{"jobId":"[^"]*","sequence":(\d+)')
TERMINAL = (b"done", b"error", b"cancelled")
SIO_TERMINAL = {b"completed": b"done", b"error": b"error"}


def mask_frame(opcode: int, payload: bytes) -> bytes:
    """One client frame (FIN set), masked (RFC 6455 §5.3)."""
    key = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


class Run:
    """What one client process measures, over all its connections."""

    def __init__(self, expect: int, total: int) -> None:
        loop = asyncio.get_running_loop()
        self.expect = expect
        self.total = total
        self.latencies = array("q")
        self.attached = self.finished = self.failed = 0
        self.errors: list[str] = []
        self.first_stamp = self.last_token_recv = 0
        self.tokens = self.frames = self.reads = 0
        self.all_attached: asyncio.Future[None] = loop.create_future()
        self.all_finished: asyncio.Future[None] = loop.create_future()

    def fail(self, message: str) -> None:
        self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(message)
        self.check()

    def check(self) -> None:
        if self.attached + self.failed >= self.total and not self.all_attached.done():
            self.all_attached.set_result(None)
        if self.finished + self.failed >= self.total and not self.all_finished.done():
            self.all_finished.set_result(None)


class WSConnection(asyncio.Protocol):
    def __init__(self, run: Run, index: int, host: str, port: int, protocol: str, stream: str):
        self.run = run
        self.index = index
        self.protocol = protocol
        path = {
            "ws": "/v1/ws",
            "ws-batch": "/v1/ws?batch=1",
            "socketio": "/socket.io/?EIO=4&transport=websocket",
        }[protocol]
        key = base64.b64encode(os.urandom(16)).decode()
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.ws = protocol != "socketio"
        if self.ws:
            self.subscribe = json.dumps({"op": "subscribe", "stream": stream, "after": 0})
        else:
            sub = json.dumps(["subscribe", {"jobId": stream, "lastSequence": 0}])
            self.subscribe = "42" + sub
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.head_done = False
        self.attached = False
        self.next_seq = 1
        self.tokens = 0
        self.done = self.broken = self.closing = False
        self.connect_ns = self.attached_ns = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def send_text(self, text: str) -> None:
        if self.transport is not None:
            self.transport.write(mask_frame(0x1, text.encode()))

    def fail(self, message: str) -> None:
        if not self.broken and not self.done:
            self.broken = True
            self.run.fail(f"conn {self.index}: {message}")
            if self.transport is not None:
                self.transport.close()

    def attach(self) -> None:
        if not self.attached:
            self.attached_ns = time.monotonic_ns()
            self.attached = True
            self.run.attached += 1
            self.run.check()

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        self.run.reads += 1
        if self.buf:
            data = self.buf + data
        pos = 0
        if not self.head_done:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            if not data.startswith(b"HTTP/1.1 101"):
                self.fail("status " + data[: data.find(b"\r\n")].decode("latin-1"))
                return
            self.head_done = True
            pos = end + 4
            if self.ws:
                self.send_text(self.subscribe)
        size = len(data)
        texts: list[bytes] = []
        while pos + 2 <= size:
            opcode = data[pos] & 0x0F
            n = data[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if pos + 4 > size:
                    break
                n = int.from_bytes(data[pos + 2 : pos + 4], "big")
                head = 4
            elif n == 127:
                if pos + 10 > size:
                    break
                n = int.from_bytes(data[pos + 2 : pos + 10], "big")
                head = 10
            if pos + head + n > size:
                break
            payload = data[pos + head : pos + head + n]
            pos += head + n
            if opcode == 0x1:
                texts.append(payload)
            elif opcode == 0x9:  # ping
                if self.transport is not None:
                    self.transport.write(mask_frame(0xA, payload))
            elif opcode == 0x8:  # close
                if not self.done:
                    self.fail(f"closed by the server: {payload[:2].hex()}")
                return
        self.buf = data[pos:]
        if texts:
            if self.ws:
                self.ws_texts(texts, now)
            else:
                self.sio_texts(texts, now)

    # -- tokenwire /v1/ws ------------------------------------------------------------

    def ws_texts(self, texts: list[bytes], now: int) -> None:
        if not self.attached:
            for i, text in enumerate(texts):
                if text.startswith(b'{"type":"open"'):
                    self.attach()
                    texts = texts[i + 1 :]
                    break
                if text.startswith(b'{"type":"error"'):
                    self.fail(text.decode())
                    return
        for text in texts:
            # One frame a message, or with ?batch=1 one frame a line (heartbeats match none).
            for seq_b, kind, stamps, from_b in WS_EVENT.findall(text):
                first = int(from_b) if from_b else None
                if not self.event(int(seq_b), first, kind, stamps or None, now):
                    return

    # -- Socket.IO ---------------------------------------------------------------------

    def sio_texts(self, texts: list[bytes], now: int) -> None:
        for text in texts:
            if text.startswith(b'42["model:chunk"'):
                m = SIO_CHUNK.search(text)
                if m is None:
                    self.fail(f"unparsed chunk {text[:80]!r}")
                    return
                stamps, seq_b, from_b = m.groups()
                if not self.event(
                    int(seq_b), int(from_b) if from_b else None, b"token", stamps, now
                ):
                    return
            elif text == b"2":  # Engine.IO ping
                self.send_text("3")
            elif text.startswith(b"0{"):  # Engine.IO open: connect to the namespace
                self.send_text("40")
            elif text.startswith(b"40"):
                self.send_text(self.subscribe)
            elif text.startswith(b'42["job:open"'):
                self.attach()
            elif text.startswith(b'42["job:'):
                m = SIO_OTHER.search(text)
                if m is None:
                    continue
                name, seq_b = m.groups()
                kind = SIO_TERMINAL.get(name, name)
                if not self.event(int(seq_b), None, kind, None, now):
                    return
            elif text.startswith(b'42["error"'):
                self.fail(text.decode())
                return

    # -- both ------------------------------------------------------------------------

    def event(self, seq: int, first: int | None, kind: bytes, text: bytes | None, now: int) -> bool:
        run = self.run
        first = seq if first is None else first
        if first != self.next_seq or seq < first:
            self.fail(f"got seq {first}..{seq}, expected {self.next_seq}")
            return False
        self.next_seq = seq + 1
        run.frames += 1
        if kind == b"token" and text is not None:
            stamps = text.split()
            if len(stamps) != seq - first + 1:
                self.fail(f"frame {first}..{seq} carries {len(stamps)} stamps")
                return False
            if first == 1 and (run.first_stamp == 0 or int(stamps[0]) < run.first_stamp):
                run.first_stamp = int(stamps[0])
            lat = run.latencies
            for stamp in stamps:
                lat.append(now - int(stamp))
            self.tokens += len(stamps)
            run.tokens += len(stamps)
            if now > run.last_token_recv:
                run.last_token_recv = now
        elif kind in TERMINAL:
            if self.tokens != run.expect:
                self.fail(f"ended ({kind.decode()}) after {self.tokens} of {run.expect} tokens")
                return False
            self.done = True
            run.finished += 1
            run.check()
            if self.transport is not None:
                self.transport.close()
            return False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done and not self.broken and not self.closing:
            self.fail(f"connection lost after seq {self.next_seq - 1}: {exc!r}")


async def amain(args: argparse.Namespace) -> int:
    run = Run(args.expect, args.conns)
    conns = [
        WSConnection(run, i, args.host, args.port, args.protocol, args.stream)
        for i in range(args.conns)
    ]
    await connect.open_all(conns, args.host, args.port, args, lambda c, why: c.fail(why))
    return await connect.drive(
        "ws_client", run, conns, args, lambda c, why: c.fail(why), args.mode == "idle"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--conns", type=int, required=True)
    parser.add_argument("--protocol", choices=("ws", "ws-batch", "socketio"), default="ws")
    parser.add_argument("--expect", type=int, default=0, help="token events per connection")
    parser.add_argument("--out", default="/dev/null", help="latency samples (int64 ns)")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--mode", choices=("fanout", "idle"), default="fanout")
    connect.add_arguments(parser)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.conns + 256)), hard))
    import uvloop

    sys.exit(uvloop.run(amain(args)))


if __name__ == "__main__":
    main()
