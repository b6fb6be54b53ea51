"""deploy/nginx.conf, as users copy it, in front of two gateways on one redis-server.

The file is included unchanged but for its addresses (the gateways' and nginx's own
ports); a small main config around it gives nginx a temporary prefix. Checked through
nginx: SSE and NDJSON arrive unbuffered, a resume with Last-Event-ID lands on either
gateway and is exactly once, WebSocket works, Socket.IO long-polling works with the
file's stickiness.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
from websockets.asyncio.client import connect

from tests.conftest import ServerFactory, ServerProcess, free_port, wait_http
from tests.redis_fixture import RedisServer
from tests.resume_checks import covered

DEPLOY_CONF = Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf"
TERMINAL = ("done", "error", "cancelled")

MAIN_CONF = """\
daemon off;
{user}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/tokenwire.conf;
}}
"""


@dataclass
class Deployment:
    url: str
    gateways: list[ServerProcess]
    nginx_conf: str


def site_config(port: int, gateways: list[int]) -> str:
    """deploy/nginx.conf with its example addresses replaced."""
    text = DEPLOY_CONF.read_text()
    assert text.count("listen 80;") == 1 and text.count("127.0.0.1:8001") == 2
    text = text.replace("listen 80;", f"listen 127.0.0.1:{port};")
    text = text.replace("127.0.0.1:8001", f"127.0.0.1:{gateways[0]}")
    return text.replace("127.0.0.1:8002", f"127.0.0.1:{gateways[1]}")


@pytest.fixture(scope="module")
def deployment(
    start_server: ServerFactory, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    gateways = [start_server("--broker", redis_server.url) for _ in range(2)]
    ports = [int(g.url.rsplit(":", 1)[1]) for g in gateways]
    exe = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    assert exe is not None, "nginx missing: run scripts/setup.sh --dev"
    prefix = tmp_path_factory.mktemp("nginx-deploy")
    port = free_port()
    site = site_config(port, ports)
    (prefix / "tokenwire.conf").write_text(site)
    # As root the workers would drop to "nobody", who cannot enter a private temp dir.
    user = "user root;" if os.geteuid() == 0 else ""
    (prefix / "nginx.conf").write_text(MAIN_CONF.format(user=user, prefix=prefix))
    log = open(prefix / "stderr.log", "wb")
    proc = subprocess.Popen(
        [exe, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(url + "/healthz", timeout=15, proc=proc)
        except (RuntimeError, TimeoutError) as exc:
            errors = (prefix / "error.log").read_text(errors="replace")
            raise RuntimeError(f"nginx did not start: {exc}\n{errors}") from exc
        yield Deployment(url, gateways, site)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start(client: httpx.Client, tokens: int, delay_ms: int) -> str:
    started = client.post(
        "/v1/streams", json={"prompt": "x", "max_tokens": tokens, "delay_ms": delay_ms}
    )
    assert started.status_code == 201, started.text
    return str(started.json()["id"])


def status(client: httpx.Client, sid: str) -> str:
    return str(client.get(f"/v1/streams/{sid}").json()["status"])


def sse_frames(lines: Any) -> Iterator[dict[str, Any]]:
    """The sequenced events of an SSE body, as their data JSON."""
    for line in lines:
        if line.startswith("data: ") and '"seq"' in line:
            yield json.loads(line[6:])


def test_the_recipe_is_the_file_users_copy(deployment: Deployment) -> None:
    conf = deployment.nginx_conf
    for needed in ("proxy_buffering off", "proxy_http_version 1.1", "proxy_set_header Upgrade",
                   "proxy_read_timeout", "ip_hash"):  # fmt: skip
        assert needed in conf, needed
    # The streams' upstream balances freely; only Socket.IO's is sticky.
    upstreams = dict(re.findall(r"upstream (\w+) \{([^}]*)\}", conf))
    assert set(upstreams) == {"tokenwire", "tokenwire_socketio"}
    assert not re.search(r"hash|sticky", upstreams["tokenwire"])
    assert "ip_hash;" in upstreams["tokenwire_socketio"]


def test_sse_is_unbuffered_and_a_resume_lands_on_either_gateway(deployment: Deployment) -> None:
    with httpx.Client(base_url=deployment.url, timeout=30) as client:
        sid = start(client, tokens=40, delay_ms=50)  # about 2 s
        head: list[dict[str, Any]] = []
        with client.stream("GET", f"/v1/streams/{sid}/events") as live:
            assert live.status_code == 200
            assert live.headers["content-type"].startswith("text/event-stream")
            for frame in sse_frames(live.iter_lines()):
                if not head:
                    # Unbuffered: the first event is here while the stream still runs.
                    assert status(client, sid) == "running"
                head.append(frame)
                if len(head) == 10:
                    break
        cut = int(head[-1]["seq"])
        tails = []
        for _ in range(4):  # round robin: the resumes alternate between the gateways
            with client.stream(
                "GET", f"/v1/streams/{sid}/events", headers={"Last-Event-ID": str(cut)}
            ) as resumed:
                tails.append(list(sse_frames(resumed.iter_lines())))
    for tail in tails:
        assert tail[-1]["kind"] == "done"
        assert covered(head) + covered(tail) == list(range(1, 43))  # 40 tokens, metrics, done
    landed = [
        g for g in deployment.gateways if f"stream={sid} transport=sse after={cut}" in g.log()
    ]
    assert len(landed) == 2, "every resume went to the same gateway"


def test_ndjson_is_unbuffered(deployment: Deployment) -> None:
    with httpx.Client(base_url=deployment.url, timeout=30) as client:
        sid = start(client, tokens=30, delay_ms=50)
        lines = []
        with client.stream("GET", f"/v1/streams/{sid}/ndjson") as live:
            assert live.headers["content-type"].startswith("application/x-ndjson")
            for line in live.iter_lines():
                frame = json.loads(line)
                if frame.get("kind") == "token" and not any("seq" in f for f in lines):
                    assert status(client, sid) == "running"
                lines.append(frame)
        events = [f for f in lines if "seq" in f]
        assert covered(events) == list(range(1, 33)) and events[-1]["kind"] == "done"


async def test_a_websocket_through_nginx(deployment: Deployment) -> None:
    with httpx.Client(base_url=deployment.url, timeout=30) as client:
        sid = start(client, tokens=20, delay_ms=20)
    ws_url = deployment.url.replace("http://", "ws://") + "/v1/ws"
    events: list[dict[str, Any]] = []
    async with connect(ws_url) as ws:
        await ws.send(json.dumps({"op": "subscribe", "stream": sid, "after": 0}))
        while not events or events[-1]["kind"] not in TERMINAL:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if frame.get("type") == "event" and frame.get("stream") == sid:
                events.append(frame)
    assert covered(events) == list(range(1, 23)) and events[-1]["kind"] == "done"


async def test_socketio_long_polling_through_nginx(deployment: Deployment) -> None:
    with httpx.Client(base_url=deployment.url, timeout=30) as client:
        sid = start(client, tokens=20, delay_ms=50)  # about 1 s: several polls
    sio = socketio.AsyncClient(reconnection=False)
    chunks: list[dict[str, Any]] = []
    ended: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    sio.on("model:chunk", chunks.append)
    sio.on("job:completed", lambda data: ended.done() or ended.set_result(data))
    await sio.connect(deployment.url, transports=["polling"], wait_timeout=10)
    try:
        assert sio.transport() == "polling"
        ack = await sio.call("subscribe", {"jobId": sid, "lastSequence": 0}, timeout=10)
        assert ack == {"ok": True, "jobId": sid}
        done = await asyncio.wait_for(ended, 15)
    finally:
        await sio.disconnect()
    assert done["jobId"] == sid and done["sequence"] == 22  # 20 tokens, metrics, done
    tokens = [{"seq": c["sequence"], **c["metadata"]} for c in chunks if c["jobId"] == sid]
    assert covered(tokens) == list(range(1, 21))
