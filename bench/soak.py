"""``tokenwire bench soak --minutes N``: churn on every transport; nothing may grow.

Against a real ``tokenwire serve`` process (started here on a free port, or
``--url``), client tasks churn without pause: they start streams, subscribe,
read part of a stream, leave (unsubscribe, disconnect, drop the socket), resume
after the last seq they saw, resume at the very end of ended streams, and stop
streams, over SSE, NDJSON, WebSocket, Socket.IO (WebSocket and long-polling),
the OpenAI route and the AI SDK route. Every ``--interval-s`` (a minute) the
server's own figures are printed from ``/metrics``: RSS, asyncio tasks,
subscribers, open fds, event-loop lag (largest of the last 10 s) and active
streams.

At the end the churn stops and the server is given the grace period to let
every stream go. The command fails (exit 1) if

- a figure grows: the last sample is above the second one (the first is the
  warm-up) by more than its slack (RSS 20 % + 16 MiB; tasks, subscribers and
  fds 20 % + 20; streams 20 % + 10), or
- the loop stalled: lag above 1 s in any sample, or
- after the churn, subscribers or active streams are not back to 0, or a client
  operation failed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import socketio
from websockets.asyncio.client import connect

from tokenwire.events import dumps, loads

MIB = 1024 * 1024
FIGURES = ("rss_mib", "tasks", "subscribers", "fds", "lag_s", "own_lag_s", "streams")
SLACK = {  # figure: (relative, absolute)
    "rss_mib": (0.20, 16.0),
    "tasks": (0.20, 20.0),
    "subscribers": (0.20, 20.0),
    "fds": (0.20, 20.0),
    "streams": (0.20, 10.0),
}
MAX_LAG_S = 1.0
# The lag gauges are the largest of the server's last 10 s: read them this often, so
# that a row holds the largest lag of its whole interval.
LAG_POLL_S = 5.0
TIMEOUT = 15.0


# -- the server ---------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def own_server(grace_s: float) -> Any:
    port = free_port()
    env = {
        **os.environ,
        "TOKENWIRE_MODEL": "scripted",
        "TOKENWIRE_GRACE_S": str(grace_s),
        "TOKENWIRE_HEARTBEAT_S": "5",
        "TOKENWIRE_RETENTION_TTL_S": "10",
    }
    log = tempfile.NamedTemporaryFile(prefix="tokenwire-soak-", suffix=".log", delete=False)
    cmd = [sys.executable, "-m", "tokenwire", "serve", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}; see {log.name}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("the server did not answer /healthz within 60 s")
            time.sleep(0.1)
        print(f"server: {url} (pid {proc.pid}, log {log.name})")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


# -- figures ------------------------------------------------------------------------


def series_sum(text: str, name: str) -> float:
    pattern = rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$"
    return sum(float(v) for v in re.findall(pattern, text, re.M))


async def sample(client: httpx.AsyncClient) -> dict[str, float]:
    text = (await client.get("/metrics")).text
    return {
        "rss_mib": series_sum(text, "process_resident_memory_bytes") / MIB,
        "tasks": series_sum(text, "tokenwire_asyncio_tasks"),
        "subscribers": series_sum(text, "tokenwire_subscribers"),
        "fds": series_sum(text, "tokenwire_open_fds"),
        "lag_s": series_sum(text, "tokenwire_event_loop_lag_seconds"),
        "own_lag_s": series_sum(text, "tokenwire_event_loop_own_lag_seconds"),
        "streams": series_sum(text, "tokenwire_streams_active"),
    }


def grown(first: dict[str, float], last: dict[str, float]) -> list[str]:
    out = []
    for name, (rel, absolute) in SLACK.items():
        limit = first[name] * (1 + rel) + absolute
        if last[name] > limit:
            out.append(f"{name} grew {first[name]:.1f} -> {last[name]:.1f} (limit {limit:.1f})")
    return out


# -- churn --------------------------------------------------------------------------


@dataclass
class Tally:
    ops: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def done(self, name: str) -> None:
        self.ops[name] = self.ops.get(name, 0) + 1


class Churn:
    """The client side: one task per (transport, worker), each looping on its op."""

    def __init__(self, url: str, tally: Tally) -> None:
        self.url = url
        self.ws_url = url.replace("http", "ws", 1)
        self.tally = tally
        self.http = httpx.AsyncClient(base_url=url, timeout=TIMEOUT)
        self.ended: list[tuple[str, int]] = []  # (stream, last seq) for end-resumes

    async def start(self, tokens: int = 120) -> str:
        body = {"model": "scripted", "prompt": "soak", "max_tokens": tokens, "delay_ms": 5}
        r = await self.http.post("/v1/streams", json=body)
        r.raise_for_status()
        return str(r.json()["id"])

    async def sse(self, route: str) -> None:
        sid = await self.start()
        seen = 0
        async with self.http.stream("GET", f"/v1/streams/{sid}/{route}") as r:
            async for line in r.aiter_lines():
                if route == "events" and line.startswith("id: "):
                    seen = int(line[4:])
                elif route == "ndjson" and '"seq"' in line:
                    seen = loads(line)["seq"]
                if seen >= random.randint(5, 40):
                    break  # leave mid-stream
        r = await self.http.get(f"/v1/streams/{sid}/{route}", params={"after": seen})
        if '"kind":"done"' not in r.text and "event: done" not in r.text:
            raise AssertionError(f"{route} resume did not reach the end")
        info = (await self.http.get(f"/v1/streams/{sid}")).json()
        self.ended.append((sid, int(info["last_seq"])))
        del self.ended[:-50]

    async def end_resume(self) -> None:
        if not self.ended:
            return
        sid, last = random.choice(self.ended)
        route = random.choice(["events", "ndjson"])
        with contextlib.suppress(httpx.HTTPStatusError):
            r = await self.http.get(f"/v1/streams/{sid}/{route}", params={"after": last})
            # docs/protocol.md: at the end of an ended stream, 204; once expired, 404.
            if r.status_code not in (204, 404) or (r.status_code == 204 and r.content):
                raise AssertionError(f"end resume answered {r.status_code} {r.content[:80]!r}")

    async def ws(self) -> None:
        async with connect(self.ws_url + "/v1/ws") as ws:
            sid = await self.start(tokens=400)
            other = await self.start(tokens=400)
            for stream in (sid, other):
                await ws.send(dumps({"op": "subscribe", "stream": stream}).decode())
            # Subscribe and unsubscribe back to back: the reader has not started yet.
            await ws.send(dumps({"op": "unsubscribe", "stream": other}).decode())
            seen, want = 0, random.randint(5, 30)
            other_frames: collections.deque[str] = collections.deque(maxlen=3)
            while seen < want:
                try:
                    text = await asyncio.wait_for(ws.recv(), TIMEOUT)
                except TimeoutError as exc:
                    raise AssertionError(
                        f"no frame within {TIMEOUT} s at seq {seen} of {sid}; "
                        f"last others: {list(other_frames)}"
                    ) from exc
                frame = loads(text)
                if frame.get("type") == "event" and frame["stream"] == sid:
                    seen = frame["seq"]
                else:
                    other_frames.append(str(text)[:120])
            await ws.send(dumps({"op": "unsubscribe", "stream": sid}).decode())
            await ws.send(dumps({"op": "subscribe", "stream": sid, "after": seen}).decode())
            if random.random() < 0.5:
                await ws.send(dumps({"op": "cancel", "stream": sid}).decode())
            for stream in (sid, other):
                with contextlib.suppress(Exception):
                    await self.http.delete(f"/v1/streams/{stream}")
            if random.random() < 0.3:
                ws.transport.abort()

    async def socketio(self, transport: str) -> None:
        sio = socketio.AsyncClient(reconnection=False)
        got: asyncio.Queue[Any] = asyncio.Queue()
        sio.on("model:chunk", lambda data: got.put_nowait(data))
        sio.on("job:completed", lambda data: got.put_nowait(data))
        step = "connect"
        try:
            await sio.connect(self.url, transports=[transport], wait_timeout=TIMEOUT)
            request = {"model": "scripted", "prompt": "soak", "max_tokens": 300, "delay_ms": 5}
            step = "start"
            ack = await sio.call("start", {"request": request}, timeout=TIMEOUT)
            if not ack.get("ok"):
                raise AssertionError(f"start refused: {ack}")
            sid = ack["jobId"]
            seq, want = 0, random.randint(3, 20)
            step = "chunks"
            while seq < want:
                data = await asyncio.wait_for(got.get(), TIMEOUT)
                seq = data["sequence"]
                if "finish_reason" in data:
                    break  # the whole stream came before enough chunks did
            step = "unsubscribe"
            await sio.call("unsubscribe", {"jobId": sid}, timeout=TIMEOUT)
            await sio.emit("subscribe", {"jobId": sid, "lastSequence": seq})
            if random.random() < 0.5:
                step = "cancel"
                await sio.call("cancel", {"jobId": sid}, timeout=TIMEOUT)
        except (TimeoutError, socketio.exceptions.TimeoutError) as exc:
            raise AssertionError(f"{transport}: no answer within {TIMEOUT} s at {step}") from exc
        finally:
            await sio.disconnect()

    async def chat(self, route: str) -> None:
        if route == "openai":
            path = "/v1/chat/completions"
            body: dict[str, Any] = {"model": "scripted", "stream": True, "max_tokens": 300}
            body["messages"] = [{"role": "user", "content": "soak"}]
        else:
            path = "/v1/ai-sdk/chat"
            message = {"id": "m", "role": "user", "parts": [{"type": "text", "text": "soak"}]}
            body = {"model": "scripted", "messages": [message], "max_tokens": 300}
        async with self.http.stream("POST", path, json=body) as r:
            sid = r.headers.get("x-tokenwire-stream")
            n = 0
            async for _line in r.aiter_lines():
                n += 1
                if n > random.randint(3, 30):
                    break  # a client that goes away: a leave
        if sid and random.random() < 0.5:
            await self.http.delete(f"/v1/streams/{sid}")

    def ops(self) -> dict[str, Callable[[], Awaitable[None]]]:
        return {
            "sse": lambda: self.sse("events"),
            "ndjson": lambda: self.sse("ndjson"),
            "end-resume": self.end_resume,
            "ws": self.ws,
            "socketio-ws": lambda: self.socketio("websocket"),
            "socketio-polling": lambda: self.socketio("polling"),
            "openai": lambda: self.chat("openai"),
            "ai-sdk": lambda: self.chat("ai-sdk"),
        }

    async def loop(self, name: str, op: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(op(), 60)
                self.tally.done(name)
            except Exception as exc:  # every failure is reported
                self.tally.errors.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
            await asyncio.sleep(random.uniform(0.05, 0.3))


# -- the run ------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def row(minute: float, s: dict[str, float], ops: int) -> str:
    return (
        f"| {minute:5.1f} | {s['rss_mib']:7.1f} | {s['tasks']:5.0f} | {s['subscribers']:5.0f} "
        f"| {s['fds']:4.0f} | {s['lag_s']:6.3f} | {s['own_lag_s']:6.3f} | {s['streams']:4.0f} "
        f"| {ops:7d} |"
    )


async def soak(
    url: str, minutes: float, interval_s: float, workers: int, grace_s: float, only: str
) -> int:
    tally = Tally()
    churn = Churn(url, tally)
    loop = asyncio.get_running_loop()

    def quiet(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # python-socketio's polling client leaves aiohttp connections to the GC:
        # client noise, not the server's.
        if "Unclosed" not in str(context.get("message", "")):
            loop.default_exception_handler(context)

    loop.set_exception_handler(quiet)
    stop = asyncio.Event()
    ops = {k: v for k, v in churn.ops().items() if not only or k in only.split(",")}
    tasks = [
        asyncio.create_task(churn.loop(name, op, stop))
        for name, op in ops.items()
        for _ in range(workers)
    ]
    print(f"cpu: {cpu_model()} ({os.cpu_count()} cores), python {platform.python_version()}")
    print(f"{len(tasks)} churn tasks, {minutes:g} min, a sample every {interval_s:g} s\n")
    print("|   min | RSS MiB | tasks |  subs |  fds |  lag s |  own s | strm |     ops |")
    print("| ----: | ------: | ----: | ----: | ---: | -----: | -----: | ---: | ------: |")
    samples: list[dict[str, float]] = []
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as client:
        while time.monotonic() - started < minutes * 60:
            row_end = min(time.monotonic() + interval_s, started + minutes * 60)
            lags = {"lag_s": 0.0, "own_lag_s": 0.0}
            while True:
                await asyncio.sleep(max(0.0, min(LAG_POLL_S, row_end - time.monotonic())))
                s = await sample(client)
                lags = {k: max(v, s[k]) for k, v in lags.items()}
                if time.monotonic() >= row_end:
                    break
            s.update(lags)
            samples.append(s)
            print(row((time.monotonic() - started) / 60, s, sum(tally.ops.values())), flush=True)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await churn.http.aclose()
        # Every leave starts a grace period; after it nothing may be left.
        await asyncio.sleep(grace_s + 3)
        after = await sample(client)
    print(row((time.monotonic() - started) / 60, after, sum(tally.ops.values())) + " after churn")
    print("\nops: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.ops.items())))
    problems: list[str] = []
    if len(samples) >= 3:
        problems += grown(samples[1], samples[-1])
    else:
        print("(fewer than 3 samples: growth is not judged; run longer)")
    # The server's own lag: a stall while its thread waited for a CPU is the machine's.
    problems += [
        f"loop lag {s['own_lag_s']:.3f} s (own) > {MAX_LAG_S} s"
        for s in samples
        if s["own_lag_s"] > MAX_LAG_S
    ]
    for name in ("subscribers", "streams"):
        if after[name] != 0:
            problems.append(f"{name} not back to 0 after the churn: {after[name]:.0f}")
    if tally.errors:
        kinds = collections.Counter(
            e.split(" within ")[0].split(" answered ")[0][:120] for e in tally.errors
        )
        summary = "; ".join(f"{n} x {kind}" for kind, n in kinds.most_common(8))
        problems.append(f"{len(tally.errors)} client operations failed: {summary}")
    for problem in problems:
        print("FAIL:", problem)
    if not problems:
        print("OK: flat")
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval-s", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--workers", type=int, default=2, help="churn tasks per transport")
    parser.add_argument("--url", help="an already running server (default: start one)")
    parser.add_argument("--grace-s", type=float, default=2.0, help="the server's grace period")
    parser.add_argument("--ops", default="", help="comma-separated subset of the churn ops")
    args = parser.parse_args(argv)
    # SIGTERM ends the run like Ctrl-C, so the server started here is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    run = (args.minutes, args.interval_s, args.workers, args.grace_s, args.ops)
    if args.url:
        return asyncio.run(soak(args.url, *run))
    with own_server(args.grace_s) as url:
        return asyncio.run(soak(url, *run))


if __name__ == "__main__":
    sys.exit(main())
