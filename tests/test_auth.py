"""API keys and CORS on a real server, with real clients (httpx, websockets, our client)."""

from __future__ import annotations

import json

import httpx
import pytest
import socketio
import websockets

from tests import raw_http
from tests.conftest import ServerFactory, ServerProcess
from tokenwire.client import Client
from tokenwire.events import loads
from tokenwire.models.scripted import scripted_token
from tokenwire.server.auth import is_public

pytestmark = pytest.mark.slow

ORIGIN = "http://app.example.test"


@pytest.fixture(scope="module")
def locked(start_server: ServerFactory) -> ServerProcess:
    return start_server(TOKENWIRE_API_KEYS="key-one, key-two", TOKENWIRE_CORS_ORIGINS=ORIGIN)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_requests_without_a_valid_key_get_401(locked: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=locked.url, timeout=10) as client:
        body = {"model": "scripted", "prompt": "hi", "max_tokens": 3}
        for headers in ({}, bearer("wrong"), {"Authorization": "Basic a2V5LW9uZQ=="}):
            r = await client.post("/v1/streams", json=body, headers=headers)
            assert r.status_code == 401
            assert r.json()["error"]["code"] == "unauthorized"
            assert r.headers["www-authenticate"].startswith("Bearer")
        r = await client.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
        assert r.status_code == 401
        r = await client.post("/v1/streams", json=body, headers=bearer("key-two"))
        assert r.status_code == 201
        sid = r.json()["id"]
        r = await client.get(f"/v1/streams/{sid}/events")
        assert r.status_code == 401
        r = await client.get(f"/v1/streams/{sid}/events", params={"api_key": "key-one"})
        assert r.status_code == 200 and "event: done" in r.text


async def test_open_routes_stay_open(locked: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=locked.url, timeout=10) as client:
        for path in ("/healthz", "/metrics", "/", "/static/tokenwire.js"):
            assert (await client.get(path)).status_code == 200, path


async def test_websocket_handshake_needs_the_key(locked: ServerProcess) -> None:
    ws_url = locked.url.replace("http://", "ws://") + "/v1/ws"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(ws_url):
            pass
    assert refused.value.response.status_code == 403
    async with websockets.connect(ws_url, additional_headers=bearer("key-one")) as ws:
        request = {"model": "scripted", "prompt": "hi", "max_tokens": 2}
        await ws.send(json.dumps({"op": "start", "id": "r1", "request": request}))
        kinds = []
        while "done" not in kinds:
            frame = loads(await ws.recv())
            if frame["type"] == "event":
                kinds.append(frame["kind"])
        assert kinds[:2] == ["token", "token"]


async def test_the_python_client_sends_its_api_key(locked: ServerProcess) -> None:
    async with Client(locked.url, api_key="key-two") as client:
        handle = await client.start(model="scripted", prompt="hi", max_tokens=4)
        assert await handle.text() == "".join(scripted_token(i) for i in range(4))


async def test_cors_preflight_allows_the_resume_header(locked: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=locked.url, timeout=10) as client:
        r = await client.options(
            "/v1/streams/st_x/events",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization, last-event-id",
            },
        )
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == ORIGIN
        allowed = r.headers["access-control-allow-headers"].lower()
        assert "last-event-id" in allowed and "authorization" in allowed
        r = await client.options(
            "/v1/streams",
            headers={"Origin": "http://evil.test", "Access-Control-Request-Method": "POST"},
        )
        assert r.status_code == 400
        assert r.json()["error"] == {"code": "bad_request", "message": "Disallowed CORS origin"}


