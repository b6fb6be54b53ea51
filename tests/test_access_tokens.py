"""Stream-scoped tokens: pure (signing, the authorization table), then against a
real server with keys on, on every transport: a token for stream A never reads
or stops stream B."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import socketio
import websockets

from tests.conftest import ServerFactory, ServerProcess
from tokenwire.events import loads
from tokenwire.server.access import (
    CREATE,
    READ,
    STOP,
    Credentials,
    ForbiddenError,
    UnauthorizedError,
    authorize,
)
from tokenwire.server.tokens import InvalidTokenError, TokenExpiredError, TokenSigner

SECRET = "a-test-secret-of-enough-bytes"
KEY = {"Authorization": "Bearer key-one"}

# -- pure --------------------------------------------------------------------------


def test_tokens_verify_until_they_expire() -> None:
    signer = TokenSigner(SECRET.encode(), ttl_s=60)
    token = signer.issue("st_a", "read", now=1000)
    grant = signer.verify(token, now=1059)
    assert (grant.stream, grant.scope, grant.expires) == ("st_a", "read", 1060)
    assert signer.verify(signer.issue("st_a", "control", now=1000), now=1000).allows_stop()
    with pytest.raises(TokenExpiredError) as expired:
        signer.verify(token, now=1060)
    assert expired.value.status == 401 and expired.value.code == "token_expired"


def test_forged_and_tampered_tokens_are_refused() -> None:
    signer = TokenSigner(SECRET.encode())
    token = signer.issue("st_a", "read")
    prefix, payload, signature = token.split(".")
    other = TokenSigner(b"another-secret-entirely")
    forged = [
        other.issue("st_a", "read"),  # another server's secret
        f"{prefix}.{payload}.{signature[:-2]}AA",
        f"{prefix}.{signer.issue('st_b', 'read').split('.')[1]}.{signature}",  # payload swap
        f"{prefix}.{payload}",
        "tw1.",
        "tw1..",
        "not-a-token",
        token + "x" * 600,
        "tw1.\u00e9.\u00e9",
    ]
    for bad in forged:
        with pytest.raises(InvalidTokenError) as refused:
            signer.verify(bad)
        assert refused.value.code == "invalid_token" and refused.value.status == 401, bad
    assert signer.verify(token).stream == "st_a"


def test_the_authorization_table() -> None:
    signer = TokenSigner(SECRET.encode())
    read_a = Credentials(grant=signer.verify(signer.issue("st_a", "read")))
    control_a = Credentials(grant=signer.verify(signer.issue("st_a", "control")))
    for creds in (Credentials(open=True), Credentials(key="key:x")):
        for action in (CREATE, READ, STOP):
            authorize(creds, "st_a", action)
    authorize(read_a, "st_a", READ)
    authorize(control_a, "st_a", READ)
    authorize(control_a, "st_a", STOP)
    refused = [
        (read_a, "st_b", READ),
        (read_a, "st_a", STOP),
        (read_a, None, CREATE),
        (control_a, "st_b", READ),
        (control_a, "st_b", STOP),
        (control_a, None, CREATE),
    ]
    for creds, stream, action in refused:
        with pytest.raises(ForbiddenError):
            authorize(creds, stream, action)
    for action in (CREATE, READ, STOP):
        with pytest.raises(UnauthorizedError):
            authorize(Credentials(), "st_a", action)


# -- a real server with keys on ------------------------------------------------------


@pytest.fixture(scope="module")
def locked(start_server: ServerFactory) -> ServerProcess:
    return start_server(TOKENWIRE_API_KEYS="key-one", TOKENWIRE_TOKEN_SECRET=SECRET)


@pytest.fixture
async def http(locked: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=locked.url, timeout=20) as client:
        yield client


async def start(http: httpx.AsyncClient) -> dict[str, str]:
    body = {"model": "scripted", "prompt": "x", "max_tokens": 400, "delay_ms": 25}
    r = await http.post("/v1/streams", json=body, headers=KEY)
    assert r.status_code == 201
    started: dict[str, str] = r.json()
    assert {"read_token", "control_token"} <= set(started)
    return started


def expired_token(stream_id: str) -> str:
    return TokenSigner(SECRET.encode()).issue(stream_id, "control", now=time.time() - 7200)


def forged_token(stream_id: str) -> str:
    return TokenSigner(b"not-the-server-secret").issue(stream_id, "control")


@pytest.mark.slow
async def test_http_routes_honour_the_token_scope(http: httpx.AsyncClient) -> None:
    a, b = await start(http), await start(http)
    read_a, control_a = a["read_token"], a["control_token"]
    for path in ("/events", "/ndjson", ""):
        for auth in ({"params": {"token": read_a}}, {"headers": bearer(read_a)}):
            async with http.stream("GET", f"/v1/streams/{a['id']}{path}", **auth) as r:  # type: ignore[arg-type]
                assert r.status_code == 200, path
            r = await http.get(f"/v1/streams/{b['id']}{path}", **auth)  # type: ignore[arg-type]
            assert r.status_code == 403, path
            assert r.json()["error"]["code"] == "forbidden"
    # Stop: a read token never; a control token its own stream only.
    r = await http.delete(f"/v1/streams/{a['id']}", params={"token": read_a})
    assert r.status_code == 403
    r = await http.delete(f"/v1/streams/{b['id']}", headers=bearer(control_a))
    assert r.status_code == 403
    assert (await http.get(f"/v1/streams/{b['id']}", headers=KEY)).json()["status"] == "running"
    r = await http.delete(f"/v1/streams/{a['id']}", headers=bearer(control_a))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    # Keys create streams; tokens do not, and open nothing else.
    for target in ("/v1/streams", "/v1/chat/completions", "/v1/ai-sdk/chat"):
        r = await http.post(target, json={"prompt": "x"}, headers=bearer(control_a))
        assert r.status_code == 401, target
    assert (await http.get("/v1/models", params={"token": read_a})).status_code == 401
    await http.delete(f"/v1/streams/{b['id']}", headers=KEY)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.slow
async def test_forged_and_expired_tokens_get_401(http: httpx.AsyncClient) -> None:
    a = await start(http)
    sid = a["id"]
    for token, code in (
        (forged_token(sid), "invalid_token"),
        (expired_token(sid), "token_expired"),
    ):
        for method, path in (("GET", "/events"), ("GET", "/ndjson"), ("DELETE", "")):
            for auth in ({"params": {"token": token}}, {"headers": bearer(token)}):
                r = await http.request(method, f"/v1/streams/{sid}{path}", **auth)  # type: ignore[arg-type]
                assert r.status_code == 401, (path, code)
                assert r.json()["error"]["code"] == code
                assert r.headers["www-authenticate"].startswith("Bearer")
    await http.delete(f"/v1/streams/{sid}", headers=KEY)


async def ws_recv(ws: websockets.ClientConnection, kind: str) -> dict[str, object]:
    """The next frame of ``type`` kind, skipping events and heartbeats."""
    while True:
        frame = loads(await asyncio.wait_for(ws.recv(), 10))
        if frame["type"] == kind or frame["type"] == "error":
            assert isinstance(frame, dict)
            return frame


@pytest.mark.slow
async def test_websocket_tokens(locked: ServerProcess, http: httpx.AsyncClient) -> None:
    a, b = await start(http), await start(http)
    url = locked.url.replace("http://", "ws://") + "/v1/ws"
    async with websockets.connect(f"{url}?token={a['read_token']}") as ws:
        await ws.send(json.dumps({"op": "subscribe", "id": 1, "stream": b["id"]}))
        refused = await ws_recv(ws, "open")
        assert (refused["type"], refused["code"], refused["id"]) == ("error", "forbidden", 1)
        await ws.send(json.dumps({"op": "cancel", "id": 2, "stream": a["id"]}))
        refused = await ws_recv(ws, "open")
        assert (refused["code"], refused["id"]) == ("forbidden", 2)
        await ws.send(json.dumps({"op": "start", "id": 3, "request": {"prompt": "x"}}))
        assert (await ws_recv(ws, "started"))["code"] == "forbidden"
        await ws.send(json.dumps({"op": "subscribe", "id": 4, "stream": a["id"]}))
        opened = await ws_recv(ws, "open")
        assert (opened["type"], opened["stream"]) == ("open", a["id"])
        # A token in the op itself opens its own stream, and only that one.
        bad = {"op": "subscribe", "id": 5, "stream": b["id"], "token": forged_token(b["id"])}
        await ws.send(json.dumps(bad))
        assert (await ws_recv(ws, "open"))["code"] == "invalid_token"
        op = {"op": "subscribe", "id": 6, "stream": b["id"], "token": b["read_token"]}
        await ws.send(json.dumps(op))
        opened = await ws_recv(ws, "open")
        assert (opened["type"], opened["stream"]) == ("open", b["id"])
        op = {"op": "cancel", "id": 7, "stream": b["id"], "token": a["control_token"]}
        await ws.send(json.dumps(op))
        assert (await ws_recv(ws, "open"))["code"] == "forbidden"
    for token, code in (
        (forged_token(a["id"]), "invalid_token"),
        (expired_token(a["id"]), "token_expired"),
    ):
        async with websockets.connect(f"{url}?token={token}") as ws:
            frame = loads(await asyncio.wait_for(ws.recv(), 10))
            assert (frame["type"], frame["code"]) == ("error", code)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    for sid in (a["id"], b["id"]):
        await http.delete(f"/v1/streams/{sid}", headers=KEY)


@pytest.mark.slow
async def test_socketio_tokens(locked: ServerProcess, http: httpx.AsyncClient) -> None:
    a, b = await start(http), await start(http)
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(
        f"{locked.url}?token={a['read_token']}",
        auth={"token": a["read_token"]},
        transports=["websocket"],
        wait_timeout=10,
    )
    try:
        ack = await client.call("subscribe", {"jobId": b["id"]}, timeout=10)
        assert ack["ok"] is False and ack["error"]["code"] == "forbidden"
        ack = await client.call("cancel", {"jobId": a["id"]}, timeout=10)
        assert ack["ok"] is False and ack["error"]["code"] == "forbidden"
        ack = await client.call("start", {"request": {"prompt": "x"}}, timeout=10)
        assert ack["ok"] is False and ack["error"]["code"] == "forbidden"
        ack = await client.call("subscribe", {"jobId": a["id"]}, timeout=10)
        assert ack["ok"] is True
        ack = await client.call(
            "subscribe", {"jobId": b["id"], "token": b["read_token"]}, timeout=10
        )
        assert ack["ok"] is True
        ack = await client.call(
            "cancel", {"jobId": b["id"], "token": a["control_token"]}, timeout=10
        )
        assert ack["ok"] is False and ack["error"]["code"] == "forbidden"
        ack = await client.call(
            "cancel", {"jobId": b["id"], "token": b["control_token"]}, timeout=10
        )
        assert ack["ok"] is True and ack["status"] == "cancelled"
    finally:
        await client.disconnect()
    # A forged token in auth: the connection is refused with its code.
    refused = socketio.AsyncClient(reconnection=False)
    errors: list[object] = []
    refused.on("connect_error", errors.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await refused.connect(
            f"{locked.url}?token={a['read_token']}",
            auth={"token": expired_token(a["id"])},
            transports=["websocket"],
            wait_timeout=10,
        )
    assert errors and isinstance(errors[0], dict), errors
    assert errors[0]["data"]["code"] == "token_expired" and errors[0]["message"]
    await refused.disconnect()
    await http.delete(f"/v1/streams/{a['id']}", headers=KEY)


@pytest.mark.slow
async def test_chat_routes_hand_out_tokens(http: httpx.AsyncClient) -> None:
    other = await start(http)
    user = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}
    body = {"id": "chat-t", "messages": [user], "max_tokens": 400, "delay_ms": 25}
    async with http.stream("POST", "/v1/ai-sdk/chat", json=body, headers=KEY) as r:
        assert r.status_code == 200
        sid = r.headers["x-tokenwire-stream"]
        read = r.headers["x-tokenwire-read-token"]
        assert r.headers["x-tokenwire-control-token"]
    path = "/v1/ai-sdk/chat/chat-t/stream"
    async with http.stream("GET", path, params={"token": read}) as r:
        assert r.status_code == 200 and r.headers["x-tokenwire-stream"] == sid
    async with http.stream("GET", path, headers=bearer(read)) as r:
        assert r.status_code == 200
    r = await http.get(path, params={"token": other["read_token"]})
    assert r.status_code == 403 and r.json()["error"]["code"] == "chat_taken"
    r = await http.get(path, params={"token": expired_token(sid)})
    assert r.status_code == 401 and r.json()["error"]["code"] == "token_expired"
    openai_body = {"model": "scripted", "messages": [{"role": "user", "content": "x"}]}
    for stream in (True, False):
        r = await http.post(
            "/v1/chat/completions", json={**openai_body, "stream": stream}, headers=KEY
        )
        assert r.status_code == 200
        token = r.headers["x-tokenwire-read-token"]
        grant = TokenSigner(SECRET.encode()).verify(token)
        assert grant.stream == r.headers["x-tokenwire-stream"] and grant.scope == "read"
    for stream_id in (sid, other["id"]):
        await http.delete(f"/v1/streams/{stream_id}", headers=KEY)
