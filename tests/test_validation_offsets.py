"""Resume offsets on every transport: one check (server/offsets.py) for SSE and
NDJSON ``?after=`` / ``Last-Event-ID``, WebSocket ``after`` and Socket.IO
``lastSequence``; pure tests of the table, then each transport end to end."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import socketio
import websockets

from tests import raw_http
from tests.conftest import ServerProcess
from tokenwire.errors import InvalidRequestError
from tokenwire.events import loads
from tokenwire.server.offsets import MAX_SEQ, seq_from_json, seq_from_text

TEXT_OK = [(None, 0), ("", 0), ("0", 0), ("7", 7), ("007", 7), (str(MAX_SEQ), MAX_SEQ)]
TEXT_BAD = [
    "²",
    "٣",
    "\uff13",  # fullwidth 3
    "-1",
    "+1",
    "1.5",
    "1e3",
    "0x10",
    "x",
    "true",
    "null",
    "1 2",
    " 7",
    "7 ",
    str(MAX_SEQ + 1),
    "9" * 40,
    "\u00a07",
]
JSON_OK: list[tuple[Any, int]] = [(None, 0), (0, 0), (7, 7), (MAX_SEQ, MAX_SEQ)]
JSON_BAD: list[Any] = [True, False, 1.0, 1.5, -1, MAX_SEQ + 1, 10**40, "3", "", "²", [], [3], {}]


@pytest.mark.parametrize(("raw", "expected"), TEXT_OK)
def test_text_offsets_accepted(raw: str | None, expected: int) -> None:
    assert seq_from_text(raw, "'after'") == expected


@pytest.mark.parametrize("raw", TEXT_BAD)
def test_text_offsets_refused(raw: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        seq_from_text(raw, "'after'")
    assert refused.value.message.startswith("'after' must be a non-negative integer seq")


@pytest.mark.parametrize(("value", "expected"), JSON_OK)
def test_json_offsets_accepted(value: Any, expected: int) -> None:
    assert seq_from_json(value, "'after'") == expected


@pytest.mark.parametrize("value", JSON_BAD)
def test_json_offsets_refused(value: Any) -> None:
    with pytest.raises(InvalidRequestError):
        seq_from_json(value, "'lastSequence'")


# -- end to end --------------------------------------------------------------------


async def ended_stream(server: ServerProcess, tokens: int = 10) -> str:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        r = await client.post(
            "/v1/streams", json={"model": "scripted", "prompt": "x", "max_tokens": tokens}
        )
        assert r.status_code == 201, r.text
        sid = str(r.json()["id"])
        r = await client.get(f"/v1/streams/{sid}/ndjson")
        assert r.status_code == 200 and '"kind":"done"' in r.text
    return sid


def first_seq_sse(text: str) -> int:
    for line in text.splitlines():
        if line.startswith("id: "):
            return int(line[4:])
    raise AssertionError(text)


@pytest.mark.slow
@pytest.mark.parametrize("route", ["events", "ndjson"])
async def test_http_offsets_are_422_or_url_decoded(server: ServerProcess, route: str) -> None:
    sid = await ended_stream(server)
    target = f"/v1/streams/{sid}/{route}"
    for raw in ("%C2%B2", "%D9%A3", "%2D1", "1.5", "%31%2E5", "9" * 25, "%00"):
        status, body = await raw_http.request(server.url, "GET", f"{target}?after={raw}")
        assert status == 422, (raw, body)
        assert loads(body)["error"]["code"] == "invalid_request"
    for header in ("²".encode(), "٣".encode(), b"-1", b"1.5", b"\xff", b"9" * 25):
        status, body = await raw_http.request(
            server.url, "GET", target, headers={"Last-Event-ID": header.decode("latin-1")}
        )
        assert status == 422, (header, body)
        assert loads(body)["error"]["code"] == "invalid_request"
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        # %33 is "3": decoded like any query value, so this resumes after seq 3.
        status, body = await raw_http.request(server.url, "GET", f"{target}?after=%33")
        assert status == 200
        text = body.decode()
        first = first_seq_sse(text) if route == "events" else loads(text.splitlines()[1])["seq"]
        assert first == 4
        r = await client.get(target, headers={"Last-Event-ID": "5"})
        assert r.status_code == 200
        assert (
            first_seq_sse(r.text) if route == "events" else loads(r.text.splitlines()[1])["seq"]
        ) == 6
        assert (await client.get("/healthz")).status_code == 200


@pytest.mark.slow
async def test_websocket_after_table(server: ServerProcess) -> None:
    sid = await ended_stream(server)
    url = server.url.replace("http://", "ws://") + "/v1/ws"
    async with websockets.connect(url) as ws:
        for value in JSON_BAD:
            await ws.send(json.dumps({"op": "subscribe", "stream": sid, "after": value, "id": "r"}))
            frame = loads(await ws.recv())
            assert frame["type"] == "error" and frame["code"] == "bad_request", (value, frame)
            assert "'after' must be a non-negative integer seq" in frame["message"]
        await ws.send(json.dumps({"op": "subscribe", "stream": sid, "after": 4}))
        frame = loads(await ws.recv())
        assert frame["type"] == "open", frame
        frame = loads(await ws.recv())
        assert frame["type"] == "event" and frame["seq"] == 5, frame


@pytest.mark.slow
async def test_socketio_last_sequence_table(server: ServerProcess) -> None:
    sid = await ended_stream(server)
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(server.url, transports=["websocket"], wait_timeout=10)
    try:
        for value in JSON_BAD:
            ack = await client.call("subscribe", {"jobId": sid, "lastSequence": value}, timeout=10)
            assert ack["ok"] is False, (value, ack)
            assert ack["error"]["code"] == "invalid_request"
            assert "'lastSequence' must be a non-negative integer seq" in ack["error"]["message"]
        ack = await client.call("subscribe", {"jobId": sid, "lastSequence": 4}, timeout=10)
        assert ack == {"ok": True, "jobId": sid}
    finally:
        await client.disconnect()
