"""Control across nodes: two real gateways over one real redis-server.

A stop through gateway B (``DELETE``, WebSocket ``cancel``, the OpenAI route's
stream) ends a stream gateway A runs, and A's reader sees ``cancelled`` within 2 s;
viewers counted on every gateway hold a stream through its grace period."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import socketio
from websockets.sync.client import connect

from tests.conftest import ServerFactory, ServerProcess
from tests.redis_fixture import RedisServer
from tokenwire import stream as stream_module
from tokenwire.broker.redis import RedisBroker
from tokenwire.errors import LimitExceededError
from tokenwire.events import Event
from tokenwire.stream import Hub, HubConfig

GRACE_S = 1.5
LONG = {"prompt": "x", "max_tokens": 400, "delay_ms": 40}  # 16 s unless stopped


@pytest.fixture(scope="module")
def gateways(
    start_server: ServerFactory, redis_server: RedisServer
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    env = {"TOKENWIRE_GRACE_S": str(GRACE_S)}
    a = start_server("--broker", redis_server.url, **env)
    b = start_server("--broker", redis_server.url, **env)
    yield a, b
    a.stop()
    b.stop()


def start(client: httpx.Client, gateway: ServerProcess) -> str:
    started = client.post(gateway.url + "/v1/streams", json=LONG)
    assert started.status_code == 201, started.text
    sid: str = started.json()["id"]
    return sid


def read_until_terminal(lines: Iterator[str]) -> tuple[str, dict[str, object]]:
    kind = ""
    for line in lines:
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: ") and kind in ("done", "error", "cancelled"):
            return kind, json.loads(line[6:])
    raise AssertionError("the stream ended without a terminal event")


@contextlib.contextmanager
def reading(client: httpx.Client, gateway: ServerProcess) -> Iterator[tuple[str, Iterator[str]]]:
    """A long stream started on ``gateway`` and read there past its first token."""
    sid = start(client, gateway)
    with client.stream("GET", f"{gateway.url}/v1/streams/{sid}/events") as live:
        lines = live.iter_lines()
        first_token(lines)
        yield sid, lines


def assert_stopped_within_2_s(lines: Iterator[str], asked: float) -> None:
    kind, fields = read_until_terminal(lines)
    took = time.monotonic() - asked
    assert (kind, fields["reason"]) == ("cancelled", "stopped")
    assert took < 2.0, took


def first_token(lines: Iterator[str]) -> None:
    for line in lines:
        if line.startswith("id: "):
            return


def log_length(redis_server: RedisServer, sid: str) -> int:
    reply = redis_server.command("XLEN", f"tw:{{{sid}}}:l")
    return int(reply.strip()[1:])


def assert_producer_stopped(redis_server: RedisServer, sid: str) -> None:
    before = log_length(redis_server, sid)
    time.sleep(0.4)  # ten tokens' time at this pace
    assert log_length(redis_server, sid) == before
    assert before < LONG["max_tokens"]  # type: ignore[operator]


def test_delete_through_b_ends_the_stream_a_runs_and_reads(
    gateways: tuple[ServerProcess, ServerProcess], redis_server: RedisServer
) -> None:
    a, b = gateways
    with httpx.Client(timeout=30) as client:
        with reading(client, a) as (sid, lines):
            asked = time.monotonic()
            stop = client.delete(f"{b.url}/v1/streams/{sid}")
            assert stop.status_code == 200, stop.text
            assert stop.json() == {"id": sid, "status": "cancelled"}
            assert_stopped_within_2_s(lines, asked)
        assert_producer_stopped(redis_server, sid)
        assert client.get(f"{a.url}/v1/streams/{sid}").json()["status"] == "cancelled"
        # Stopping an ended stream changes nothing, through either gateway.
        length = log_length(redis_server, sid)
        for gateway in (b, a):
            again = client.delete(f"{gateway.url}/v1/streams/{sid}")
            assert again.json() == {"id": sid, "status": "cancelled"}
        assert log_length(redis_server, sid) == length
        unknown = client.delete(f"{b.url}/v1/streams/st_nobody_runs_this")
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "not_found"


def test_websocket_cancel_through_b(
    gateways: tuple[ServerProcess, ServerProcess], redis_server: RedisServer
) -> None:
    a, b = gateways
    with httpx.Client(timeout=30) as client:
        sid = start(client, a)
        with (
            client.stream("GET", f"{a.url}/v1/streams/{sid}/events") as live,
            connect(b.url.replace("http", "ws", 1) + "/v1/ws") as ws,
        ):
            lines = live.iter_lines()
            first_token(lines)
            ws.send(json.dumps({"op": "subscribe", "stream": sid}))
            assert json.loads(ws.recv(timeout=10))["type"] == "open"
            asked = time.monotonic()
            ws.send(json.dumps({"op": "cancel", "stream": sid}))
            while True:  # B's own subscriber gets the terminal event too
                frame = json.loads(ws.recv(timeout=10))
                assert frame["type"] == "event", frame
                if frame["kind"] != "token":
                    break
            assert (frame["kind"], frame["reason"]) == ("cancelled", "stopped")
            assert_stopped_within_2_s(lines, asked)
        assert_producer_stopped(redis_server, sid)


def test_socketio_cancel_through_b(
    gateways: tuple[ServerProcess, ServerProcess], redis_server: RedisServer
) -> None:
    a, b = gateways
    with httpx.Client(timeout=30) as client:
        with reading(client, a) as (sid, lines):
            with socketio.SimpleClient() as sio:
                # long-polling: the sync client's WebSocket needs websocket-client
                sio.connect(b.url, transports=["polling"], wait_timeout=10)
                asked = time.monotonic()
                ack = sio.call("cancel", {"jobId": sid}, timeout=10)
            assert ack == {"ok": True, "jobId": sid, "status": "cancelled"}, ack
            assert_stopped_within_2_s(lines, asked)
        assert_producer_stopped(redis_server, sid)


def test_an_openai_stream_on_a_is_stopped_through_b(
    gateways: tuple[ServerProcess, ServerProcess], redis_server: RedisServer
) -> None:
    a, b = gateways
    body = {
        "model": "scripted",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "max_tokens": 400,
        "delay_ms": 40,
    }
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", a.url + "/v1/chat/completions", json=body) as answer,
    ):
        assert answer.status_code == 200
        sid = answer.headers["x-tokenwire-stream"]
        lines = answer.iter_lines()
        next(line for line in lines if line.startswith("data: "))
        asked = time.monotonic()
        assert client.delete(f"{b.url}/v1/streams/{sid}").status_code == 200
        finish = None
        for line in lines:
            if line == "data: [DONE]":
                break
            if line.startswith("data: "):
                choices = json.loads(line[6:])["choices"]
                if choices and choices[0]["finish_reason"]:
                    finish = choices[0]["finish_reason"]
        took = time.monotonic() - asked
    assert finish == "stop" and took < 2.0, (finish, took)
    assert_producer_stopped(redis_server, sid)


def test_a_viewer_moving_to_b_within_the_grace_keeps_the_stream(
    gateways: tuple[ServerProcess, ServerProcess], redis_server: RedisServer
) -> None:
    a, b = gateways
    with httpx.Client(timeout=30) as client:
        sid = start(client, a)
        with client.stream("GET", f"{a.url}/v1/streams/{sid}/events") as live:
            first_token(live.iter_lines())
        # A page reload that lands on B, half a grace later, and stays past the grace.
        time.sleep(GRACE_S / 2)
        with client.stream("GET", f"{b.url}/v1/streams/{sid}/ndjson?after=0") as moved:
            lines = moved.iter_lines()
            watched_until = time.monotonic() + GRACE_S * 1.5
            seqs = []
            for line in lines:
                frame = json.loads(line)
                assert frame.get("kind") not in ("cancelled", "done", "error"), frame
                if "seq" in frame:
                    seqs.append(frame["seq"])
                if time.monotonic() > watched_until:
                    break
        assert client.get(f"{a.url}/v1/streams/{sid}").json()["status"] == "running"
        assert seqs[-1] - seqs[0] > 10  # live all along, not a backlog
        # Everyone left: the grace runs, then the stream is cancelled.
        left = time.monotonic()
        deadline = left + GRACE_S + 5
        status = "running"
        while status == "running" and time.monotonic() < deadline:
            time.sleep(0.1)
            status = client.get(f"{a.url}/v1/streams/{sid}").json()["status"]
        ended_after = time.monotonic() - left
        assert status == "cancelled"
        assert ended_after >= GRACE_S - 0.2, ended_after
        tail = client.get(f"{b.url}/v1/streams/{sid}/ndjson?after=0").text.splitlines()
        assert json.loads(tail[-1])["reason"] == "no_subscribers"
        assert_producer_stopped(redis_server, sid)


def test_the_control_connection_comes_back_after_a_redis_restart(
    gateways: tuple[ServerProcess, ServerProcess], redis_server: RedisServer
) -> None:
    a, b = gateways
    with httpx.Client(timeout=30) as client:
        with reading(client, a) as (sid, lines):
            redis_server.restart(down_s=0.5)  # AOF on: nothing is lost
            time.sleep(2.5)  # past the longest reconnect backoff (2 s)
            asked = time.monotonic()
            stop = client.delete(f"{b.url}/v1/streams/{sid}")
            while stop.status_code == 503 and time.monotonic() < asked + 5:
                stop = client.delete(f"{b.url}/v1/streams/{sid}")  # B's pool reconnecting
            assert stop.json() == {"id": sid, "status": "cancelled"}, stop.text
            # Heard by A (not ended by B after the 5 s a stop nobody hears waits).
            assert_stopped_within_2_s(lines, asked)
    assert "no node runs" not in b.log()


async def test_a_stop_no_node_hears_ends_the_stream_itself(redis_url: str) -> None:
    gone, asker = RedisBroker(redis_url), RedisBroker(redis_url)
    await gone.create("st_orphan")
    await gone.append("st_orphan", Event.token("a"))
    await gone.aclose()  # its writer died: nobody listens for the stop
    asker.control.stop_wait_s = 0.3
    hub = Hub(asker)
    try:
        started = time.monotonic()
        stream = await hub.cancel("st_orphan")
        assert 0.3 <= time.monotonic() - started < 3
        assert str(stream.status) == "cancelled"
        info = await asker.info("st_orphan")
        assert info.closed and info.last_seq == 2
        cursor = await asker.cursor("st_orphan", 1)
        [last] = await cursor.read(10, timeout=1)
        cursor.close()
        assert (last.kind, last.fields) == ("cancelled", {"reason": "stopped"})
        again = await hub.cancel("st_orphan")  # ended: nothing changes
        assert str(again.status) == "cancelled"
        assert (await asker.info("st_orphan")).last_seq == 2
        assert "st_orphan" not in hub.streams  # a stop registers nothing
    finally:
        await hub.aclose()


async def test_a_failed_open_of_another_nodes_stream_leaks_nothing(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_module, "UNREAD_S", 0.1)
    runner = Hub(RedisBroker(redis_url))
    full = Hub(RedisBroker(redis_url), HubConfig(max_subscribers_per_stream=0))
    here = Hub(RedisBroker(redis_url))
    try:
        sid = (await runner.start(_forever())).id
        with pytest.raises(LimitExceededError):
            await full.subscribe(sid).open()
        reader = here.subscribe(sid)
        await reader.open()
        await asyncio.sleep(0.3)
        assert sid not in full.streams  # resolved for an open that failed: forgotten
        assert here.streams[sid].subscribers == 1  # read: kept
        reader.close()
        assert sid not in here.streams
    finally:
        for hub in (here, full, runner):
            await hub.aclose()


async def _forever() -> AsyncIterator[str]:
    while True:
        await asyncio.sleep(0.05)
        yield "t "
