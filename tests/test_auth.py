"""API keys and CORS on a real server, with real clients (httpx, websockets, our client)."""

from __future__ import annotations

import json

import httpx
import pytest
import websockets

from tests.conftest import ServerFactory, ServerProcess
from tokenwire.client import Client
from tokenwire.events import loads
from tokenwire.models.scripted import scripted_token

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


async def test_without_keys_nothing_is_locked(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        r = await client.post("/v1/streams", json={"model": "scripted", "prompt": "x"})
        assert r.status_code == 201
