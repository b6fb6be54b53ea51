"""A request cannot make the server publish events without bound: tensor chunks
have a minimum size, and a pipeline's stream an event budget
(``TOKENWIRE_MAX_STREAM_EVENTS``), on every transport."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import ServerFactory, ServerProcess
from tokenwire.events import Event, loads
from tokenwire.examples.synthetic import MIN_CHUNK_BYTES, TensorParams
from tokenwire.pipelines import within_budget

BUDGET = 40


async def numbers(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


async def collect(events: AsyncIterator[Any]) -> list[Any]:
    return [e async for e in events]


async def test_a_stream_within_its_budget_is_untouched() -> None:
    assert await collect(within_budget(numbers(5), 5)) == [0, 1, 2, 3, 4]


async def test_past_its_budget_a_stream_ends_with_an_error() -> None:
    out = await collect(within_budget(numbers(10**9), 3))
    assert out[:3] == [0, 1, 2] and len(out) == 4
    assert isinstance(out[3], Event) and out[3].kind == "error"
    assert out[3].fields["code"] == "event_budget_exceeded"


@pytest.mark.parametrize("asked", [1, 7, 4095])
def test_tiny_tensor_chunks_are_raised_to_the_minimum(asked: int) -> None:
    params = TensorParams({"nbytes": 512 * 1024 * 1024, "chunk_bytes": asked})
    assert params.chunk_bytes == MIN_CHUNK_BYTES
    assert params.nbytes // params.chunk_bytes == 131_072


def test_bigger_chunks_are_kept() -> None:
    assert TensorParams({"nbytes": 1 << 20, "chunk_bytes": 8192}).chunk_bytes == 8192


# -- end to end --------------------------------------------------------------------


@pytest.fixture(scope="module")
def budgeted(start_server: ServerFactory) -> ServerProcess:
    return start_server(TOKENWIRE_MAX_STREAM_EVENTS=str(BUDGET))


async def start(server: ServerProcess, body: dict[str, Any]) -> str:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        r = await client.post("/v1/streams", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


TENSOR = {"pipeline": "tensor", "params": {"nbytes": 1 << 20, "chunk_bytes": 1}}
DENOISE = {"pipeline": "denoise", "params": {"width": 64, "height": 64, "steps": 50, "delay_ms": 0}}


def check_budget_end(kinds: list[str], terminal: dict[str, Any], last_seq: int) -> None:
    assert len(kinds) == BUDGET + 1, kinds[-3:]
    assert terminal["code"] == "event_budget_exceeded", terminal
    assert last_seq == BUDGET + 1


@pytest.mark.slow
@pytest.mark.parametrize("body", [TENSOR, DENOISE], ids=["tensor", "denoise"])
async def test_the_budget_ends_pipelines_on_ndjson_and_sse(
    budgeted: ServerProcess, body: dict[str, Any]
) -> None:
    sid = await start(budgeted, body)
    async with httpx.AsyncClient(base_url=budgeted.url, timeout=30) as client:
        r = await client.get(f"/v1/streams/{sid}/ndjson")
        lines = [loads(line) for line in r.text.splitlines()][1:]
        events = [e for e in lines if e["kind"] != "heartbeat"]
        check_budget_end([e["kind"] for e in events], events[-1], events[-1]["seq"])
        if body is TENSOR:
            header = events[0]
            assert header["kind"] == "tensor.header"
            assert header["chunk_bytes"] == MIN_CHUNK_BYTES and header["chunks"] == 256
        r = await client.get(f"/v1/streams/{sid}/events")
        ids = [int(line[4:]) for line in r.text.splitlines() if line.startswith("id: ")]
        assert ids == list(range(1, BUDGET + 2))
        assert "event_budget_exceeded" in r.text.rsplit("event: ", 1)[-1]


@pytest.mark.slow
async def test_the_budget_ends_pipelines_on_websocket(budgeted: ServerProcess) -> None:
    url = budgeted.url.replace("http://", "ws://") + "/v1/ws"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"op": "start", "id": "b", "request": TENSOR}))
        kinds: list[str] = []
        while True:
            message = await ws.recv()
            if isinstance(message, bytes):
                kinds.append("tensor.chunk")
                continue
            frame = loads(message)
            if frame["type"] == "event":
                kinds.append(frame["kind"])
                if frame["kind"] in ("done", "error", "cancelled"):
                    break
        check_budget_end(kinds, frame, frame["seq"])


@pytest.mark.slow
async def test_model_streams_have_no_budget_of_this_kind(budgeted: ServerProcess) -> None:
    sid = await start(budgeted, {"prompt": "x", "max_tokens": BUDGET * 2})
    async with httpx.AsyncClient(base_url=budgeted.url, timeout=30) as client:
        r = await client.get(f"/v1/streams/{sid}/ndjson")
    last = loads(r.text.splitlines()[-1])
    assert last["kind"] == "done" and last["seq"] > BUDGET * 2  # tokens, metrics, done
