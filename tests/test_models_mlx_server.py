"""The MLX backend in its worker process, through a real server and the real CLI:
SSE, WebSocket, NDJSON, Socket.IO, a stop within one token, live logprobs,
``tokenwire ask``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import socketio
from httpx_sse import connect_sse
from websockets.asyncio.client import connect

from tests.conftest import ServerFactory, ServerProcess
from tokenwire.events import dumps, loads

pytestmark = pytest.mark.slow

MODEL = "smollm2-mlx"
LONG = "Write a long story about a lighthouse keeper and the sea."
TERMINAL = ("done", "error", "cancelled")


@pytest.fixture(scope="module")
def server(start_server: ServerFactory) -> Iterator[ServerProcess]:
    srv = start_server(TOKENWIRE_MODEL=MODEL)  # the default model: self-checked at start
    wait_for(lambda: httpx.get(srv.url + "/readyz", timeout=5).status_code == 200, 60)
    yield srv
    srv.stop()


def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def worker(server: ServerProcess) -> dict[str, Any]:
    [one] = httpx.get(server.url + "/healthz", timeout=5).json()["workers"][MODEL]["workers"]
    state: dict[str, Any] = one
    return state


def start(server: ServerProcess, **body: Any) -> str:
    resp = httpx.post(server.url + "/v1/streams", json={"model": MODEL, **body}, timeout=10)
    assert resp.status_code == 201, resp.text
    stream_id: str = resp.json()["id"]
    return stream_id


def sse(server: ServerProcess, stream_id: str) -> Iterator[dict[str, Any]]:
    with (
        httpx.Client(base_url=server.url, timeout=httpx.Timeout(60.0)) as client,
        connect_sse(client, "GET", f"/v1/streams/{stream_id}/events") as source,
    ):
        for message in source.iter_sse():
            if message.event in ("tw-open", "open", "heartbeat") or not message.data:
                continue
            event: dict[str, Any] = loads(message.data)
            yield event
            if event["kind"] in TERMINAL:
                return


def test_it_runs_in_a_worker_and_streams_over_sse(server: ServerProcess) -> None:
    state = worker(server)
    assert state["state"] == "ready" and state["pid"] not in (None, server.pid)
    events = list(sse(server, start(server, prompt="Name a fruit.", max_tokens=6, temperature=0)))
    tokens = [e for e in events if e["kind"] == "token"]
    assert [e["kind"] for e in events][-2:] == ["metrics", "done"]
    assert "".join(e["text"] for e in tokens) == "The fruit I mentioned is the"
    metrics, done = events[-2], events[-1]
    assert {"ttft_ms", "tokens", "tokens_per_s"} <= set(metrics)
    assert metrics["tokens"] == 6 and metrics["ttft_ms"] > 0
    assert done["finish_reason"] == "length" and done["usage"]["completion_tokens"] == 6
    assert "logprob" not in tokens[0]  # only when asked for
    # MLX runs in the worker only: the server process never loads it.
    with open(f"/proc/{server.pid}/maps") as f:
        assert "libmlx" not in f.read()
    with open(f"/proc/{state['pid']}/maps") as f:
        assert "libmlx" in f.read()


def test_it_streams_over_websocket(server: ServerProcess) -> None:
    async def run() -> list[dict[str, Any]]:
        url = server.url.replace("http://", "ws://") + "/v1/ws"
        request = {"model": MODEL, "prompt": "Name a fruit.", "max_tokens": 4, "temperature": 0}
        frames = []
        async with connect(url) as ws:
            await ws.send(dumps({"op": "start", "id": "m1", "request": request}).decode())
            while True:
                frame = loads(await asyncio.wait_for(ws.recv(), 60))
                frames.append(frame)
                if frame.get("type") == "event" and frame.get("kind") in TERMINAL:
                    return frames

    frames = asyncio.run(run())
    assert frames[0]["type"] == "started"
    events = [f for f in frames if f["type"] == "event"]
    assert "".join(f["text"] for f in events if f["kind"] == "token") == "The fruit I mentioned"
    assert events[-1]["kind"] == "done" and events[-1]["usage"]["completion_tokens"] == 4


def test_it_streams_over_ndjson_and_socketio_live(server: ServerProcess) -> None:
    async def run() -> tuple[list[dict[str, Any]], list[tuple[str, Any]]]:
        stream_id = start(server, prompt="Name a fruit.", max_tokens=4, temperature=0)
        sio = socketio.AsyncClient(reconnection=False)
        received: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        async def on_any(name: str, *args: Any) -> None:
            received.put_nowait((name, args[0] if args else None))

        sio.on("*", on_any)
        await sio.connect(server.url, transports=["websocket"], wait_timeout=10)
        try:
            ack = await sio.call("subscribe", {"jobId": stream_id, "lastSequence": 0}, timeout=10)
            assert ack == {"ok": True, "jobId": stream_id}
            lines: list[dict[str, Any]] = []
            async with (
                httpx.AsyncClient(base_url=server.url, timeout=60) as http,
                http.stream("GET", f"/v1/streams/{stream_id}/ndjson") as resp,
            ):
                async for line in resp.aiter_lines():
                    if line:
                        lines.append(loads(line))
            frames = [await asyncio.wait_for(received.get(), 60)]
            while frames[-1][0] not in ("job:completed", "job:error"):
                frames.append(await asyncio.wait_for(received.get(), 60))
        finally:
            await sio.disconnect()
        return lines, frames

    lines, frames = asyncio.run(run())
    assert lines[0]["kind"] == "open" and lines[-1]["kind"] == "done"
    text = "".join(e["text"] for e in lines if e["kind"] == "token")
    assert text == "The fruit I mentioned"
    chunks = [data["chunk"] for name, data in frames if name == "model:chunk"]
    assert "".join(chunks) == text
    assert frames[-1][0] == "job:completed"
    assert frames[-1][1]["usage"]["completion_tokens"] == 4


def test_a_stop_ends_it_within_one_token(server: ServerProcess) -> None:
    wait_for(lambda: worker(server)["state"] == "ready")
    stream_id = start(server, prompt=LONG, max_tokens=500)
    tokens = 0
    terminal: dict[str, Any] = {}
    at_stop = None
    for ev in sse(server, stream_id):
        if ev["kind"] == "token":
            tokens += 1
            if tokens == 2:
                stopped = httpx.delete(f"{server.url}/v1/streams/{stream_id}", timeout=5)
                assert stopped.status_code == 200
                at_stop = httpx.get(f"{server.url}/v1/streams/{stream_id}", timeout=5).json()
        terminal = ev
    assert at_stop is not None and terminal["kind"] == "cancelled"
    assert terminal["seq"] - at_stop["last_seq"] <= 1
    # the worker itself stopped: at most one token crossed the pipe after the cancel
    wait_for(lambda: worker(server)["state"] == "ready", timeout=5.0)
    assert worker(server)["last_cancel"]["tokens_after"] <= 1


def test_token_events_carry_live_logprobs(server: ServerProcess) -> None:
    body = {"prompt": "Name a fruit.", "max_tokens": 4, "temperature": 0, "top_logprobs": 3}
    events = list(sse(server, start(server, **body)))
    tokens = [e for e in events if e["kind"] == "token"]
    assert len(tokens) == 4
    for event in tokens:
        top = event["top_logprobs"]
        assert len(top) == 3 and [set(t) for t in top] == [{"token", "logprob"}] * 3
        values = [t["logprob"] for t in top]
        assert values == sorted(values, reverse=True) and all(v <= 0 for v in values)
        # greedy: the chosen token is the most likely one
        assert top[0]["token"] == event["text"] and top[0]["logprob"] == event["logprob"]
    assert tokens[0]["top_logprobs"][1]["token"] == "A"  # "The" first, then "A"


def test_top_logprobs_out_of_range_is_a_422(server: ServerProcess) -> None:
    for value in (21, -1, 2.5, True):
        resp = httpx.post(
            server.url + "/v1/streams",
            json={"model": MODEL, "prompt": "x", "top_logprobs": value},
            timeout=10,
        )
        assert resp.status_code == 422, value  # tokenwire's invalid_request
        assert resp.json()["error"]["code"] == "invalid_request"
        assert "top_logprobs" in resp.json()["error"]["message"]


def test_tokenwire_ask_streams_real_tokens() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("TOKENWIRE_MODEL", None)
    env.pop("TOKENWIRE_MODELS", None)
    args = ["ask", "--model", MODEL, "Name a fruit.", "--max-tokens", "6", "--temperature", "0"]
    proc = subprocess.run(
        [sys.executable, "-m", "tokenwire", *args],
        capture_output=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().strip() == "The fruit I mentioned is the"
    stats = proc.stderr.decode().strip().splitlines()[-1]
    assert stats.startswith("TTFT ") and "6 tokens" in stats
