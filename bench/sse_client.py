"""A client process for the fan-out bench: many raw SSE connections on one loop.

Each connection is an :class:`asyncio.Protocol` (no HTTP library): it writes the
GET by hand, skips the response head, and scans each read for ``data:`` lines
with one regular expression. It checks that ``seq`` is contiguous from 1, counts
token events (a merged catch-up frame ``{"seq": b, "from_seq": a}`` counts as
``b - a + 1``) and records publish-to-receive latency per token from the stamp
in its text. The receive time is taken once per read.

Talks to the orchestrator over stdio:

- prints ``READY <attached> <failed>`` once every connection has its response head;
- ``fanout``: runs until every connection has seen the terminal event (or
  ``--timeout``), writes the latencies (int64 ns) to ``--out``, prints a JSON result;
- ``idle``: waits for a line on stdin, closes everything, prints ``CLOSED``.

Run: ``python -m bench.sse_client --port P --path /v1/streams/ID/events --conns N ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import resource
import sys
import time
from array import array
from typing import cast

from bench import connect

# One SSE event of either server: tokenwire and the peer write the same JSON. Without
# the ``data: `` it is also an NDJSON line (tokenwire's ``/ndjson`` writes that JSON).
FRAME = re.compile(
    rb'(?:data: )?\{"seq":(\d+),"kind":"([a-z.]+)"(?:,"text":"([^"]*)")?(?:,"from_seq":(\d+))?'
)
TERMINAL = (b"done", b"error", b"cancelled")


class Run:
    """What one client process measures, over all its connections."""

    def __init__(self, expect: int) -> None:
        self.expect = expect
        self.latencies = array("q")
        self.attached = 0
        self.finished = 0
        self.failed = 0
        self.errors: list[str] = []
        self.first_stamp = 0
        self.last_token_recv = 0
        self.tokens = 0
        self.frames = 0
        self.reads = 0
        self.all_attached = asyncio.get_running_loop().create_future()
        self.all_finished = asyncio.get_running_loop().create_future()
        self.total = 0

    def fail(self, message: str) -> None:
        self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(message)
        self._check()

    def _check(self) -> None:
        if self.attached + self.failed >= self.total and not self.all_attached.done():
            self.all_attached.set_result(None)
        if self.finished + self.failed >= self.total and not self.all_finished.done():
            self.all_finished.set_result(None)


class SSEConnection(asyncio.Protocol):
    def __init__(self, run: Run, request: bytes, index: int) -> None:
        self.run = run
        self.request = request
        self.index = index
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.head_done = False
        self.attached = False
        self.next_seq = 1
        self.tokens = 0
        self.done = False
        self.broken = False
        self.closing = False
        self.connect_ns = self.attached_ns = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.transport.write(self.request)

    def _fail(self, message: str) -> None:
        if not self.broken and not self.done:
            self.broken = True
            self.run.fail(f"conn {self.index}: {message}")
            if self.transport is not None:
                self.transport.close()

    def _attach(self) -> None:
        self.attached_ns = time.monotonic_ns()
        self.attached = True
        self.run.attached += 1
        self.run._check()

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        run = self.run
        run.reads += 1
        if self.buf:
            data = self.buf + data
        if not self.head_done:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            if not data.startswith(b"HTTP/1.1 200"):
                self._fail("status " + data[: data.find(b"\r\n")].decode("latin-1"))
                return
            self.head_done = True
            data = data[end + 4 :]
            self._attach()
        cut = data.rfind(b"\n") + 1
        self.buf = data[cut:]
        lat = run.latencies
        expect = self.next_seq
        for seq_b, kind, text, from_b in FRAME.findall(data, 0, cut):
            seq = int(seq_b)
            first = int(from_b) if from_b else seq
            if first != expect or seq < first:
                self._fail(f"got seq {first}..{seq}, expected {expect}")
                return
            expect = seq + 1
            run.frames += 1
            if kind == b"token":
                stamps = text.split()
                if len(stamps) != seq - first + 1:
                    self._fail(f"frame {first}..{seq} carries {len(stamps)} stamps")
                    return
                if first == 1 and (run.first_stamp == 0 or int(stamps[0]) < run.first_stamp):
                    run.first_stamp = int(stamps[0])
                for stamp in stamps:
                    lat.append(now - int(stamp))
                self.tokens += len(stamps)
                run.tokens += len(stamps)
                if now > run.last_token_recv:
                    run.last_token_recv = now
            elif kind in TERMINAL:
                self.next_seq = expect
                self._finish(kind)
                return
        self.next_seq = expect

    def _finish(self, kind: bytes) -> None:
        if self.tokens != self.run.expect:
            self._fail(f"ended ({kind.decode()}) after {self.tokens} of {self.run.expect} tokens")
            return
        self.done = True
        self.run.finished += 1
        self.run._check()
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done and not self.broken and not self.closing:
            self._fail(f"connection lost after seq {self.next_seq - 1}: {exc!r}")


async def connect_all(
    run: Run, host: str, port: int, path: str, conns: int, args: argparse.Namespace
) -> list[SSEConnection]:
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
        "Cache-Control: no-cache\r\n\r\n"
    ).encode()
    run.total = conns
    protocols = [SSEConnection(run, request, i) for i in range(conns)]
    await connect.open_all(protocols, host, port, args, lambda p, why: p._fail(why))
    return protocols


async def amain(args: argparse.Namespace) -> int:
    run = Run(args.expect)
    protocols = await connect_all(run, args.host, args.port, args.path, args.conns, args)
    return await connect.drive(
        "sse_client", run, protocols, args, lambda p, why: p._fail(why), args.mode == "idle"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--conns", type=int, required=True)
    parser.add_argument("--expect", type=int, default=0, help="token events per connection")
    parser.add_argument("--mode", choices=("fanout", "idle"), default="fanout")
    parser.add_argument("--out", default="/dev/null", help="latency samples (int64 ns)")
    parser.add_argument("--timeout", type=float, default=120.0)
    connect.add_arguments(parser)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.conns + 256)), hard))
    import uvloop

    sys.exit(uvloop.run(amain(args)))


if __name__ == "__main__":
    main()
