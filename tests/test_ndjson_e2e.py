"""NDJSON ``GET /v1/streams/{id}/ndjson`` end to end: a real server process, httpx streaming."""

from __future__ import annotations

import random
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.resume_checks import TERMINAL, assert_scripted_exactly_once
from tokenwire.events import loads

pytestmark = pytest.mark.slow


async def start(client: httpx.AsyncClient, **body: Any) -> str:
    body.setdefault("model", "scripted")
    body.setdefault("prompt", "hello")
    r = await client.post("/v1/streams", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["ndjson_url"] == f"/v1/streams/{r.json()['id']}/ndjson"
    return str(r.json()["id"])


async def read_ndjson(
    client: httpx.AsyncClient, sid: str, *, after: int | None = None, limit: int | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The open line and up to ``limit`` events (to the terminal when None); leaving the
    block early drops the connection mid-stream."""
    params = {"after": str(after)} if after is not None else {}
    events: list[dict[str, Any]] = []
    async with client.stream("GET", f"/v1/streams/{sid}/ndjson", params=params) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/x-ndjson"
        lines = r.aiter_lines()
        opened = loads(await anext(lines))
        assert opened["kind"] == "open"
        async for line in lines:
            if not line:
                continue
            obj = loads(line)
            if obj["kind"] == "heartbeat":
                continue
            events.append(obj)
            if obj["kind"] in TERMINAL or (limit is not None and len(events) >= limit):
                break
    return opened, events


async def test_resume_after_cuts_delivers_each_event_once(server: ServerProcess) -> None:
    rng = random.Random(7)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        sid = await start(client, max_tokens=150, delay_ms=3)
        seen: list[dict[str, Any]] = []
        cuts = 0
        while not seen or seen[-1]["kind"] not in TERMINAL:
            last = seen[-1]["seq"] if seen else None
            opened, events = await read_ndjson(client, sid, after=last, limit=rng.randint(1, 25))
            assert opened["stream"] == sid and opened["recovered"] is True
            seen.extend(events)
            cuts += 1
        assert cuts >= 3
        assert_scripted_exactly_once(seen, 150)


async def test_open_line_first_and_heartbeat_lines_while_idle(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        sid = await start(client, max_tokens=1, delay_ms=1300)
        async with client.stream("GET", f"/v1/streams/{sid}/ndjson") as r:
            assert r.headers["cache-control"].startswith("no-cache")
            assert r.headers["x-tokenwire-stream"] == sid
            lines = [loads(line) async for line in r.aiter_lines() if line]
        assert lines[0] == {
            "kind": "open",
            "stream": sid,
            "epoch": lines[0]["epoch"],
            "recovered": True,
            "first_seq": 1,
            "last_seq": lines[0]["last_seq"],
            "status": "running",
        }
        heartbeats = [x for x in lines if x["kind"] == "heartbeat"]
        assert heartbeats and isinstance(heartbeats[0]["ts"], float)
        events = [x for x in lines[1:] if x["kind"] != "heartbeat"]
        assert [(e["seq"], e["kind"]) for e in events] == [
            (1, "token"),
            (2, "metrics"),
            (3, "done"),
        ]


async def test_malformed_after_gets_422_and_other_streams_go_on(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        live = await start(client, max_tokens=100, delay_ms=3)
        sid = await start(client, max_tokens=3)
        for bad in ("-1", "x", "1.5", "1e3", " 2", "99999999999999999999"):
            r = await client.get(f"/v1/streams/{sid}/ndjson", params={"after": bad})
            assert r.status_code == 422, bad
            assert r.json()["error"]["code"] == "invalid_request"
            assert r.json()["error"]["message"]
        r = await client.get("/v1/streams/st_unknown/ndjson")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        _, events = await read_ndjson(client, live)
        assert_scripted_exactly_once(events, 100)