async def test_without_keys_nothing_is_locked(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        r = await client.post("/v1/streams", json={"model": "scripted", "prompt": "x"})
        assert r.status_code == 201


# Every protected route, and variants of its path that a router might still accept.
# Without a key each must be refused (401, or 403 for a WebSocket handshake): the
# check is deny by default, not a list of prefixes that a variant can slip past.
POLLING = "?EIO=4&transport=polling"
HTTP_TARGETS = [
    ("POST", "/v1/streams"),
    ("POST", "/v1/streams/"),
    ("POST", "//v1/streams"),
    ("POST", "/v1//streams"),
    ("POST", "/v1%2Fstreams"),
    ("POST", "/%761/streams"),
    ("POST", "/V1/streams"),
    ("GET", "/v1/streams/st_x"),
    ("GET", "/v1/streams/st_x/events"),
    ("GET", "/v1/streams/st_x/ndjson"),
    ("DELETE", "/v1/streams/st_x"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/scripted"),
    ("POST", "/v1/ai-sdk/chat"),
    ("GET", "/v1/ai-sdk/chat/c1/stream"),
    ("GET", "/v1/ws"),
    ("GET", "/socket.io/" + POLLING),
    ("GET", "/socket.io" + POLLING),
    ("GET", "//socket.io/" + POLLING),
    ("GET", "/socket%2Eio/" + POLLING),
    ("GET", "/socket.io%2F" + POLLING),
    ("GET", "/SOCKET.IO/" + POLLING),
    ("GET", "/socket.io/./" + POLLING),
    ("POST", "/socket.io" + POLLING + "&sid=x"),
    ("OPTIONS", "/socket.io" + POLLING),
    ("OPTIONS", "/v1/streams"),
    ("GET", "/static/../v1/models"),
    ("GET", "//healthz"),
    ("GET", "/nope"),
]
WS_TARGETS = [
    "/v1/ws",
    "/v1/ws/",
    "//v1/ws",
    "/v1%2Fws",
    "/socket.io/?EIO=4&transport=websocket",
    "/socket.io?EIO=4&transport=websocket",
    "/socket%2Eio/?EIO=4&transport=websocket",
]


@pytest.mark.parametrize(("method", "target"), HTTP_TARGETS)
async def test_no_path_variant_skips_the_key(
    locked: ServerProcess, method: str, target: str
) -> None:
    for headers in ({}, bearer("wrong"), {"Origin": "http://evil.test"}):
        status, body = await raw_http.request(locked.url, method, target, headers=headers)
        assert status == 401, (target, headers, status, body[:200])
        assert loads(body)["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("target", WS_TARGETS)
async def test_no_websocket_path_variant_skips_the_key(locked: ServerProcess, target: str) -> None:
    status, _ = await raw_http.request(
        locked.url, "GET", target, headers=raw_http.websocket_headers()
    )
    assert status == 403, (target, status)
    keyed = {**raw_http.websocket_headers(), **bearer("key-one")}
    if target in ("/v1/ws", WS_TARGETS[4]):
        status, _ = await raw_http.request(locked.url, "GET", target, headers=keyed)
        assert status == 101, target


async def test_with_the_key_the_canonical_paths_work(locked: ServerProcess) -> None:
    key = bearer("key-one")
    status, body = await raw_http.request(locked.url, "GET", "/socket.io/" + POLLING, headers=key)
    assert status == 200 and b'"sid"' in body
    status, body = await raw_http.request(
        locked.url, "GET", "/socket.io/" + POLLING + "&api_key=key-two"
    )
    assert status == 200 and b'"sid"' in body
    status, body = await raw_http.request(locked.url, "GET", "/v1/models", headers=key)
    assert status == 200 and b"scripted" in body


async def test_socketio_clients_need_the_key_whatever_the_path(locked: ServerProcess) -> None:
    for path in ("socket.io", "/socket.io", "socket.io/"):
        client = socketio.AsyncClient(reconnection=False)
        # On a refusal python-engineio closes its HTTP session before it reads the
        # error body, so a body that was not read yet surfaces as aiohttp's
        # RuntimeError instead of ConnectionError (a client race): either way the
        # client is refused, which is what this checks.
        with pytest.raises((socketio.exceptions.ConnectionError, RuntimeError)):
            await client.connect(
                locked.url, socketio_path=path, transports=["polling"], wait_timeout=10
            )
        assert not client.connected
        await client.disconnect()
    # python-engineio sends custom headers on the first polling request only, so a
    # polling client carries its key in the URL; a WebSocket one sends the header.
    for url, options in (
        (locked.url + "?api_key=key-two", {"transports": ["polling"]}),
        (locked.url, {"transports": ["websocket"], "headers": bearer("key-one")}),
    ):
        client = socketio.AsyncClient(reconnection=False)
        await client.connect(url, socketio_path="socket.io", wait_timeout=10, **options)
        try:
            ack = await client.call("cancel", {"jobId": "st_none"}, timeout=10)
            assert ack["ok"] is False and ack["error"]["code"] == "not_found"
        finally:
            await client.disconnect()


def test_only_named_paths_are_public() -> None:
    for path in ("/", "/healthz", "/readyz", "/metrics", "/static/tokenwire.js"):
        assert is_public(path), path
    for path in (
        "",
        "/socket.io",
        "/socket.io/",
        "/v1/streams",
        "/healthz/",
        "//healthz",
        "/HEALTHZ",
        "/static",
        "/static/../v1/streams",
        "/static//v1",
        "/metrics/x",
    ):
        assert not is_public(path), path
