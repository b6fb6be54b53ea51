"""Socket.IO at ``/socket.io/`` end to end: a real server process, python-socketio's
``AsyncClient`` and ``socket.io-client`` from npm under node (``npm ci`` in tests/node)."""

from __future__ import annotations

import asyncio
import random
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import socketio

from tests.conftest import ServerProcess
from tests.resume_checks import assert_scripted_exactly_once, covered
from tokenwire.events import dumps, loads
from tokenwire.examples.denoise import target_image, to_uint8
from tokenwire.tensors import TensorAssembler

pytestmark = pytest.mark.slow

NODE_DIR = Path(__file__).resolve().parent / "node"
TERMINAL = ("job:completed", "job:error")

Received = tuple[str, Any]


def as_event(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """A Socket.IO server event as the tokenwire event it carries."""
    if name == "model:chunk":
        event = {"seq": data["sequence"], "kind": "token", "text": data["chunk"]}
        if "from_seq" in data["metadata"]:
            event["from_seq"] = data["metadata"]["from_seq"]
        return event
    if name == "job:completed":
        return {"seq": data["sequence"], "kind": "done", "usage": data["usage"]}
    if name == "job:error":
        kind = "cancelled" if data["code"] == "cancelled" else "error"
        return {"seq": data["sequence"], "kind": kind, **data}
    if name == "job:progress":
        event = {"seq": data["sequence"], "kind": "progress", **data}
        event.update(data.get("metadata") or {})
        return event
    assert name == "job:event", name
    return {**data, "seq": data["sequence"]}


def job_events(received: list[Received]) -> list[dict[str, Any]]:
    return [as_event(name, data) for name, data in received if "sequence" in (data or {})]


class Client:
    """A python-socketio ``AsyncClient`` that queues every server event it gets."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.queue: asyncio.Queue[Received] = asyncio.Queue()
        self.sio.on("*", self._on_any)

    async def _on_any(self, name: str, *args: Any) -> None:
        self.queue.put_nowait((name, args[0] if args else None))

    async def connect(self, server: ServerProcess) -> Client:
        await self.sio.connect(server.url, transports=["websocket"], wait_timeout=10)
        return self

    async def call(self, event: str, data: Any = None) -> Any:
        return await self.sio.call(event, data, timeout=10)

    async def next(self, timeout: float = 10.0) -> Received:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def until(self, *names: str, timeout: float = 10.0) -> list[Received]:
        """Events up to and including the first named one."""
        out: list[Received] = []
        while not out or out[-1][0] not in names:
            out.append(await self.next(timeout))
        return out

    async def close(self) -> None:
        await self.sio.disconnect()


async def http_start(server: ServerProcess, **body: Any) -> str:
    body.setdefault("model", "scripted")
    body.setdefault("prompt", "hello")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        r = await client.post("/v1/streams", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} missing from /metrics"
    return float(m.group(1))


# -- python-socketio AsyncClient -------------------------------------------------------


async def test_subscribe_gets_chunks_then_completed(server: ServerProcess) -> None:
    job = await http_start(server, max_tokens=30, delay_ms=2)
    client = await Client().connect(server)
    try:
        ack = await client.call("subscribe", {"jobId": job, "lastSequence": 0})
        assert ack == {"ok": True, "jobId": job}
        received = await client.until("job:completed")
    finally:
        await client.close()
    name, opened = received[0]
    assert name == "job:open"
    assert opened["jobId"] == opened["stream"] == job and opened["recovered"] is True
    chunks = [data for name, data in received if name == "model:chunk"]
    assert all(c["jobId"] == job and c["metadata"]["kind"] == "token" for c in chunks)
    assert all(isinstance(c["timestamp"], int) for c in chunks)
    metrics = [data for name, data in received if name == "job:event"]
    assert [m["kind"] for m in metrics] == ["metrics"]
    done = received[-1][1]
    assert done == {
        "jobId": job,
        "sequence": 32,
        "finish_reason": "length",
        "usage": {"prompt_tokens": 1, "completion_tokens": 30, "total_tokens": 31},
    }
    assert_scripted_exactly_once(job_events(received), 30)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    assert metric(text, 'tokenwire_events_delivered_total{transport="socketio"}') >= 32


async def test_start_with_ack_and_two_jobs_on_one_socket(server: ServerProcess) -> None:
    client = await Client().connect(server)
    try:
        first = await client.call("start", {"request": {"prompt": "a", "max_tokens": 20}})
        second = await client.call(
            "start", {"request": {"prompt": "b", "max_tokens": 15, "delay_ms": 2}}
        )
        assert first["ok"] and second["ok"] and first["jobId"] != second["jobId"]
        received: list[Received] = []
        ended: set[str] = set()
        while len(ended) < 2:
            name, data = await client.next()
            received.append((name, data))
            if name in TERMINAL:
                ended.add(data["jobId"])
    finally:
        await client.close()
    for job, tokens in ((first["jobId"], 20), (second["jobId"], 15)):
        mine = [(n, d) for n, d in received if d.get("jobId") == job]
        assert mine[0][0] == "job:open"
        assert_scripted_exactly_once(job_events(mine), tokens)


async def test_resume_after_disconnects_delivers_each_event_once(server: ServerProcess) -> None:
    rng = random.Random(11)
    job = await http_start(server, max_tokens=150, delay_ms=5)
    seen: list[dict[str, Any]] = []
    cuts = 0
    while not seen or seen[-1]["kind"] not in ("done", "error", "cancelled"):
        client = await Client().connect(server)
        last = seen[-1]["seq"] if seen else 0
        await client.call("subscribe", {"jobId": job, "lastSequence": last})
        name, opened = await client.next()
        assert name == "job:open" and opened["recovered"] is True
        want = rng.randint(1, 25)
        for _ in range(want):
            name, data = await client.next()
            seen.append(as_event(name, data))
            if name in TERMINAL:
                break
        await client.close()  # whatever else was on its way is not consumed
        cuts += 1
    assert cuts >= 3
    assert_scripted_exactly_once(seen, 150)


async def test_cancel_gives_job_error_cancelled(server: ServerProcess) -> None:
    client = await Client().connect(server)
    try:
        ack = await client.call(
            "start", {"request": {"prompt": "x", "max_tokens": 5000, "delay_ms": 5}}
        )
        job = ack["jobId"]
        await client.until("model:chunk")
        assert (await client.call("cancel", {"jobId": job}))["ok"] is True
        received = await client.until(*TERMINAL)
    finally:
        await client.close()
    name, data = received[-1]
    assert name == "job:error"
    assert data["jobId"] == job and data["code"] == "cancelled" and data["reason"] == "stopped"
    assert data["sequence"] < 300 and data["message"]


async def test_malformed_payloads_get_error_events_and_the_socket_survives(
    server: ServerProcess,
) -> None:
    job = await http_start(server, max_tokens=10)
    client = await Client().connect(server)
    bad: list[tuple[str, Any, str]] = [
        ("subscribe", "not an object", "invalid_request"),
        ("subscribe", [1, 2], "invalid_request"),
        ("subscribe", None, "invalid_request"),
        ("subscribe", {"jobId": 5}, "invalid_request"),
        ("subscribe", {"jobId": ""}, "invalid_request"),
        ("subscribe", {"jobId": job, "lastSequence": -1}, "invalid_request"),
        ("subscribe", {"jobId": job, "lastSequence": "3"}, "invalid_request"),
        ("subscribe", {"jobId": "st_unknown"}, "not_found"),
        ("cancel", {"jobId": "st_unknown"}, "not_found"),
        ("unsubscribe", {}, "invalid_request"),
        ("start", {"request": {"prompt": 5}}, "invalid_request"),
        ("start", {"request": {"prompt": "x", "model": "nope"}}, "model_not_found"),
        ("start", "x", "invalid_request"),
        ("made:up", {"jobId": job}, "unknown_event"),
    ]
    try:
        for event, payload, code in bad:
            ack = await client.call(event, payload)
            assert ack["ok"] is False and ack["error"]["code"] == code, (event, payload, ack)
            name, error = await client.next()
            assert name == "error" and error == ack["error"]
            assert error["message"]
        assert (await client.call("subscribe", {"jobId": job}))["ok"] is True
        received = await client.until("job:completed")
        again = await client.call("subscribe", {"jobId": job, "lastSequence": 9})
        resumed = await client.until("job:completed")
    finally:
        await client.close()
    assert_scripted_exactly_once(job_events(received), 10)
    assert again == {"ok": True, "jobId": job}
    assert covered(job_events(resumed)) == [10, 11, 12]


async def test_progress_and_tensors_with_binary_attachments(server: ServerProcess) -> None:
    params = {"width": 16, "height": 8, "steps": 4, "delay_ms": 0}
    client = await Client().connect(server)
    try:
        ack = await client.call("start", {"request": {"pipeline": "denoise", "params": params}})
        received = await client.until(*TERMINAL)
    finally:
        await client.close()
    assert received[-1][0] == "job:completed"
    progress = [d for n, d in received if n == "job:progress"]
    assert [p["progress"] for p in progress] == [25.0, 50.0, 75.0, 100.0]
    assert all(
        p["stage"] == p["step"] == "denoise" and p["jobId"] == ack["jobId"] for p in progress
    )
    assert progress[-1]["message"] == "step 4/4"
    chunks = [d for n, d in received if n == "job:event" and d["kind"] == "tensor.chunk"]
    assert chunks and all(isinstance(c["data"], bytes) for c in chunks)
    assembler = TensorAssembler()
    images = [assembler.feed(d) for n, d in received if n == "job:event"]
    final = [image for image in images if image is not None][-1]
    assert np.array_equal(final, to_uint8(target_image(16, 8, 0) * 2.0 - 1.0))
    events = job_events(received)
    assert covered(events) == list(range(1, events[-1]["seq"] + 1))


async def test_disconnects_leave_no_tasks_or_subscribers(server: ServerProcess) -> None:
    idle = await http_start(server, max_tokens=2, delay_ms=60_000)
    busy = await http_start(server, max_tokens=30_000, delay_ms=20)

    async def cycle() -> None:
        client = await Client().connect(server)
        for job in (idle, busy):
            assert (await client.call("subscribe", {"jobId": job}))["ok"]
        await client.until("model:chunk")
        assert (await client.call("unsubscribe", {"jobId": busy}))["ok"]
        await client.close()

    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await asyncio.gather(*(cycle() for _ in range(5)))
        await asyncio.sleep(1.5)
        tasks0 = metric((await http.get("/metrics")).text, "tokenwire_asyncio_tasks")
        for _ in range(3):
            await asyncio.gather(*(cycle() for _ in range(10)))
        # engine.io's own ping task of a closed socket sleeps out its interval (1 s).
        await asyncio.sleep(1.5)
        text = (await http.get("/metrics")).text
        assert metric(text, 'tokenwire_subscribers{transport="socketio"}') == 0
        assert metric(text, "tokenwire_asyncio_tasks") <= tasks0
        for job in (idle, busy):
            await http.delete(f"/v1/streams/{job}")


# -- socket.io-client under node -------------------------------------------------------


async def run_node(server: ServerProcess, **options: Any) -> list[dict[str, Any]]:
    """Run tests/node/socketio_client.mjs; its output, one JSON object a line."""
    node = shutil.which("node")
    assert node is not None, "node missing: run scripts/setup.sh --dev"
    assert (NODE_DIR / "node_modules" / "socket.io-client").is_dir(), (
        "socket.io-client missing: run scripts/setup.sh --dev (npm ci in tests/node)"
    )
    proc = await asyncio.create_subprocess_exec(
        node,
        str(NODE_DIR / "socketio_client.mjs"),
        dumps({"url": server.url, **options}).decode(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    lines = [loads(line) for line in out.splitlines() if line.strip()]
    assert proc.returncode == 0 and lines[-1] == {"exit": 0}, (out.decode(), err.decode())
    return lines


def node_received(lines: list[dict[str, Any]]) -> list[Received]:
    return [(x["event"], x["data"]) for x in lines if "event" in x]


async def test_node_client_resumes_after_disconnects_exactly_once(server: ServerProcess) -> None:
    # 6 s of tokens: a node that starts slowly on a loaded machine still meets a live
    # stream, so the cuts fall inside it (at 10 ms a token it once got all in one frame)
    job = await http_start(server, max_tokens=120, delay_ms=50)
    lines = await run_node(server, scenario="resume", jobId=job, cuts=[5, 1, 17, 9, 30])
    received = node_received(lines)
    sockets = {x["socket"] for x in lines if "socket" in x}
    assert len(sockets) >= 3  # merged catch-up chunks may end it before the last cut
    assert [n for n, _ in received].count("job:open") == len(sockets)
    assert_scripted_exactly_once(job_events(received), 120)
    acks = [x["data"] for x in lines if x.get("ack") == "subscribe"]
    assert all(a == {"ok": True, "jobId": job} for a in acks)


async def test_node_client_start_and_cancel(server: ServerProcess) -> None:
    request = {"model": "scripted", "prompt": "hi", "max_tokens": 12}
    # Long-polling first, then the upgrade to WebSocket: socket.io-client's default.
    lines = await run_node(
        server, scenario="start", request=request, transports=["polling", "websocket"]
    )
    ack = next(x["data"] for x in lines if x.get("ack") == "start")
    assert ack["ok"] is True and ack["jobId"].startswith("st_")
    received = node_received(lines)
    assert received[-1][0] == "job:completed"
    assert_scripted_exactly_once(job_events(received), 12)

    job = await http_start(server, max_tokens=5000, delay_ms=5)
    lines = await run_node(server, scenario="cancel", jobId=job)
    name, data = node_received(lines)[-1]
    assert name == "job:error" and data["code"] == "cancelled" and data["reason"] == "stopped"
    assert next(x["data"] for x in lines if x.get("ack") == "cancel")["ok"] is True


async def test_node_client_malformed_payloads(server: ServerProcess) -> None:
    job = await http_start(server, max_tokens=8)
    lines = await run_node(server, scenario="malformed", jobId=job)
    acks = [x["data"] for x in lines if "ack" in x]
    codes = [a["error"]["code"] for a in acks if not a["ok"]]
    assert codes == [
        "invalid_request",
        "invalid_request",
        "invalid_request",
        "not_found",
        "invalid_request",
        "invalid_request",
        "unknown_event",
    ]
    errors = [d for n, d in node_received(lines) if n == "error"]
    assert len(errors) == 8  # one per bad event, the last one sent without an ack
    received = node_received(lines)
    assert received[-1][0] == "job:completed"
    assert_scripted_exactly_once(job_events(received), 8)


async def test_polling_client_disconnect_is_answered_at_once(start_server: Any) -> None:
    # engine.io holds a polling client's GET until it has a packet or
    # ping_interval + ping_timeout pass (10 + 20 s with this heartbeat); the
    # client's close must release it, or every disconnect waits that long.
    server = start_server(TOKENWIRE_HEARTBEAT_S="10")
    job = await http_start(server, max_tokens=20_000, delay_ms=5)
    for _ in range(3):
        sio = socketio.AsyncClient(reconnection=False)
        got: asyncio.Queue[Any] = asyncio.Queue()
        sio.on("model:chunk", got.put_nowait)
        await sio.connect(server.url, transports=["polling"], wait_timeout=10)
        assert (await sio.call("subscribe", {"jobId": job}, timeout=10))["ok"]
        await asyncio.wait_for(got.get(), 10)
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(sio.disconnect(), 30)
        assert asyncio.get_running_loop().time() - started < 5
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await http.delete(f"/v1/streams/{job}")


async def test_polling_catch_up_stays_within_the_client_payload_limit(
    server: ServerProcess,
) -> None:
    # python-engineio clients drop a connection on a poll answer of more than 16
    # packets; resuming a dozen ended streams at once queues about 30.
    jobs = [await http_start(server, max_tokens=40) for _ in range(12)]
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        for job in jobs:
            for _ in range(50):
                if (await http.get(f"/v1/streams/{job}")).json()["status"] == "done":
                    break
                await asyncio.sleep(0.1)
    for _ in range(3):
        sio = socketio.AsyncClient(reconnection=False)
        ended: asyncio.Queue[str] = asyncio.Queue()
        sio.on("job:completed", lambda data, ended=ended: ended.put_nowait(data["jobId"]))
        await sio.connect(server.url, transports=["polling"], wait_timeout=10)
        for job in jobs:
            await sio.emit("subscribe", {"jobId": job, "lastSequence": 0})
        done = {await asyncio.wait_for(ended.get(), 10) for _ in jobs}
        assert done == set(jobs)
        assert sio.connected
        await sio.disconnect()
