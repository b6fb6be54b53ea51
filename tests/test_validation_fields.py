"""Every request field against every class of JSON value, on every route that takes
a generation request: accepted exactly where it should be, refused with the route's
4xx otherwise, never another exception (a 500). Mostly pure tests of the validation
functions; then a slice end to end through a real server on each transport."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import pytest
import socketio
import websockets

from tests import raw_http
from tests.conftest import ServerProcess
from tokenwire.errors import InvalidRequestError, excerpt
from tokenwire.events import loads
from tokenwire.models.base import GenerationRequest
from tokenwire.server.ai_sdk import chat_request
from tokenwire.server.openai_api import ChatCompletionRequest, OpenAIError

MISSING = object()
VALUES: dict[str, Any] = {
    "missing": MISSING,
    "null": None,
    "true": True,
    "false": False,
    "int": 1,
    "float": 0.5,
    "negative": -1,
    "huge": 2**63,
    "str": "x",
    "empty": "",
    "nonascii": "²",
    "list": ["x"],
    "emptylist": [],
    "dict": {"a": 1},
}
NUMBER = {"missing", "null", "int", "float"}
INTEGER = {"missing", "null", "int"}
SEED = {"missing", "null", "int", "negative", "huge"}
STOP = {"missing", "null", "str", "nonascii", "list", "emptylist"}
MODEL = {"missing", "str", "nonascii"}

# field -> value classes accepted, for POST /v1/streams (and WS / Socket.IO start).
STREAMS = {
    "model": MODEL,
    "max_tokens": INTEGER,
    "temperature": NUMBER,
    "top_p": NUMBER,
    "delay_ms": NUMBER,
    "seed": SEED,
    "stop": STOP,
    "prompt": {"missing", "null", "str", "empty", "nonascii"},
}
OPENAI = {
    "model": MODEL,
    "n": INTEGER,
    "stream": {"missing", "null", "true", "false"},
    "stream_options": {"missing", "null", "dict"},
    "max_tokens": INTEGER,
    "max_completion_tokens": INTEGER,
    "temperature": NUMBER,
    "top_p": NUMBER,
    "seed": SEED,
    "stop": STOP,
    "messages": set(),
}
AI_SDK = {
    "model": MODEL | {"null"},  # useChat bodies: a null field is an absent one
    "max_tokens": INTEGER,
    "temperature": NUMBER,
    "top_p": NUMBER,
    "seed": SEED,
    "stop": STOP,
    "id": {"missing", "null", "str", "nonascii"},
    "messageId": {"missing", "null", "str", "nonascii"},
    "trigger": {"missing", "null", "str", "nonascii"},
    "messages": set(),
}


def with_field(base: Mapping[str, Any], field: str, value: Any) -> dict[str, Any]:
    body = {k: v for k, v in base.items() if k != field}
    if value is not MISSING:
        body[field] = value
    return body


def streams(body: dict[str, Any]) -> None:
    GenerationRequest.from_body(body, default_model="scripted")


def openai(body: dict[str, Any]) -> None:
    request = ChatCompletionRequest(body, "scripted")
    GenerationRequest.from_body(request.generation, default_model="scripted")


def ai_sdk(body: dict[str, Any]) -> None:
    generation, _ = chat_request(body)
    GenerationRequest.from_body(generation, default_model="scripted")


def accepted(check: Callable[[dict[str, Any]], None], body: dict[str, Any]) -> bool:
    """True or False; any exception but the route's own refusal fails the test."""
    try:
        check(body)
    except (InvalidRequestError, OpenAIError) as exc:
        message = exc.message if isinstance(exc, InvalidRequestError) else str(exc)
        assert message and len(message) < 300, message
        assert "<" not in message and "object at 0x" not in message, message
        return False
    return True


def table(fields: dict[str, set[str]]) -> list[tuple[str, str]]:
    return [(field, kind) for field in fields for kind in VALUES]


PROMPT = {"prompt": "hi"}
CHAT = {"messages": [{"role": "user", "content": "hi"}]}
UI = {"messages": [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}]}


@pytest.mark.parametrize(("field", "kind"), table(STREAMS))
def test_streams_body_table(field: str, kind: str) -> None:
    base = {} if field == "prompt" else PROMPT
    body = with_field(base, field, VALUES[kind])
    if field == "prompt" and kind in ("missing", "null"):
        body["messages"] = CHAT["messages"]  # the other way to give the text
    assert accepted(streams, body) is (kind in STREAMS[field]), body


@pytest.mark.parametrize(("field", "kind"), table(OPENAI))
def test_chat_completions_body_table(field: str, kind: str) -> None:
    body = with_field(CHAT, field, VALUES[kind])
    assert accepted(openai, body) is (kind in OPENAI[field]), body


@pytest.mark.parametrize(("field", "kind"), table(AI_SDK))
def test_ai_sdk_body_table(field: str, kind: str) -> None:
    body = with_field(UI, field, VALUES[kind])
    assert accepted(ai_sdk, body) is (kind in AI_SDK[field]), body


@pytest.mark.parametrize("kind", list(VALUES))
@pytest.mark.parametrize("check", [streams, openai, ai_sdk], ids=["streams", "openai", "ai_sdk"])
def test_message_fields_take_only_strings(
    check: Callable[[dict[str, Any]], None], kind: str
) -> None:
    value = VALUES[kind]
    for key in ("role", "content") if check is not ai_sdk else ("role",):
        message: dict[str, Any] = {"role": "user", "content": "hi"}
        if check is ai_sdk:
            message = {"role": "user", "parts": [{"type": "text", "text": "hi"}]}
        message = with_field(message, key, value)
        ok = accepted(check, {"messages": [message]})
        if key == "role":
            assert ok is False, message
        else:
            # OpenAI's content may also be an array of text parts (here, none).
            texts = {"str", "empty", "nonascii"} | ({"emptylist"} if check is openai else set())
            assert ok is (kind in texts), message


