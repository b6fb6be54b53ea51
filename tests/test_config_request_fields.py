"""Unknown request fields are named (issue 13, deliverable 6): ``POST /v1/streams``
and the WebSocket and Socket.IO start ops refuse them with 422 ``unknown_field``;
the OpenAI route, whose clients send fields tokenwire does not implement, ignores
them but names them in ``x-tokenwire-ignored-fields``."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from tests.conftest import ServerProcess
from tokenwire.server.services import GENERATION_FIELDS, UnknownFieldError, check_fields

TIMEOUT = 30.0


def test_check_fields_names_the_field_and_the_closest_known_one() -> None:
    check_fields({"prompt": "hi", "max_tokens": 2}, GENERATION_FIELDS)
    with pytest.raises(UnknownFieldError) as caught:
        check_fields({"prompt": "hi", "max_tokenz": 2}, GENERATION_FIELDS)
    assert caught.value.field == "max_tokenz"
    assert caught.value.status == 422 and caught.value.code == "unknown_field"
    assert "unknown field 'max_tokenz' (did you mean 'max_tokens'?)" in caught.value.message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "hi", "max_tokenz": 2}, "max_tokenz"),
        ({"prompt": "hi", "temprature": 0.1}, "temprature"),
        ({"pipeline": "tensor", "params": {}, "prompt": "x"}, "prompt"),
    ],
)
async def test_post_streams_refuses_an_unknown_field(
    server: ServerProcess, body: dict[str, object], field: str
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
        before = (await client.get("/healthz")).json()["streams"]
        r = await client.post("/v1/streams", json=body)
        assert r.status_code == 422
        error = r.json()["error"]
        assert error["code"] == "unknown_field" and repr(field) in error["message"]
        assert (await client.get("/healthz")).json()["streams"] == before  # nothing started


async def test_the_websocket_start_op_refuses_an_unknown_field(server: ServerProcess) -> None:
    url = server.url.replace("http", "ws", 1) + "/v1/ws"
    async with websockets.connect(url) as ws:
        await ws.send(
            json.dumps({"op": "start", "id": "r1", "request": {"prompt": "hi", "max_tokenz": 2}})
        )
        async with asyncio.timeout(TIMEOUT):
            frame = json.loads(await ws.recv())
    assert frame["type"] == "error" and frame["code"] == "unknown_field" and frame["id"] == "r1"
    assert "'max_tokenz'" in frame["message"]


async def test_the_openai_route_ignores_but_names_unknown_fields(server: ServerProcess) -> None:
    body = {
        "model": "scripted",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 3,
        "frequency_penalty": 0.5,  # OpenAI's, not implemented: accepted silently
        "max_tokenz": 9,
    }
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200
        assert r.headers["x-tokenwire-ignored-fields"] == "max_tokenz"
        assert r.json()["usage"]["completion_tokens"] == 3
        body.pop("max_tokenz")
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200 and "x-tokenwire-ignored-fields" not in r.headers
