"""tokenwire mounted in a FastAPI app (``host.mount("/tw", create_app())``), served by
uvicorn in a real process: every transport answers under the prefix (Socket.IO
too), the demo page and its files load by relative URLs, and tokenwire's
start-up and shut-down run inside the host's lifespan, composed either way
(``tokenwire.lifespan`` or ``tokenwire.mount``)."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import socketio
from websockets.asyncio.client import connect

from tests.conftest import ServerProcess
from tests.embedded_server import start_host
from tokenwire.client import Client
from tokenwire.models.scripted import scripted_token

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_host(tmp_path_factory.mktemp("embedding"), "lifespan")
    yield server
    server.stop()


def expected(tokens: int) -> str:
    return "".join(scripted_token(i) for i in range(tokens))


def start(host: ServerProcess, tokens: int, **extra: Any) -> dict[str, Any]:
    body = {"model": "scripted", "prompt": "hi", "max_tokens": tokens, **extra}
    res = httpx.post(f"{host.url}/tw/v1/streams", json=body, timeout=10)
    assert res.status_code == 201, res.text
    started: dict[str, Any] = res.json()
    return started


def test_http_sse_and_ndjson_under_the_prefix(host: ServerProcess) -> None:
    started = start(host, 12)
    sid = started["id"]
    # The URLs the server hands out keep the prefix.
    assert started["events_url"] == f"/tw/v1/streams/{sid}/events"
    assert started["ndjson_url"] == f"/tw/v1/streams/{sid}/ndjson"
    assert started["status_url"] == f"/tw/v1/streams/{sid}"
    with httpx.Client(base_url=host.url, timeout=10) as http:
        sse = http.get(started["events_url"])
        assert sse.headers["content-type"].startswith("text/event-stream")
        texts = [
            json.loads(line[5:]).get("text", "")
            for line in sse.text.splitlines()
            if line.startswith("data:")
        ]
        assert "".join(texts) == expected(12)
        lines = [json.loads(line) for line in http.get(started["ndjson_url"]).text.splitlines()]
        assert "".join(e["text"] for e in lines if e.get("kind") == "token") == expected(12)
        assert lines[-1]["kind"] == "done"
        assert http.get(started["status_url"]).json()["status"] == "done"
        assert http.get("/tw/healthz").json()["default_model"] == "scripted"
        # Unknown paths under the prefix are tokenwire's JSON 404s, the host's own
        # routes are untouched, and nothing of tokenwire leaks to the root.
        missing = http.get("/tw/v1/streams/st_nope")
        assert missing.status_code == 404 and missing.json()["error"]["code"]
        assert http.get("/hello").json() == {"greeting": "hello from the host"}
        assert http.get("/healthz").status_code == 404
        # engine.io's HTTP long-polling handshake answers under the prefix, not at the root.
        handshake = http.get("/tw/socket.io/", params={"EIO": "4", "transport": "polling"})
        assert handshake.status_code == 200 and '"sid"' in handshake.text
        assert (
            http.get("/socket.io/", params={"EIO": "4", "transport": "polling"}).status_code == 404
        )


async def test_websocket_under_the_prefix(host: ServerProcess) -> None:
    url = host.url.replace("http://", "ws://") + "/tw/v1/ws"
    async with connect(url) as ws:
        request = {"model": "scripted", "prompt": "hi", "max_tokens": 10}
        await ws.send(json.dumps({"op": "start", "id": "r1", "request": request}))
        text, kinds = "", []
        while not kinds or kinds[-1] not in ("done", "error", "cancelled"):
            frame = json.loads(await ws.recv())
            if frame["type"] == "event":
                kinds.append(frame["kind"])
                text += frame.get("text", "")
    assert text == expected(10)
    assert kinds[-1] == "done"


async def test_socketio_under_the_prefix(host: ServerProcess) -> None:
    sio = socketio.AsyncClient(reconnection=False)
    chunks: list[str] = []
    finished: list[dict[str, Any]] = []
    sio.on("model:chunk", lambda data: chunks.append(data["chunk"]))
    sio.on("job:completed", lambda data: finished.append(data))
    await sio.connect(
        host.url, socketio_path="/tw/socket.io", transports=["websocket"], wait_timeout=10
    )
    try:
        ack = await sio.call(
            "start", {"request": {"model": "scripted", "prompt": "hi", "max_tokens": 10}}
        )
        assert ack["ok"] is True, ack
        for _ in range(100):
            if finished:
                break
            await sio.sleep(0.1)
    finally:
        await sio.disconnect()
    assert finished and finished[0]["jobId"] == ack["jobId"]
    assert "".join(chunks) == expected(10)


def test_demo_page_and_static_files_by_relative_urls(host: ServerProcess) -> None:
    with httpx.Client(base_url=host.url, timeout=10) as http:
        # /tw redirects to /tw/, so the page's relative URLs resolve under the prefix.
        bare = http.get("/tw")
        assert bare.status_code in (307, 308) and bare.headers["location"].endswith("/tw/")
        page = http.get("/tw/").text
        refs = [r for r in re.findall(r'(?:href|src)="([^"#]+)"', page) if ":" not in r]
        assert refs and not [r for r in refs if r.startswith("/")], refs
        for ref in refs:
            assert http.get(f"/tw/{ref}").status_code == 200, ref
        demo = http.get("/tw/static/demo.js").text
        imports = re.findall(r"from '([^']+)'", demo)
        assert imports and all(i.startswith("./") for i in imports), imports
        for ref in imports:
            assert http.get(f"/tw/static/{ref[2:]}").status_code == 200, ref
        assert "fetch('/" not in demo and 'fetch("/' not in demo


@pytest.mark.parametrize("transport", ["sse", "ws", "ndjson"])
async def test_python_client_with_the_prefix_as_its_url(
    host: ServerProcess, transport: str
) -> None:
    async with Client(f"{host.url}/tw", transport=transport) as client:
        handle = await client.start(model="scripted", prompt="hi", max_tokens=15)
        text = "".join([e.fields["text"] async for e in handle if e.kind == "token"])
    assert text == expected(15)


def test_api_keys_and_stream_tokens_under_the_prefix(tmp_path: Any) -> None:
    host = start_host(tmp_path, "lifespan", TOKENWIRE_API_KEYS="sekrit")
    try:
        with httpx.Client(base_url=f"{host.url}/tw", timeout=10) as http:
            body = {"model": "scripted", "prompt": "hi", "max_tokens": 5}
            assert http.post("/v1/streams", json=body).status_code == 401
            # The public paths are public under the mount too.
            assert http.get("/healthz").status_code == 200
            assert http.get("/static/tokenwire.js").status_code == 200
            started = http.post(
                "/v1/streams", json=body, headers={"Authorization": "Bearer sekrit"}
            ).json()
            # A stream's read token stands in for the key on its paths.
            events = http.get(started["events_url"][3:], params={"token": started["read_token"]})
            assert events.status_code == 200 and "event: done" in events.text
            assert http.get(started["events_url"][3:]).status_code == 401
    finally:
        host.stop()


@pytest.mark.parametrize("mode", ["lifespan", "mount"])
def test_lifespan_runs_inside_the_hosts(tmp_path: Any, mode: str) -> None:
    host = start_host(tmp_path, mode)
    try:
        # Start-up ran: the model's self-check (preload_model) made the app ready,
        # and the host's own lifespan state reaches its routes.
        ready = httpx.get(f"{host.url}/tw/readyz", timeout=10).json()
        assert ready["status"] == "ready", ready
        assert httpx.get(f"{host.url}/hello").json() == {"greeting": "hello from the host"}
        sid = start(host, 1000, delay_ms=50)["id"]
        host.proc.send_signal(signal.SIGINT)
        assert host.proc.wait(20) == 0
    finally:
        host.stop()
    log = host.log()
    # Shut-down ran: the hub closed, which stops a running stream as "shutdown".
    closed = re.search(rf"event=(?:close|cancel) stream={sid} .*", log)
    assert closed and "status=cancelled" in closed.group(0), log
    assert "reason=shutdown" in closed.group(0)
    # The host shuts down first, then tokenwire (which started first).
    order = [m.group(0) for m in re.finditer(r"host startup|host shutdown|reason=shutdown", log)]
    assert order == ["host startup", "host shutdown", "reason=shutdown"], order
    assert "Application startup complete" in log and "Traceback" not in log
