"""Connections that never finish a request cannot hold the server: silent sockets,
slowloris headers, slow bodies, huge headers, idle keep-alives, and more
connections than the cap (server/connections.py), on both of uvicorn's HTTP
parsers, through a real server, while a normal client keeps being served."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import websockets

from tests import raw_http
from tests.conftest import HealthzWatch, ServerFactory, ServerProcess
from tokenwire.events import loads
from tokenwire.server.config import ServerConfig
from tokenwire.server.connections import ConnectionLimits, error_bytes

pytestmark = pytest.mark.slow

HEADER_TIMEOUT_S = 1.0
SLACK_S = 5.0  # generous: two cores shared with other test runs


@pytest.fixture(scope="module", params=["httptools", "h11"])
def guarded(request: pytest.FixtureRequest, start_server: ServerFactory) -> ServerProcess:
    return start_server(
        TOKENWIRE_HTTP=request.param,
        TOKENWIRE_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
        TOKENWIRE_BODY_TIMEOUT_S="1",
        TOKENWIRE_KEEPALIVE_S="1",
        TOKENWIRE_MAX_HEADER_BYTES="8192",
    )


async def open_socket(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*raw_http.address(url))


async def read_until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends before it closes the connection."""
    return await asyncio.wait_for(reader.read(), timeout)


async def healthy(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        r = await client.get("/healthz")
        assert r.status_code == 200
        r = await client.post("/v1/streams", json={"prompt": "x", "max_tokens": 3})
        assert r.status_code == 201
        r = await client.get(f"/v1/streams/{r.json()['id']}/ndjson")
        assert r.status_code == 200 and '"kind":"done"' in r.text


def status_and_error(raw: bytes) -> tuple[int, str]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), loads(body)["error"]["code"]


@pytest.fixture
async def trickler(guarded: ServerProcess) -> AsyncIterator[asyncio.Task[float]]:
    """A slowloris: one header byte every 0.1 s, forever. The task's result is how
    long the server let it go on."""

    async def trickle() -> float:
        reader, writer = await open_socket(guarded.url)
        start = time.monotonic()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        try:
            while not reader.at_eof():
                writer.write(b"X")
                await writer.drain()
                await asyncio.sleep(0.1)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
        return time.monotonic() - start

    task = asyncio.ensure_future(trickle())
    yield task
    task.cancel()


async def test_silent_and_slowloris_connections_are_closed(
    guarded: ServerProcess, trickler: asyncio.Task[float]
) -> None:
    sockets = [await open_socket(guarded.url) for _ in range(50)]
    await healthy(guarded.url)  # served while 50 sockets sit silent
    start = time.monotonic()
    answers = await asyncio.gather(
        *(read_until_closed(reader, HEADER_TIMEOUT_S + SLACK_S) for reader, _ in sockets)
    )
    assert time.monotonic() - start < HEADER_TIMEOUT_S + SLACK_S
    for answer in answers:
        assert status_and_error(answer) == (408, "request_timeout")
    lasted = await asyncio.wait_for(trickler, HEADER_TIMEOUT_S + SLACK_S)
    assert lasted < HEADER_TIMEOUT_S + SLACK_S
    for _, writer in sockets:
        writer.close()
    await healthy(guarded.url)


async def test_a_kept_alive_connection_gets_a_new_deadline(guarded: ServerProcess) -> None:
    reader, writer = await open_socket(guarded.url)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200")
    # Idle after its response: closed by the keep-alive timeout (1 s) or the deadline.
    rest = await read_until_closed(reader, 1 + SLACK_S)
    assert rest == b"" or status_and_error(rest) == (408, "request_timeout")
    writer.close()


async def test_a_slow_body_gets_408_and_the_connection_closes(guarded: ServerProcess) -> None:
    reader, writer = await open_socket(guarded.url)
    writer.write(
        b"POST /v1/streams HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 100\r\n\r\n{"
    )
    answer = await read_until_closed(reader, 1 + SLACK_S)
    writer.close()
    assert status_and_error(answer) == (408, "request_timeout")
    await healthy(guarded.url)


