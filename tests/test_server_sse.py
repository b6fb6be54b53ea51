"""End to end against a real server process, with real clients (httpx, httpx-sse)."""

from __future__ import annotations

import asyncio
import random
import re
from typing import Any

import httpx
import psutil
import pytest
from httpx_sse import aconnect_sse

from tests.conftest import ServerFactory, ServerProcess
from tokenwire.events import loads
from tokenwire.models.scripted import scripted_token

pytestmark = pytest.mark.slow


async def start(client: httpx.AsyncClient, **body: Any) -> str:
    body.setdefault("model", "scripted")
    body.setdefault("prompt", "hello")
    r = await client.post("/v1/streams", json=body)
    assert r.status_code == 201, r.text
    data = r.json()
    assert data["events_url"] == f"/v1/streams/{data['id']}/events"
    return str(data["id"])


async def read_sse(
    client: httpx.AsyncClient, sid: str, *, after: int | None = None, limit: int | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Open frame and up to ``limit`` events (all, to the terminal, when None)."""
    headers = {"Last-Event-ID": str(after)} if after is not None else {}
    events: list[dict[str, Any]] = []
    opened: dict[str, Any] = {}
    async with aconnect_sse(client, "GET", f"/v1/streams/{sid}/events", headers=headers) as es:
        async for sse in es.aiter_sse():
            if sse.event == "tw-open":
                opened = loads(sse.data)
                continue
            event = loads(sse.data)
            assert sse.id == str(event["seq"])
            assert sse.event == event["kind"]
            events.append(event)
            if event["kind"] in ("done", "error", "cancelled"):
                break
            if limit is not None and len(events) >= limit:
                break
    return opened, events


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} missing from /metrics"
    return float(m.group(1))


async def test_resume_after_repeated_cuts_delivers_each_event_once(server: ServerProcess) -> None:
    rng = random.Random(1)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        sid = await start(client, max_tokens=120, delay_ms=3)
        seen: list[dict[str, Any]] = []
        cuts = 0
        while not seen or seen[-1]["kind"] not in ("done", "error", "cancelled"):
            last = seen[-1]["seq"] if seen else None
            opened, events = await read_sse(client, sid, after=last, limit=rng.randint(1, 25))
            assert opened["stream"] == sid and opened["recovered"] is True
            seen.extend(events)
            cuts += 1
        assert cuts >= 5
        assert [e["seq"] for e in seen] == list(range(1, len(seen) + 1))
        tokens = [e["text"] for e in seen if e["kind"] == "token"]
        assert tokens == [scripted_token(i) for i in range(120)]
        assert seen[-1]["kind"] == "done" and seen[-1]["usage"]["completion_tokens"] == 120


async def test_resume_with_after_query(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        sid = await start(client, max_tokens=10)
        _, events = await read_sse(client, sid)
        r = await client.get(f"/v1/streams/{sid}/events?after=7")
        lines = [ln for ln in r.text.splitlines() if ln.startswith("id: ")]
        assert lines == [f"id: {i}" for i in range(8, events[-1]["seq"] + 1)]


async def test_hundred_concurrent_subscribers_see_identical_sequences(
    server: ServerProcess,
) -> None:
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as client:
        sid = await start(client, max_tokens=100, delay_ms=10)
        results = await asyncio.gather(*(read_sse(client, sid) for _ in range(100)))
    # A late joiner may get its backlog as merged catch-up frames: compare what
    # each subscriber received, seq by seq, with merged frames expanded.
    first = covered(results[0][1])
    assert [seq for seq, _ in first] == list(range(1, 103))
    for _, events in results:
        assert covered(events) == first


def covered(events: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """(seq, kind) for every seq the frames cover, plus the text, as one list."""
    out: list[tuple[int, str]] = []
    text = ""
    for e in events:
        start = e.get("from_seq", e["seq"])
        out.extend((seq, e["kind"]) for seq in range(start, e["seq"] + 1))
        text += e.get("text", "")
    assert text == "".join(scripted_token(i) for i in range(100))
    return out


async def test_sse_headers_retry_open_and_heartbeat(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        sid = await start(client, max_tokens=2, delay_ms=1500)
        async with client.stream("GET", f"/v1/streams/{sid}/events") as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["cache-control"].startswith("no-cache")
            assert r.headers["x-accel-buffering"] == "no"
            assert "content-encoding" not in r.headers
            body = b""
            async for chunk in r.aiter_bytes():
                body += chunk
                if b": hb" in body:
                    break
        assert body.startswith(b"retry: 2000\nevent: tw-open\ndata: {")
        assert b": hb\n\n" in body  # 1 s heartbeat while the model is quiet


async def test_recovered_false_when_history_is_gone(start_server: ServerFactory) -> None:
    small = start_server(TOKENWIRE_RETENTION_EVENTS="10")
    async with httpx.AsyncClient(base_url=small.url, timeout=10) as client:
        sid = await start(client, max_tokens=40)
        await read_sse(client, sid)
        opened, events = await read_sse(client, sid, after=3)
        assert opened["recovered"] is False
        assert opened["first_seq"] == events[0]["seq"] == opened["last_seq"] - 9
        opened, _ = await read_sse(client, sid, after=opened["first_seq"] - 1)
        assert opened["recovered"] is True


async def test_stream_survives_reconnect_within_grace_and_is_cancelled_without(
    start_server: ServerFactory,
) -> None:
    srv = start_server(TOKENWIRE_GRACE_S="1.0")
    async with httpx.AsyncClient(base_url=srv.url, timeout=10) as client:
        sid = await start(client, max_tokens=2000, delay_ms=10)
        _, first = await read_sse(client, sid, limit=5)
        await asyncio.sleep(0.5)  # a page reload
        assert (await client.get(f"/v1/streams/{sid}")).json()["status"] == "running"
        _, second = await read_sse(client, sid, after=first[-1]["seq"], limit=5)
        # 50 tokens piled up while away: they come merged into one catch-up frame.
        assert second[0].get("from_seq", second[0]["seq"]) == first[-1]["seq"] + 1
        await asyncio.sleep(0.6)
        assert (await client.get(f"/v1/streams/{sid}")).json()["status"] == "running"
        await asyncio.sleep(1.5)  # nobody returns
        status = (await client.get(f"/v1/streams/{sid}")).json()
        assert status["status"] == "cancelled"
        _, rest = await read_sse(client, sid, after=second[-1]["seq"])
        assert rest[-1] == {"seq": rest[-1]["seq"], "kind": "cancelled", "reason": "no_subscribers"}
    assert f"event=grace_expired stream={sid}" in srv.log()


async def test_delete_stops_at_once(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        sid = await start(client, max_tokens=5000, delay_ms=5)
        _, first = await read_sse(client, sid, limit=3)
        r = await client.delete(f"/v1/streams/{sid}")
        assert r.status_code == 200 and r.json() == {"id": sid, "status": "cancelled"}
        _, rest = await read_sse(client, sid, after=first[-1]["seq"])
        assert rest[-1]["kind"] == "cancelled" and rest[-1]["reason"] == "stopped"
        assert rest[-1]["seq"] < 300
    log = server.log()
    assert f"event=cancel stream={sid} transport=producer" in log
    assert f"event=subscribe stream={sid} transport=sse" in log


async def test_subscribe_leave_cycles_leave_no_tasks_or_memory(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        sid = await start(client, max_tokens=30_000, delay_ms=20)
        proc = psutil.Process(server.pid)

        async def cycle() -> None:
            async with client.stream("GET", f"/v1/streams/{sid}/events") as r:
                async for chunk in r.aiter_bytes():
                    if b"event: token" in chunk:
                        break

        for _ in range(50):  # warm up allocator pools
            await cycle()
        await asyncio.sleep(0.3)
        tasks0 = metric((await client.get("/metrics")).text, "tokenwire_asyncio_tasks")
        rss0 = proc.memory_info().rss
        for _ in range(20):
            await asyncio.gather(*(cycle() for _ in range(50)))
        await asyncio.sleep(0.5)
        text = (await client.get("/metrics")).text
        tasks1 = metric(text, "tokenwire_asyncio_tasks")
        rss1 = proc.memory_info().rss
        assert metric(text, 'tokenwire_subscribers{transport="sse"}') == 0
        assert tasks1 <= tasks0, (tasks0, tasks1)
        assert rss1 - rss0 < 4 * 1024 * 1024, f"RSS grew {(rss1 - rss0) / 1024:.0f} KiB"
        await client.delete(f"/v1/streams/{sid}")


JSON = {"Content-Type": "application/json"}
BAD_REQUESTS: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("POST", "/v1/streams", {"content": b"{not json", "headers": JSON}, 422, "invalid_request"),
    ("POST", "/v1/streams", {"content": b"", "headers": JSON}, 422, "invalid_request"),
    ("POST", "/v1/streams", {"content": b"{}"}, 415, "unsupported_media_type"),
    ("POST", "/v1/streams", {"json": []}, 422, "invalid_request"),
    ("POST", "/v1/streams", {"json": {"model": "scripted"}}, 422, "invalid_request"),
    ("POST", "/v1/streams", {"json": {"prompt": 5}}, 422, "invalid_request"),
    ("POST", "/v1/streams", {"json": {"prompt": "x", "max_tokens": -1}}, 422, "invalid_request"),
    ("POST", "/v1/streams", {"json": {"prompt": "x", "max_tokens": "9"}}, 422, "invalid_request"),
    ("POST", "/v1/streams", {"json": {"prompt": "x", "temperature": 9}}, 422, "invalid_request"),
    ("POST", "/v1/streams", {"json": {"messages": [{"role": "x"}]}}, 422, "invalid_request"),
    ("POST", "/v1/streams", {"json": {"prompt": "x", "model": "nope"}}, 422, "model_not_found"),
    ("POST", "/v1/streams", {"content": b"[" * 2_000_000}, 413, "body_too_large"),
    ("GET", "/v1/streams/st_unknown", {}, 404, "not_found"),
    ("DELETE", "/v1/streams/st_unknown", {}, 404, "not_found"),
    ("GET", "/v1/streams/st_unknown/events", {}, 404, "not_found"),
    ("GET", "/v1/streams/st_unknown/ndjson", {}, 404, "not_found"),
    ("GET", "/v1/nothing-here", {}, 404, "not_found"),
    ("PUT", "/v1/streams", {}, 405, "method_not_allowed"),
]


async def test_bad_input_gets_json_errors_and_the_server_stays_up(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        live = await start(client, max_tokens=200, delay_ms=5)
        for method, path, kwargs, status, code in BAD_REQUESTS:
            r = await client.request(method, path, **kwargs)
            assert r.status_code == status, (method, path, r.text)
            body = r.json()
            assert body["error"]["code"] == code, (path, body)
            assert body["error"]["message"]
        sid = await start(client, max_tokens=3)
        for bad_after in ("-1", "x", "1.5", "99999999999999999999"):
            r = await client.get(f"/v1/streams/{sid}/events", params={"after": bad_after})
            assert r.status_code == 422, bad_after
            r = await client.get(f"/v1/streams/{sid}/events", headers={"Last-Event-ID": bad_after})
            assert r.status_code == 422, bad_after
        _, events = await read_sse(client, live)  # the other stream lost nothing
        # Read late, its first tokens may come as one merged catch-up frame
        # (from_seq..seq): count what each frame covers.
        covered = [n for e in events for n in range(e.get("from_seq", e["seq"]), e["seq"] + 1)]
        assert covered == list(range(1, 203))
        assert (await client.get("/healthz")).json()["status"] == "ok"


async def test_limits_answer_429(start_server: ServerFactory) -> None:
    srv = start_server(TOKENWIRE_MAX_STREAMS="1", TOKENWIRE_MAX_SUBSCRIBERS_PER_STREAM="1")
    async with httpx.AsyncClient(base_url=srv.url, timeout=10) as client:
        sid = await start(client, max_tokens=1000, delay_ms=10)
        r = await client.post("/v1/streams", json={"prompt": "x"})
        assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_streams"
        async with client.stream("GET", f"/v1/streams/{sid}/events") as first:
            assert first.status_code == 200
            r = await client.get(f"/v1/streams/{sid}/events")
            assert r.status_code == 429
            assert r.json()["error"]["code"] == "too_many_subscribers"
        await client.delete(f"/v1/streams/{sid}")


async def test_status_and_metrics(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        sid = await start(client, max_tokens=5)
        await read_sse(client, sid)
        status = (await client.get(f"/v1/streams/{sid}")).json()
        assert status["status"] == "done" and status["last_seq"] == 7
        assert status["model"] == "scripted" and status["subscribers"] == 0
        text = (await client.get("/metrics")).text
        assert metric(text, "tokenwire_events_published_total") >= 7
        assert metric(text, 'tokenwire_events_delivered_total{transport="sse"}') >= 7
        assert "tokenwire_time_to_first_event_seconds_bucket" in text
        assert "tokenwire_streams_active" in text


async def test_ndjson_stream(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        sid = await start(client, max_tokens=4)
        async with client.stream("GET", f"/v1/streams/{sid}/ndjson?after=2") as r:
            assert r.headers["content-type"] == "application/x-ndjson"
            lines = [loads(line) async for line in r.aiter_lines() if line]
        assert lines[0]["kind"] == "open" and lines[0]["stream"] == sid
        assert [x["seq"] for x in lines[1:]] == [3, 4, 5, 6]
