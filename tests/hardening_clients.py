"""Real clients for the hardening tests: one way to subscribe per transport, and the
server's subscriber counts (``GET /v1/streams/{id}`` and ``/metrics``)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import socketio
from websockets.asyncio.client import connect

from tests.conftest import ServerProcess
from tokenwire.events import dumps, loads

TIMEOUT = 10.0
TRANSPORTS = ("sse", "sse-last-event-id", "ndjson", "ws", "socketio-websocket", "socketio-polling")


async def start(server: ServerProcess, **body: Any) -> str:
    body.setdefault("model", "scripted")
    body.setdefault("prompt", "hello")
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
        r = await client.post("/v1/streams", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def status(server: ServerProcess, stream_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
        r = await client.get(f"/v1/streams/{stream_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def wait_ended(server: ServerProcess, stream_id: str) -> dict[str, Any]:
    return await until(lambda: status(server, stream_id), lambda s: s["status"] != "running")


async def metrics(server: ServerProcess) -> str:
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
        return (await client.get("/metrics")).text


def gauge(text: str, name: str) -> float:
    """The sum of every series of ``name`` (0 when absent)."""
    pattern = rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$"
    return sum(float(v) for v in re.findall(pattern, text, re.M))


async def hub_subscribers(server: ServerProcess) -> float:
    return gauge(await metrics(server), "tokenwire_subscribers")


async def until(
    probe: Callable[[], Awaitable[Any]], ok: Callable[[Any], bool], timeout: float = TIMEOUT
) -> Any:
    """Poll ``probe`` until ``ok(value)``; the last value, asserted."""
    deadline = time.monotonic() + timeout
    value = await probe()
    while not ok(value) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        value = await probe()
    assert ok(value), value
    return value


async def no_subscribers(server: ServerProcess, stream_id: str | None = None) -> None:
    """Both counts return to zero: the stream's and the hub's (every transport)."""
    if stream_id is not None:
        await until(lambda: status(server, stream_id), lambda s: s["subscribers"] == 0)
    await until(lambda: hub_subscribers(server), lambda n: n == 0)


# -- subscribing after a seq, on each transport -------------------------------------


async def read_after(server: ServerProcess, transport: str, stream_id: str, after: int) -> Any:
    """Subscribe after ``after`` and read until the server ends the subscription
    (HTTP: the response ends) or, on multiplexed transports, until the open frame
    and whatever follows within a short while. Returns (open frame, event seqs)."""
    if transport in ("sse", "sse-last-event-id", "ndjson"):
        return await _http_after(server, transport, stream_id, after)
    if transport == "ws":
        return await _ws_after(server, stream_id, after)
    return await _sio_after(server, transport.removeprefix("socketio-"), stream_id, after)


async def _http_after(server: ServerProcess, transport: str, stream_id: str, after: int) -> Any:
    path = "ndjson" if transport == "ndjson" else "events"
    url = f"/v1/streams/{stream_id}/{path}"
    headers = {}
    if transport == "sse-last-event-id":
        headers["Last-Event-ID"] = str(after)
    else:
        url += f"?after={after}"
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
        r = await client.get(url, headers=headers)
    if r.status_code == 204:  # resumed at or past the terminal event
        assert r.content == b""
        return None, []
    assert r.status_code == 200, r.text
    if transport == "ndjson":
        lines = [loads(line) for line in r.text.splitlines() if line]
        return lines[0], [x["seq"] for x in lines[1:] if "seq" in x]
    opened, seqs = None, []
    for block in r.text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if ": " in line and line[0] != ":"
        )
        if fields.get("event") == "tw-open":
            opened = loads(fields["data"])
        elif "id" in fields:
            seqs.append(int(fields["id"]))
    return opened, seqs


async def _ws_after(server: ServerProcess, stream_id: str, after: int) -> Any:
    url = server.url.replace("http", "ws", 1) + "/v1/ws"
    async with connect(url, open_timeout=TIMEOUT) as ws:
        await ws.send(dumps({"op": "subscribe", "stream": stream_id, "after": after}).decode())
        opened = loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        seqs = []
        while True:
            try:
                frame = loads(await asyncio.wait_for(ws.recv(), 0.5))
            except TimeoutError:
                break
            if frame.get("type") == "event":
                seqs.append(frame["seq"])
        return opened, seqs


async def _sio_after(server: ServerProcess, transport: str, stream_id: str, after: int) -> Any:
    sio = socketio.AsyncClient(reconnection=False)
    got: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def on_any(name: str, *args: Any) -> None:
        got.put_nowait((name, args[0] if args else None))

    sio.on("*", on_any)
    await sio.connect(server.url, transports=[transport], wait_timeout=TIMEOUT)
    try:
        ack = await sio.call("subscribe", {"jobId": stream_id, "lastSequence": after}, timeout=10)
        assert ack["ok"], ack
        name, opened = await asyncio.wait_for(got.get(), TIMEOUT)
        assert name == "job:open", (name, opened)
        seqs = []
        while True:
            try:
                name, data = await asyncio.wait_for(got.get(), 0.5)
            except TimeoutError:
                break
            if isinstance(data, dict) and "sequence" in data:
                seqs.append(data["sequence"])
        return opened, seqs
    finally:
        await sio.disconnect()


# -- a raw engine.io long-polling session ----------------------------------------------


class PollingSession:
    """Engine.io v4 long-polling by hand: the probe's way of sending several
    Socket.IO packets in one POST (``42[...]\\x1e41``) and never reading."""

    def __init__(self, server: ServerProcess) -> None:
        self.client = httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT)
        self.sid = ""

    async def open(self) -> PollingSession:
        r = await self.client.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
        assert r.status_code == 200 and r.text.startswith("0"), r.text
        self.sid = loads(r.text[1:])["sid"]
        await self.post("40")
        r = await self.client.get("/socket.io/", params=self._params())
        assert "40" in r.text, r.text
        return self

    def _params(self) -> dict[str, str]:
        return {"EIO": "4", "transport": "polling", "sid": self.sid}

    async def post(self, *packets: str) -> None:
        r = await self.client.post(
            "/socket.io/", params=self._params(), content="\x1e".join(packets)
        )
        assert r.status_code == 200, r.text

    @staticmethod
    def event(name: str, data: Any) -> str:
        return "42" + dumps([name, data]).decode()

    async def close(self) -> None:
        await self.client.aclose()
