"""Rate limits and the per-address connection cap: the pure token buckets, then a
real server answering a burst over the limit with 429, ``Retry-After`` and the
JSON error, on HTTP starts, stream opens, WebSocket and Socket.IO."""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx
import pytest
import websockets

from tests.conftest import ServerFactory, ServerProcess
from tokenwire.events import loads
from tokenwire.server.ratelimit import Rate, TokenBuckets, parse_rate

BODY = {"model": "scripted", "prompt": "x", "max_tokens": 2}


def test_rates_parse() -> None:
    assert parse_rate("10/s") == Rate(per_s=10.0, burst=10.0)
    assert parse_rate(" 600 / m ") == Rate(per_s=10.0, burst=600.0)
    assert parse_rate("36/h") == Rate(per_s=0.01, burst=36.0)
    for off in ("", "off", "0"):
        assert parse_rate(off) is None
    for bad in ("10", "ten/s", "10/d", "-1/s", "0/s", "1/s/s"):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_a_bucket_allows_its_burst_then_refills_at_its_rate() -> None:
    buckets = TokenBuckets(Rate(per_s=2.0, burst=3.0))
    assert [buckets.take("a", now=100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", now=100.0) == pytest.approx(0.5)
    assert buckets.take("b", now=100.0) == 0.0  # another client, its own bucket
    assert buckets.take("a", now=100.5) == 0.0
    assert buckets.take("a", now=100.5) > 0
    # Refilled to the burst, never past it.
    assert [buckets.take("a", now=1000.0) for _ in range(4)][-1] > 0


def test_buckets_are_bounded_least_recently_used_first() -> None:
    buckets = TokenBuckets(Rate(per_s=1.0, burst=1.0), max_clients=3)
    for i in range(1000):
        buckets.take(f"client{i}", now=0.0)
        assert len(buckets) <= 3
    buckets.take("client998", now=0.0)  # used again: kept, the oldest goes
    buckets.take("new", now=0.0)
    assert buckets.take("client998", now=0.0) > 0  # still remembered as empty


@pytest.fixture(scope="module")
def limited(start_server: ServerFactory) -> ServerProcess:
    return start_server(TOKENWIRE_RATE_LIMIT="4/m", TOKENWIRE_API_KEYS="key-one,key-two,key-three")


def from_address(ip: str, key: str = "key-one") -> dict[str, str]:
    # uvicorn trusts X-Forwarded-For from 127.0.0.1: each test client gets its own address.
    return {"X-Forwarded-For": ip, "Authorization": f"Bearer {key}"}


def assert_limited(r: httpx.Response) -> None:
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "rate_limited" and r.json()["error"]["message"]
    assert 1 <= int(r.headers["retry-after"]) <= 60


@pytest.mark.slow
async def test_a_burst_of_starts_over_the_limit_gets_429(limited: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=limited.url, timeout=10) as http:
        statuses = [
            (
                await http.post("/v1/streams", json=BODY, headers=from_address("10.0.0.1"))
            ).status_code
            for _ in range(4)
        ]
        assert statuses == [201] * 4
        for target in ("/v1/streams", "/v1/chat/completions", "/v1/ai-sdk/chat"):
            r = await http.post(target, json=BODY, headers=from_address("10.0.0.1"))
            assert_limited(r)
        # The bucket is the key's, wherever it comes from; another key has its own.
        r = await http.post("/v1/streams", json=BODY, headers=from_address("10.0.0.9"))
        assert_limited(r)
        r = await http.post("/v1/streams", json=BODY, headers=from_address("10.0.0.1", "key-two"))
        assert r.status_code == 201
        # Status reads and health are not charged.
        for _ in range(6):
            assert (await http.get("/healthz")).status_code == 200
            r = await http.get("/v1/models", headers=from_address("10.0.0.1"))
            assert r.status_code == 200


@pytest.mark.slow
async def test_opens_are_charged_on_every_transport(limited: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=limited.url, timeout=10) as http:
        r = await http.post("/v1/streams", json=BODY, headers=from_address("10.0.1.1", "key-two"))
        token = r.json()["read_token"]
        sid = r.json()["id"]
        # Tokens are charged per address: SSE, NDJSON, the engine.io handshake, a WebSocket.
        ip = {"X-Forwarded-For": "10.0.1.2"}
        for path in ("events", "ndjson", "events"):
            r = await http.get(f"/v1/streams/{sid}/{path}", params={"token": token}, headers=ip)
            assert r.status_code == 200, path
        params = {"EIO": "4", "transport": "polling", "token": token}
        r = await http.get("/socket.io/", params=params, headers=ip)
        assert r.status_code == 200
        r = await http.get(f"/v1/streams/{sid}/ndjson", params={"token": token}, headers=ip)
        assert_limited(r)
        r = await http.get("/socket.io/", params=params, headers=ip)
        assert_limited(r)
    url = limited.url.replace("http://", "ws://") + f"/v1/ws?token={token}"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, additional_headers=ip):
            pass
    assert refused.value.response.status_code == 429
    assert loads(refused.value.response.body)["error"]["code"] == "rate_limited"
    assert refused.value.response.headers["retry-after"]


@pytest.mark.slow
async def test_starts_inside_a_websocket_are_charged(limited: ServerProcess) -> None:
    url = limited.url.replace("http://", "ws://") + "/v1/ws"
    async with websockets.connect(
        url, additional_headers=from_address("10.0.2.1", "key-three")
    ) as ws:
        codes = []
        for i in range(5):  # the handshake took one of the four
            await ws.send(json.dumps({"op": "start", "id": i, "request": BODY}))
            while True:
                frame = loads(await asyncio.wait_for(ws.recv(), 10))
                if frame.get("id") == i and frame["type"] in ("started", "error"):
                    codes.append(frame.get("code", frame["type"]))
                    break
        assert codes == ["started"] * 3 + ["rate_limited"] * 2


@pytest.mark.slow
async def test_one_address_holds_at_most_its_connections(start_server: ServerFactory) -> None:
    capped = start_server(TOKENWIRE_MAX_CONNECTIONS_PER_IP="3")
    body = {**BODY, "max_tokens": 400, "delay_ms": 25}
    async with httpx.AsyncClient(base_url=capped.url, timeout=10) as http:
        sid = (await http.post("/v1/streams", json=body)).json()["id"]
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(3):
                r = await stack.enter_async_context(
                    http.stream(
                        "GET", f"/v1/streams/{sid}/events", headers={"X-Forwarded-For": "10.0.3.1"}
                    )
                )
                assert r.status_code == 200
            r = await http.get("/healthz", headers={"X-Forwarded-For": "10.0.3.1"})
            assert r.status_code == 429
            assert r.json()["error"]["code"] == "too_many_connections"
            assert r.headers["retry-after"] == "1"
            # Another address is not affected.
            assert (
                await http.get("/healthz", headers={"X-Forwarded-For": "10.0.3.2"})
            ).status_code == 200
        # Closed: the address may connect again.
        await asyncio.sleep(0.3)
        r = await http.get("/healthz", headers={"X-Forwarded-For": "10.0.3.1"})
        assert r.status_code == 200
        await http.delete(f"/v1/streams/{sid}")


@pytest.mark.slow
async def test_an_unset_secret_is_warned_about(start_server: ServerFactory) -> None:
    server = start_server(TOKENWIRE_API_KEYS="key-one")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        r = await http.post("/v1/streams", json=BODY, headers={"Authorization": "Bearer key-one"})
        assert r.status_code == 201 and r.json()["read_token"].startswith("tw1.")
    assert "TOKENWIRE_TOKEN_SECRET is not set" in server.log()