@pytest.mark.parametrize("pieces", [1, 40])
async def test_oversized_headers_get_431(guarded: ServerProcess, pieces: int) -> None:
    reader, writer = await open_socket(guarded.url)
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    step = -(-len(request) // pieces)
    with contextlib.suppress(ConnectionError):  # the server stops reading at the bound
        for i in range(0, len(request), step):
            writer.write(request[i : i + step])
            await writer.drain()
            await asyncio.sleep(0.01)
    answer = await read_until_closed(reader, SLACK_S)
    writer.close()
    assert status_and_error(answer) == (431, "headers_too_large")
    await healthy(guarded.url)


async def test_an_unread_body_is_not_counted_as_the_next_head(guarded: ServerProcess) -> None:
    # 413 is answered before the body is read; the body that still follows on the
    # connection is not the next request's head, whatever its size.
    async with httpx.AsyncClient(base_url=guarded.url, timeout=10) as client:
        r = await client.post("/v1/streams", content=b"[" * 2_000_000)
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
        r = await client.get("/healthz")
        assert r.status_code == 200


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        b"NOT HTTP\r\n\r\n",
    ],
)
async def test_malformed_requests_get_a_json_400(guarded: ServerProcess, garbage: bytes) -> None:
    reader, writer = await open_socket(guarded.url)
    writer.write(garbage)
    answer = await read_until_closed(reader, SLACK_S)
    writer.close()
    assert status_and_error(answer) == (400, "bad_request")


async def test_the_connection_cap_answers_503_and_frees_up(
    start_server: ServerFactory, healthz_watch: HealthzWatch
) -> None:
    server = start_server(TOKENWIRE_MAX_CONNECTIONS="24", TOKENWIRE_HEADER_TIMEOUT_S="60")
    healthz_watch.ignore(server)  # refusing /healthz at the cap is the point
    ws_url = server.url.replace("http://", "ws://") + "/v1/ws"
    silent = [await open_socket(server.url) for _ in range(12)]
    sockets = [await websockets.connect(ws_url) for _ in range(12)]
    await asyncio.sleep(0.2)
    status, body = await raw_http.request(server.url, "GET", "/healthz")
    assert status == 503 and loads(body)["error"]["code"] == "too_many_connections"
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(ws_url)
    assert refused.value.response.status_code == 503
    for _, writer in silent:
        writer.close()
    for ws in sockets:
        await ws.close()
    deadline = time.monotonic() + SLACK_S
    while True:
        status, _ = await raw_http.request(server.url, "GET", "/healthz")
        if status == 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert status == 200
    await healthy(server.url)


def test_the_cap_fits_the_descriptor_limit() -> None:
    assert 1 <= ConnectionLimits(max_connections=10**9).effective_max_connections() < 10**9
    assert ConnectionLimits(max_connections=5).effective_max_connections() == 5


def test_error_responses_are_whole_json_answers() -> None:
    raw = error_bytes(408, "request_timeout", "late")
    assert raw.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"connection: close\r\n" in raw and b"content-type: application/json\r\n" in raw
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-length: %d\r\n" % len(body) in head + b"\r\n"
    assert loads(body) == {"error": {"code": "request_timeout", "message": "late"}}


def test_every_limit_has_its_environment_variable() -> None:
    config = ServerConfig.from_env(
        {
            "TOKENWIRE_HEADER_TIMEOUT_S": "2.5",
            "TOKENWIRE_BODY_TIMEOUT_S": "3",
            "TOKENWIRE_KEEPALIVE_S": "4",
            "TOKENWIRE_MAX_CONNECTIONS": "5",
            "TOKENWIRE_MAX_HEADER_BYTES": "6",
            "TOKENWIRE_MAX_STREAM_EVENTS": "7",
            "TOKENWIRE_MAX_WS_MESSAGE_BYTES": "8",
            "TOKENWIRE_HTTP": "h11",
        }
    )
    assert (config.header_timeout_s, config.body_timeout_s, config.keepalive_s) == (2.5, 3, 4)
    assert (config.max_connections, config.max_header_bytes) == (5, 6)
    assert (config.max_stream_events, config.max_ws_message_bytes) == (7, 8)
    assert config.http_impl == "h11"
    defaults = ServerConfig()
    assert (defaults.header_timeout_s, defaults.keepalive_s, defaults.max_connections) == (
        10.0,
        5.0,
        10_000,
    )
