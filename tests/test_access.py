"""The two flaws a probe found (issue 16), against a real server with real clients:
another site's page opening WebSockets and Socket.IO, or starting streams with a
``text/plain`` body; and a second client taking over a ``useChat`` chat id."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import httpx
import pytest
import socketio
import websockets

from tests import raw_http
from tests.conftest import ServerFactory, ServerProcess
from tokenwire.events import loads
from tokenwire.server.access import origin_allowed

pytestmark = pytest.mark.slow

EVIL = "http://evil.example.test"
ALLOWED = "http://app.example.test"
USER = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}


def ws_url(server: ServerProcess) -> str:
    return server.url.replace("http://", "ws://") + "/v1/ws"


def same_origin(server: ServerProcess) -> str:
    return "http://" + urlsplit(server.url).netloc


@pytest.fixture(scope="module")
def with_origins(start_server: ServerFactory) -> ServerProcess:
    return start_server(TOKENWIRE_CORS_ORIGINS=ALLOWED)


async def ws_status(server: ServerProcess, target: str, origin: str | None) -> int:
    headers = raw_http.websocket_headers()
    if origin is not None:
        headers["Origin"] = origin
    status, _ = await raw_http.request(server.url, "GET", target, headers=headers)
    return status


SIO_WS = "/socket.io/?EIO=4&transport=websocket"


async def test_websockets_from_another_site_are_refused(server: ServerProcess) -> None:
    for target in ("/v1/ws", SIO_WS):
        assert await ws_status(server, target, EVIL) == 403, target
        assert await ws_status(server, target, "null") == 403, target
        # No Origin: not a browser. The page's own host: same origin.
        assert await ws_status(server, target, None) == 101, target
        assert await ws_status(server, target, same_origin(server)) == 101, target
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(ws_url(server), origin=EVIL):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403
    async with websockets.connect(ws_url(server), origin=same_origin(server)) as ws:  # type: ignore[arg-type]
        await ws.send(
            json.dumps({"op": "start", "id": 1, "request": {"prompt": "x", "max_tokens": 2}})
        )
        assert loads(await ws.recv())["type"] == "started"


async def test_configured_origins_are_the_only_foreign_ones(with_origins: ServerProcess) -> None:
    for target in ("/v1/ws", SIO_WS):
        assert await ws_status(with_origins, target, ALLOWED) == 101, target
        assert await ws_status(with_origins, target, EVIL) == 403, target
        assert await ws_status(with_origins, target, None) == 101, target


async def test_socketio_polling_from_another_site_is_refused(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        params = {"EIO": "4", "transport": "polling"}
        r = await http.get("/socket.io/", params=params, headers={"Origin": EVIL})
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "origin_not_allowed"
        r = await http.get("/socket.io/", params=params, headers={"Origin": same_origin(server)})
        assert r.status_code == 200 and '"sid"' in r.text
    client = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(
            server.url, transports=["websocket"], headers={"Origin": EVIL}, wait_timeout=10
        )
    await client.disconnect()


async def test_stream_starts_need_a_json_body(server: ServerProcess) -> None:
    body = json.dumps({"prompt": "x", "max_tokens": 2}).encode()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        # What a cross-site page can send without a CORS preflight.
        for content_type in (
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            None,
        ):
            headers = {"Origin": EVIL}
            if content_type is not None:
                headers["Content-Type"] = content_type
            r = await http.post("/v1/streams", content=body, headers=headers)
            assert r.status_code == 415, content_type
            assert r.json()["error"]["code"] == "unsupported_media_type"
        for content_type in ("application/json", "application/json; charset=utf-8"):
            r = await http.post("/v1/streams", content=body, headers={"Content-Type": content_type})
            assert r.status_code == 201, content_type
        # Too large is still 413, before the type is looked at.
        r = await http.post("/v1/streams", content=b"[" * 2_000_000)
        assert r.status_code == 413


# -- a chat id belongs to its first client ---------------------------------------------


async def post_chat(
    http: httpx.AsyncClient, chat_id: str, headers: dict[str, str] | None = None, **fields: object
) -> tuple[str, str | None]:
    """POST a chat turn, read its answer; its stream id and chat token."""
    body = {"id": chat_id, "messages": [USER], "model": "scripted", **fields}
    async with http.stream("POST", "/v1/ai-sdk/chat", json=body, headers=headers) as r:
        assert r.status_code == 200
        async for _ in r.aiter_bytes():
            break
        return r.headers["x-tokenwire-stream"], r.headers.get("x-tokenwire-chat-token")


async def test_a_second_client_cannot_take_over_a_chat_id(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
        first, token = await post_chat(http, "chat-owned", max_tokens=200, delay_ms=20)
        assert token is not None and len(token) >= 32
        # Another client posts the same id: it gets its own answer, not the id.
        second, stolen = await post_chat(http, "chat-owned", max_tokens=200, delay_ms=20)
        assert second != first and stolen is None
        path = "/v1/ai-sdk/chat/chat-owned/stream"
        for headers, params in (
            ({}, {}),
            ({"x-tokenwire-chat-token": "chat_guess"}, {}),
            ({"Authorization": "Bearer " + token[:-1]}, {}),
        ):
            r = await http.get(path, headers=headers, params=params)
            assert r.status_code == 403, headers
            assert r.json()["error"]["code"] == "chat_taken"
        # The owner resumes its own stream, however it sends the token.
        for headers, params in (
            ({"x-tokenwire-chat-token": token}, {}),
            ({"Authorization": f"Bearer {token}"}, {}),
            ({}, {"token": token}),
        ):
            async with http.stream("GET", path, headers=headers, params=params) as r:
                assert r.status_code == 200
                assert r.headers["x-tokenwire-stream"] == first
        # The owner's next turn, with its token, moves the id to the new stream.
        third, again = await post_chat(
            http, "chat-owned", {"x-tokenwire-chat-token": token}, max_tokens=200, delay_ms=20
        )
        assert again == token
        async with http.stream("GET", path, params={"token": token}) as r:
            assert r.headers["x-tokenwire-stream"] == third
        for sid in (first, second, third):
            await http.delete(f"/v1/streams/{sid}")


async def test_with_keys_a_chat_id_belongs_to_its_key(start_server: ServerFactory) -> None:
    locked = start_server(TOKENWIRE_API_KEYS="key-one,key-two")
    one = {"Authorization": "Bearer key-one"}
    two = {"Authorization": "Bearer key-two"}
    async with httpx.AsyncClient(base_url=locked.url, timeout=20) as http:
        first, token = await post_chat(http, "chat-k", one, max_tokens=200, delay_ms=20)
        assert token is None  # the key is the proof
        second, _ = await post_chat(http, "chat-k", two, max_tokens=200, delay_ms=20)
        path = "/v1/ai-sdk/chat/chat-k/stream"
        r = await http.get(path, headers=two)
        assert r.status_code == 403 and r.json()["error"]["code"] == "chat_taken"
        async with http.stream("GET", path, headers=one) as r:
            assert r.status_code == 200 and r.headers["x-tokenwire-stream"] == first
        for sid in (first, second):
            await http.delete(f"/v1/streams/{sid}", headers=one)


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        (None, "127.0.0.1:8000", True),  # not a browser
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
        ("https://127.0.0.1:8000", "127.0.0.1:8000", True),  # TLS ended in front
        ("http://127.0.0.1:9000", "127.0.0.1:8000", False),
        ("http://127.0.0.1:9000", "127.0.0.1", True),  # a proxy's Host: $host
        ("https://app.test", "app.test:443", True),
        ("http://APP.test", "app.TEST", True),
        ("http://app.test.evil.test", "app.test", False),
        ("http://evil.test", "app.test", False),
        ("null", "app.test", False),
        ("http://app.test:99999", "app.test", False),
        ("http://[::1]:8000", "[::1]:8000", True),
        ("http://app.test", None, False),
    ],
)
def test_the_same_host_rule(origin: str | None, host: str | None, allowed: bool) -> None:
    assert origin_allowed(origin, host, ()) is allowed


def test_configured_origins_come_beside_the_same_host_rule() -> None:
    assert origin_allowed(ALLOWED, "127.0.0.1:8000", [ALLOWED])
    assert origin_allowed("http://127.0.0.1:8000", "127.0.0.1:8000", [ALLOWED])
    assert not origin_allowed(EVIL, "127.0.0.1:8000", [ALLOWED])
    assert origin_allowed(EVIL, "127.0.0.1:8000", ["*"])
