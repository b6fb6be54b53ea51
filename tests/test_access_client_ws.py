"""The Python client refreshes an expired stream token on the WebSocket transport
too (issue 16, item 6): refused at connect (the server's one ``error`` frame, then
close 1008), and refused on a connection that outlived its token (the
``subscribe`` answered ``token_expired``). Against a real server whose tokens
live 2 seconds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerFactory, ServerProcess
from tokenwire.client import Client
from tokenwire.client.errors import AuthenticationError
from tokenwire.models.scripted import scripted_token
from tokenwire.server.tokens import TokenSigner

pytestmark = pytest.mark.slow

SECRET = "ws-refresh-secret-0123456789"
KEY = {"Authorization": "Bearer key-one"}
SIGNER = TokenSigner(SECRET.encode())  # an hour, as the application's backend would
TTL_S = 2
EXPECTED = "".join(scripted_token(i) for i in range(6))


@pytest.fixture(scope="module")
def short_lived(start_server: ServerFactory) -> ServerProcess:
    return start_server(
        TOKENWIRE_API_KEYS="key-one",
        TOKENWIRE_TOKEN_SECRET=SECRET,
        TOKENWIRE_TOKEN_TTL_S=str(TTL_S),
    )


async def start(server: ServerProcess, **params: object) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        body = {"model": "scripted", "prompt": "x", "max_tokens": 6, **params}
        r = await http.post("/v1/streams", json=body, headers=KEY)
        assert r.status_code == 201
        started: dict[str, str] = r.json()
        return started


async def expire(token_of: dict[str, str]) -> None:
    """Wait until the server's own short-lived token has expired (whole seconds)."""
    await asyncio.sleep(TTL_S + 1.2)


async def test_a_token_expired_at_connect_is_refreshed(short_lived: ServerProcess) -> None:
    started = await start(short_lived)
    await expire(started)
    calls: list[str] = []

    async def refresh() -> str:
        calls.append(started["id"])
        return SIGNER.issue(started["id"], "read")

    async with Client(
        short_lived.url, transport="ws", token=started["read_token"], refresh_token=refresh
    ) as client:
        assert await client.subscribe(started["id"]).text() == EXPECTED
        assert calls == [started["id"]]


async def test_a_connection_that_outlived_its_token_subscribes_with_a_new_one(
    short_lived: ServerProcess,
) -> None:
    started = await start(short_lived, max_tokens=6)
    fresh: list[str] = []

    def refresh() -> str:
        fresh.append(SIGNER.issue(started["id"], "read"))
        return fresh[-1]

    async with Client(
        short_lived.url, transport="ws", token=started["read_token"], refresh_token=refresh
    ) as client:
        assert await client.subscribe(started["id"]).text() == EXPECTED
        assert fresh == []
        await expire(started)
        # Same pooled connection, opened with the token that has now expired.
        again = client.subscribe(started["id"], after=3)
        events = [e async for e in again]
        assert events[0].seq == 4 and events[-1].kind == "done"
        assert [e.seq for e in events] == list(range(4, events[-1].seq + 1))
        assert len(fresh) == 1
        assert client.metrics()["ws_connections"] == 1


async def test_without_a_callback_the_expiry_ends_the_stream_once(
    short_lived: ServerProcess,
) -> None:
    started = await start(short_lived)
    await expire(started)
    t0 = time.monotonic()
    async with Client(short_lived.url, transport="ws", token=started["read_token"]) as client:
        with pytest.raises(AuthenticationError) as refused:
            await client.subscribe(started["id"]).text()
    assert refused.value.status_code == 401 and refused.value.code == "token_expired"
    assert time.monotonic() - t0 < 30  # an answer, not reconnects until give-up
    # A callback whose token is refused too does not loop: the second refusal is final.
    calls: list[int] = []

    def stale() -> str:
        calls.append(1)
        return SIGNER.issue(started["id"], "read", now=time.time() - 7200)

    async with Client(
        short_lived.url, transport="ws", token=started["read_token"], refresh_token=stale
    ) as client:
        with pytest.raises(AuthenticationError) as refused:
            await client.subscribe(started["id"]).text()
    assert refused.value.code == "token_expired"
    assert calls == [1]


NODE_SCRIPT = Path(__file__).resolve().parent / "node" / "js_ws_refresh.mjs"


async def read_with_js(server: ServerProcess, stream_id: str, token: str, fresh: str) -> Any:
    node = shutil.which("node")
    assert node is not None, "node missing: run scripts/setup.sh --dev"
    proc = await asyncio.create_subprocess_exec(
        node,
        str(NODE_SCRIPT),
        server.url,
        stream_id,
        token,
        fresh,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    return json.loads(out.decode().strip().splitlines()[-1])


async def test_the_js_client_refreshes_a_token_the_websocket_refused(
    short_lived: ServerProcess,
) -> None:
    started = await start(short_lived)
    await expire(started)
    got = await read_with_js(
        short_lived, started["id"], started["read_token"], SIGNER.issue(started["id"], "read")
    )
    assert got["error"] is None
    assert got["text"] == EXPECTED
    assert got["refreshes"] == 1
    # Without a callback the refusal is the answer, an AuthenticationError, not retries.
    bare = await read_with_js(short_lived, started["id"], started["read_token"], "-")
    assert bare["error"] == {"name": "AuthenticationError", "code": "token_expired", "status": 401}
    assert bare["seqs"] == []


class RefusingPeer:
    """A fake server (named as such): the refusal a tokenwire server sends a
    connection with an expired token (101, the one ``error`` frame, close 1008),
    written in one piece, so the client hears it all before its ``subscribe``
    goes: the order a loaded machine produces by chance."""

    def __init__(self) -> None:
        self.connections = 0
        self.tokens: list[str] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import base64
        import hashlib

        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
        self.connections += 1
        self.tokens.append(headers.get("Authorization", headers.get("authorization", "")))
        key = headers.get("Sec-WebSocket-Key", headers.get("sec-websocket-key", ""))
        guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        accept = base64.b64encode(hashlib.sha1((key + guid).encode()).digest()).decode()
        error = json.dumps(
            {"type": "error", "code": "token_expired", "message": "the token has expired"}
        ).encode()
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
            + accept.encode()
            + b"\r\n\r\n"
            + bytes([0x81, len(error)])
            + error
            + bytes([0x88, 2])
            + (1008).to_bytes(2, "big")
        )
        await writer.drain()
        with contextlib.suppress(Exception):
            await reader.read()  # until the client goes
        writer.close()


async def test_a_refusal_heard_before_the_subscribe_goes_is_refreshed_not_retried() -> None:
    peer = RefusingPeer()
    server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    calls: list[int] = []

    def refresh() -> str:
        calls.append(1)
        return "second"

    try:
        async with server:
            async with Client(
                f"http://127.0.0.1:{port}", transport="ws", token="first", refresh_token=refresh
            ) as client:
                with pytest.raises(AuthenticationError) as refused:
                    await asyncio.wait_for(client.subscribe("st_x").text(), 20)
    finally:
        server.close()
    # One refresh, then the refusal of the new token is final: no reconnect loop.
    assert refused.value.code == "token_expired"
    assert calls == [1]
    assert peer.tokens == ["Bearer first", "Bearer second"], peer.tokens
