"""The Python client's cost per event and the most events/s it consumes.

Two parts, one table each:

1. **Parse and dispatch, no network.** Pre-recorded wire bytes of a token
   stream (SSE, NDJSON, WebSocket ``?batch=1`` messages) are replayed through
   the real client path: the transport driver feeds them to the framing (the
   project's parser), the :class:`ResumeMachine` dedups and emits ``Deliver``,
   the driver updates the tracker and the bounded buffer, and the application
   iterates the :class:`StreamHandle`. Reported in µs per event, beside the
   parser alone for reference.
2. **A real server.** ``tokenwire serve`` (scripted model, ``delay_ms=0``,
   ``max_tokens`` 32768) streams to one client as fast as it can; the client
   consumes N streams at once. Reported as events/s: *seqs* are the events of
   the stream (a merged catch-up frame counts every seq it covers), *frames*
   what the client actually parsed and dispatched.

Run: ``python -m bench.client_bench [--events 100000] [--url http://…]`` (without
``--url`` a server is started on a free port). Prints the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx

from tokenwire import sse
from tokenwire.client import Client, ReconnectPolicy
from tokenwire.client.handle import StreamHandle
from tokenwire.client.transport import Transport
from tokenwire.client.wire import Framing, NDJSONFraming, SSEFraming, ws_message
from tokenwire.client.ws import WSTransport
from tokenwire.events import Event, dumps, loads, open_frame
from tokenwire.models.scripted import scripted_token
from tokenwire.ndjson import NDJSONParser
from tokenwire.sse import SSEParser

SID = "st_bench"
READ = 16 * 1024  # bytes per simulated socket read


# -- part 1: replay ---------------------------------------------------------------------------


def recorded_events(n: int) -> list[Event]:
    out = [Event("token", {"text": scripted_token(i)}, seq=i + 1) for i in range(n)]
    out.append(Event("done", {"finish_reason": "length", "usage": None}, seq=n + 1))
    return out


def prelude() -> dict[str, Any]:
    return open_frame(SID, "e1", recovered=True, first_seq=1, last_seq=0, status="running")


def sse_bytes(events: list[Event]) -> bytes:
    head = sse.frame(dumps(prelude()), event="open", retry=2000)
    return head + b"".join(e.sse() for e in events)


def ndjson_bytes(events: list[Event]) -> bytes:
    head = dumps({"kind": "open", **prelude()}) + b"\n"
    return head + b"".join(e.json() + b"\n" for e in events)


def ws_messages(events: list[Event], batch: int = 32) -> list[str]:
    """What the server sends with ``?batch=1``: up to ``batch`` frames a message."""
    sid = dumps(SID)
    frames = [b'{"type":"event","stream":' + sid + b"," + e.json()[1:] for e in events]
    out = [dumps({"type": "open", **prelude()}).decode()]
    for i in range(0, len(frames), batch):
        out.append(b"\n".join(frames[i : i + batch]).decode())
    return out


def chunks(data: bytes) -> list[bytes]:
    return [data[i : i + READ] for i in range(0, len(data), READ)]


class ReplayTransport(Transport):
    """A transport whose link replays recorded reads: the driver, machine, tracker and
    buffer are the real ones; only the socket is missing."""

    kind = "replay"

    def __init__(
        self,
        reads: list[Any],
        feed: Callable[[ReplayTransport, Any, float], None],
        framing: Callable[[], Framing] = SSEFraming,
    ) -> None:
        super().__init__(SID, policy=ReconnectPolicy(), heartbeat_s=15.0)
        self.reads = reads
        self.feed = feed
        self.new_framing = framing
        self.framing: Framing | None = None
        self._next = 0

    async def _open(self, after: int) -> None:
        self.framing = self.new_framing()
        self._next = 0

    async def _receive(self) -> None:
        data = self.reads[self._next]
        self._next += 1
        now = asyncio.get_running_loop().time()
        self.machine.bytes_received(now)
        self.feed(self, data, now)

    async def _drop(self, reason: str) -> None:
        return None


def feed_bytes(t: ReplayTransport, data: bytes, now: float) -> None:
    assert t.framing is not None
    t.framing.feed(data, t.machine, now)


def feed_ws(t: ReplayTransport, message: str, now: float) -> None:
    # What WSConnection (split the batch, parse) and WSTransport._feed do per frame.
    for line in message.split("\n"):
        WSTransport._feed(t, ws_message(line), now)  # type: ignore[arg-type]


async def replay(
    reads: list[Any],
    feed: Callable[[ReplayTransport, Any, float], None],
    framing: Callable[[], Framing],
) -> int:
    transport = ReplayTransport(reads, feed, framing)
    transport.start()
    handle = StreamHandle(transport)
    count = 0
    async for _ in handle:
        count += 1
    return count


def parse_only(kind: str, reads: list[Any]) -> int:
    count = 0
    if kind == "sse":
        sse_parser = SSEParser()
        for data in reads:
            for msg in sse_parser.feed(data):
                loads(msg.data)
                count += 1
    elif kind == "ndjson":
        nd_parser = NDJSONParser()
        for data in reads:
            count += len(nd_parser.feed(data))
    else:
        for message in reads:
            for line in message.split("\n"):
                loads(line)
                count += 1
    return count


def best_of(rounds: int, fn: Callable[[], int]) -> tuple[float, int]:
    best = float("inf")
    count = 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        count = fn()
        best = min(best, time.perf_counter() - t0)
    return best, count


def part_replay(n: int, rounds: int) -> list[tuple[str, float, float, float]]:
    events = recorded_events(n)
    cases: list[tuple[str, list[Any], Any, Callable[[], Framing]]] = [
        ("sse", chunks(sse_bytes(events)), feed_bytes, SSEFraming),
        ("ndjson", chunks(ndjson_bytes(events)), feed_bytes, NDJSONFraming),
        ("ws", ws_messages(events), feed_ws, SSEFraming),
    ]
    rows = []
    for kind, reads, feed, framing in cases:
        parse_s, parsed = best_of(rounds, lambda r=reads, k=kind: parse_only(k, r))  # type: ignore[misc]
        full_s, delivered = best_of(
            rounds,
            lambda r=reads, f=feed, g=framing: asyncio.run(replay(r, f, g)),  # type: ignore[misc]
        )
        if delivered != n + 1:
            raise RuntimeError(f"{kind}: delivered {delivered} of {n + 1} events")
        per_event = full_s / delivered * 1e6
        rows.append((kind, parse_s / parsed * 1e6, per_event, delivered / full_s))
    return rows


# -- part 2: a real server ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server() -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    env = {**os.environ, "TOKENWIRE_MODEL": "scripted", "TOKENWIRE_RETENTION_EVENTS": "200000"}
    cmd = [
        sys.executable,
        "-m",
        "tokenwire",
        "serve",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not start")


async def consume(
    url: str, transport: str, streams: int, tokens: int, delay_ms: float
) -> tuple[float, int, int, float]:
    """Seconds, seqs covered, frames dispatched and the client's CPU seconds, for
    ``streams`` streams at once."""
    async with Client(url, transport) as client:

        async def one() -> tuple[int, int]:
            handle = await client.start(
                model="scripted", prompt="bench", max_tokens=tokens, delay_ms=delay_ms
            )
            seqs = frames = 0
            async for event in handle:
                frames += 1
                seqs += event.seq - event.fields.get("from_seq", event.seq) + 1
            return seqs, frames

        t0 = time.perf_counter()
        cpu0 = time.process_time()
        results = await asyncio.gather(*(one() for _ in range(streams)))
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    return elapsed, sum(r[0] for r in results), sum(r[1] for r in results), cpu


def part_server(
    url: str, tokens: int, rounds: int
) -> list[tuple[str, str, float, float, float, float]]:
    # Fast streams (the server merges what the client has not read yet), then many
    # live streams, one token a millisecond each: frames unmerged, one event each.
    loads = [(1, tokens, 0.0), (8, tokens, 0.0), (64, 2000, 1.0)]
    rows = []
    for transport in ("sse", "ndjson", "ws"):
        for streams, n, delay_ms in loads:
            best: tuple[float, int, int, float] | None = None
            for _ in range(rounds):
                result = asyncio.run(consume(url, transport, streams, n, delay_ms))
                if best is None or result[0] < best[0]:
                    best = result
            assert best is not None
            elapsed, seqs, frames, cpu = best
            label = f"{streams}x{n}" + (f" @{delay_ms:g}ms" if delay_ms else "")
            rows.append(
                (transport, label, seqs / elapsed, frames / elapsed, seqs / frames, cpu / elapsed)
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--tokens", type=int, default=32_768)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--url", default=None, help="a running server (else one is started)")
    parser.add_argument("--no-server", action="store_true", help="only the replay part")
    args = parser.parse_args(argv)

    print(f"client parse and dispatch, {args.events} token events replayed (best of {args.rounds})")
    print(f"{'transport':<10} {'parse only µs/ev':>17} {'full path µs/ev':>16} {'events/s':>12}")
    for kind, parse_us, full_us, rate in part_replay(args.events, args.rounds):
        print(f"{kind:<10} {parse_us:>17.2f} {full_us:>16.2f} {rate:>12,.0f}")
    if args.no_server:
        return 0

    proc = None
    url = args.url
    if url is None:
        url, proc = start_server()
    try:
        print()
        print("one client vs a real server (scripted model), N streams x tokens at once")
        head = f"{'seqs/s':>12} {'frames/s':>12} {'seqs/frame':>11} {'client CPU':>10}"
        print(f"{'transport':<10} {'streams':>16} {head}")
        for transport, streams, seq_rate, frame_rate, merge, cpu in part_server(
            url, args.tokens, args.rounds
        ):
            rates = f"{seq_rate:>12,.0f} {frame_rate:>12,.0f} {merge:>11.1f} {cpu:>10.0%}"
            print(f"{transport:<10} {streams:>16} {rates}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