def test_openai_messages_say_what_is_wrong() -> None:
    with pytest.raises(OpenAIError) as empty:
        ChatCompletionRequest({**CHAT, "model": ""}, "scripted")
    assert empty.value.param == "model" and "empty string" in empty.value.message
    assert "but got string" not in empty.value.message
    with pytest.raises(OpenAIError) as boolean:
        ChatCompletionRequest({**CHAT, "n": True}, "scripted")
    assert boolean.value.param == "n" and boolean.value.code == "invalid_type"
    with pytest.raises(OpenAIError) as role:
        ChatCompletionRequest({"messages": [{"role": ["user"], "content": "x"}]}, "scripted")
    assert role.value.param == "messages[0].role" and "an array" in role.value.message


def test_excerpts_are_short_and_never_a_repr() -> None:
    assert excerpt("start") == "'start'"
    assert excerpt("x" * 900_000) == "'" + "x" * 48 + "…'"
    assert excerpt("a'b\\c") == "'a\\'b\\\\c'"
    for value, said in ((None, "null"), (True, "a boolean"), (3, "a number"), (2.5, "a number")):
        assert excerpt(value) == said
    assert excerpt(["x"] * 10_000) == "an array" and excerpt({"op": 1}) == "an object"


# -- end to end --------------------------------------------------------------------


@pytest.mark.slow
async def test_bad_fields_get_4xx_json_on_every_http_route(server: ServerProcess) -> None:
    cases: list[tuple[str, Any, int]] = [
        ("/v1/streams", {"prompt": "x", "max_tokens": True}, 422),
        ("/v1/streams", {"prompt": "x", "stop": False}, 422),
        ("/v1/streams", {"pipeline": ["tensor"]}, 422),
        ("/v1/streams", {"pipeline": "tensor", "params": {"nbytes": [1] * 10_000}}, 422),
        ("/v1/chat/completions", {**CHAT, "n": True}, 400),
        ("/v1/chat/completions", {**CHAT, "model": ""}, 400),
        ("/v1/chat/completions", {"messages": [{"role": ["user"], "content": "x"}]}, 400),
        ("/v1/chat/completions", {"messages": [{"role": {"a": 1}, "content": "x"}]}, 400),
        ("/v1/ai-sdk/chat", {"messages": [{"role": ["user"], "parts": []}]}, 422),
        ("/v1/ai-sdk/chat", {**UI, "max_tokens": 2.5}, 422),
    ]
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        for path, body, status in cases:
            r = await client.post(path, json=body)
            assert r.status_code == status, (path, body, r.text)
            error = r.json()["error"]
            assert error["code"] and error["message"], (path, error)
            assert len(error["message"]) < 300, error


@pytest.mark.slow
async def test_engineio_errors_are_json(server: ServerProcess) -> None:
    for target in (
        "/socket.io/?EIO=4&transport=polling&sid=bogus",
        "/socket.io/?EIO=3&transport=polling",
        "/socket.io/?EIO=4&transport=carrier-pigeon",
        "/socket.io?EIO=4&transport=polling&sid=" + "s" * 4000,
    ):
        status, body = await raw_http.request(server.url, "GET", target)
        assert status == 400, (target, body[:200])
        error = loads(body)["error"]
        assert error["code"] == "bad_request" and error["message"], error
        assert len(error["message"]) <= 200
    status, body = await raw_http.request(server.url, "GET", "/socket.io/?EIO=4&transport=polling")
    assert status == 200 and b'"sid"' in body  # a good handshake is untouched


@pytest.mark.slow
async def test_websocket_ops_are_checked_and_never_echoed_whole(server: ServerProcess) -> None:
    url = server.url.replace("http://", "ws://") + "/v1/ws"
    async with websockets.connect(url) as ws:
        for op, code in (
            ({"op": "x" * 900_000}, "bad_request"),
            ({"op": ["start"]}, "bad_request"),
            ({"op": "start", "request": {"prompt": "x", "max_tokens": True}}, "invalid_request"),
            ({"op": "start", "request": {"prompt": "x", "stop": {}}}, "invalid_request"),
            ({"op": "start", "request": {"pipeline": {}}}, "invalid_request"),
        ):
            await ws.send(json.dumps(op))
            frame = loads(await ws.recv())
            assert frame["type"] == "error" and frame["code"] == code, (str(op)[:80], frame)
            assert len(frame["message"]) < 300 and "[" not in frame["message"][:20], frame


@pytest.mark.slow
async def test_socketio_events_are_checked_and_never_echoed_whole(server: ServerProcess) -> None:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(server.url, transports=["websocket"], wait_timeout=10)
    try:
        ack = await client.call("y" * 100_000, {"jobId": "x"}, timeout=10)
        assert ack["ok"] is False and ack["error"]["code"] == "unknown_event"
        assert len(ack["error"]["message"]) < 300
        request = {"prompt": "x", "max_tokens": True}
        ack = await client.call("start", {"request": request}, timeout=10)
        assert ack["ok"] is False and ack["error"]["code"] == "invalid_request"
    finally:
        await client.disconnect()
