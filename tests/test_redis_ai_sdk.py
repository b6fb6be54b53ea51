"""The AI SDK resume URL behind a load balancer: two real gateways on one real
redis-server share the chat index, so ``useChat({resume: true})`` after a page reload
finds its chat whichever gateway the reload lands on, and only its owner does."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ServerFactory, ServerProcess
from tests.redis_fixture import RedisServer
from tokenwire.broker.redis import LIVE_TTL_S
from tokenwire.models.scripted import scripted_token

USER = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "say hello"}]}
TOKEN_HEADER = "x-tokenwire-chat-token"
TOKENS = 25
SLOW: dict[str, Any] = {"max_tokens": TOKENS, "delay_ms": 40}  # 1 s
LONG: dict[str, Any] = {"max_tokens": 400, "delay_ms": 40}  # 16 s unless stopped


@pytest.fixture(scope="module")
def gateways(
    start_server: ServerFactory, redis_server: RedisServer
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    a = start_server("--broker", redis_server.url)
    b = start_server("--broker", redis_server.url)
    yield a, b
    a.stop()
    b.stop()


def path(chat_id: str) -> str:
    return f"/v1/ai-sdk/chat/{chat_id}/stream"


async def post_chat(
    http: httpx.AsyncClient,
    gateway: ServerProcess,
    chat_id: str,
    token: str | None = None,
    **fields: Any,
) -> tuple[str, str | None]:
    """POST a chat turn and leave after its first bytes (a page reload): its stream id
    and chat token."""
    body = {"id": chat_id, "messages": [USER], "model": "scripted", **fields}
    headers = {TOKEN_HEADER: token} if token else {}
    async with http.stream(
        "POST", gateway.url + "/v1/ai-sdk/chat", json=body, headers=headers
    ) as r:
        assert r.status_code == 200
        async for _ in r.aiter_bytes():
            break
        return r.headers["x-tokenwire-stream"], r.headers.get(TOKEN_HEADER)


def chunks(body: str) -> list[dict[str, Any]]:
    """The UI message chunks of an answer, which must end with ``[DONE]``."""
    data = [line[6:] for line in body.splitlines() if line.startswith("data: ")]
    assert data and data[-1] == "[DONE]", data[-3:]
    return [json.loads(d) for d in data[:-1]]


def types(parts: list[dict[str, Any]]) -> list[str]:
    """Chunk types, a run of text deltas as one (catch-up may merge tokens)."""
    out: list[str] = []
    for part in parts:
        if not (part["type"] == "text-delta" and out and out[-1] == "text-delta"):
            out.append(part["type"])
    return out


def text(parts: list[dict[str, Any]]) -> str:
    return "".join(p["delta"] for p in parts if p["type"] == "text-delta")


def ttl_ms(redis_server: RedisServer, chat_id: str) -> int:
    return int(redis_server.command("PTTL", f"tw:chat:{{{chat_id}}}").strip()[1:])


async def test_a_chat_posted_to_a_resumes_through_b_from_the_start_exactly_once(
    gateways: tuple[ServerProcess, ServerProcess], redis_server: RedisServer
) -> None:
    a, b = gateways
    async with httpx.AsyncClient(timeout=30) as http:
        sid, token = await post_chat(http, a, "chat-lb", **SLOW)
        assert token is not None
        assert 0 < ttl_ms(redis_server, "chat-lb") <= (LIVE_TTL_S + 300) * 1000
        hdrs = {TOKEN_HEADER: token}
        on_b, on_a = await asyncio.gather(
            http.get(b.url + path("chat-lb"), headers=hdrs),
            http.get(a.url + path("chat-lb"), headers=hdrs),
        )
    expected_text = "".join(scripted_token(i) for i in range(TOKENS))
    for answer in (on_b, on_a):
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-vercel-ai-ui-message-stream"] == "v1"
        assert answer.headers["x-tokenwire-stream"] == sid
        parts = chunks(answer.text)
        assert types(parts) == [
            "start",
            "start-step",
            "text-start",
            "text-delta",
            "data-metrics",
            "text-end",
            "finish-step",
            "finish",
        ]
        assert parts[0]["messageId"] == sid
        assert parts[0]["messageMetadata"] == {"tokenwire": {"stream": sid, "model": "scripted"}}
        assert text(parts) == expected_text  # every token, once, from the first
        assert parts[-1]["finishReason"] == "length"


async def test_only_the_owner_resumes_through_the_other_gateway(
    gateways: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = gateways
    async with httpx.AsyncClient(timeout=30) as http:
        first, token = await post_chat(http, a, "chat-own", **LONG)
        assert token is not None
        # Someone else posts the same id through B: their own answer, not the id.
        second, stolen = await post_chat(http, b, "chat-own", **LONG)
        assert second != first and stolen is None
        for headers in ({}, {TOKEN_HEADER: "chat_guess"}, {TOKEN_HEADER: token[:-1]}):
            for gateway in (b, a):
                r = await http.get(gateway.url + path("chat-own"), headers=headers)
                assert r.status_code == 403, (gateway.url, headers)
                assert r.json()["error"]["code"] == "chat_taken"
        async with http.stream("GET", b.url + path("chat-own"), params={"token": token}) as r:
            assert r.status_code == 200 and r.headers["x-tokenwire-stream"] == first
        for sid in (first, second):
            assert (await http.delete(f"{b.url}/v1/streams/{sid}")).status_code == 200


async def test_an_ended_chat_gives_204_on_both_gateways(
    gateways: tuple[ServerProcess, ServerProcess], redis_server: RedisServer
) -> None:
    a, b = gateways
    async with httpx.AsyncClient(timeout=30) as http:
        body = {"id": "chat-end", "messages": [USER], "model": "scripted", "max_tokens": 3}
        answer = await http.post(a.url + "/v1/ai-sdk/chat", json=body)
        assert types(chunks(answer.text))[-1] == "finish"
        hdrs = {TOKEN_HEADER: answer.headers[TOKEN_HEADER]}
        # B knows the stream only from Redis, where its log says it ended.
        for gateway in (b, a, b):
            r = await http.get(gateway.url + path("chat-end"), headers=hdrs)
            assert r.status_code == 204 and r.content == b""
    assert redis_server.command("EXISTS", "tw:chat:{chat-end}").strip() == b":0"


async def test_the_owner_posting_again_through_b_moves_the_chat_to_the_new_stream(
    gateways: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = gateways
    async with httpx.AsyncClient(timeout=30) as http:
        first, token = await post_chat(http, a, "chat-again", **LONG)
        second, again = await post_chat(http, b, "chat-again", token, **LONG)
        assert again == token and second != first
        for gateway in (a, b):
            async with http.stream(
                "GET", gateway.url + path("chat-again"), headers={TOKEN_HEADER: token or ""}
            ) as r:
                assert r.status_code == 200 and r.headers["x-tokenwire-stream"] == second
        for sid in (first, second):
            assert (await http.delete(f"{a.url}/v1/streams/{sid}")).status_code == 200


async def test_redis_down_the_chat_routes_answer_503(
    start_server: ServerFactory, own_redis: RedisServer
) -> None:
    gateway = start_server("--broker", own_redis.url)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        body = {"id": "chat-down", "messages": [USER], "model": "scripted", "max_tokens": 3}
        answer = await http.post("/v1/ai-sdk/chat", json=body)
        assert answer.status_code == 200
        hdrs = {TOKEN_HEADER: answer.headers[TOKEN_HEADER]}
        own_redis.stop()
        for r in (
            await http.post("/v1/ai-sdk/chat", json=body, headers=hdrs),
            await http.post("/v1/ai-sdk/chat", json={**body, "id": "chat-new"}),
            await http.get(path("chat-down"), headers=hdrs),
        ):
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "broker_unavailable"
        assert (await http.get("/healthz")).status_code == 200  # no crash


async def test_with_keys_the_chat_belongs_to_its_key_on_every_gateway(
    start_server: ServerFactory, redis_server: RedisServer
) -> None:
    # One token secret: a read token signed by A is checked by B.
    keys = {"TOKENWIRE_API_KEYS": "key-one,key-two", "TOKENWIRE_TOKEN_SECRET": "s" * 32}
    a = start_server("--broker", redis_server.url, **keys)
    b = start_server("--broker", redis_server.url, **keys)
    one = {"Authorization": "Bearer key-one"}
    two = {"Authorization": "Bearer key-two"}
    body = {"id": "chat-key", "messages": [USER], "model": "scripted", **LONG}
    async with httpx.AsyncClient(timeout=30) as http:
        async with http.stream("POST", a.url + "/v1/ai-sdk/chat", json=body, headers=one) as r:
            assert r.status_code == 200 and TOKEN_HEADER not in r.headers
            sid, read = r.headers["x-tokenwire-stream"], r.headers["x-tokenwire-read-token"]
        r = await http.get(b.url + path("chat-key"), headers=two)
        assert r.status_code == 403 and r.json()["error"]["code"] == "chat_taken"
        for headers in (one, {"Authorization": f"Bearer {read}"}):
            async with http.stream("GET", b.url + path("chat-key"), headers=headers) as r:
                assert r.status_code == 200 and r.headers["x-tokenwire-stream"] == sid
        assert (await http.delete(f"{b.url}/v1/streams/{sid}", headers=one)).status_code == 200
    a.stop()
    b.stop()
