"""``tokenwire serve --broker redis://…`` against a real redis-server: the stream's log
lives in Redis, every transport reads it, and ``--processes`` is refused with a reason."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import httpx

from tests.conftest import ServerFactory
from tests.redis_fixture import RedisServer
from tests.resume_checks import covered


def sse_events(body: str) -> list[tuple[str, str]]:
    out = []
    kind = ""
    for line in body.splitlines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("id: "):
            out.append((kind, line[4:]))
    return out


def test_a_gateway_on_redis_streams_and_resumes(
    start_server: ServerFactory, redis_url: str, redis_server: RedisServer
) -> None:
    server = start_server("--broker", redis_url)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        started = client.post("/v1/streams", json={"prompt": "hi", "max_tokens": 20})
        assert started.status_code == 201, started.text
        sid = started.json()["id"]
        whole = client.get(f"/v1/streams/{sid}/events").text
        events = sse_events(whole)
        assert [int(seq) for _, seq in events] == list(range(1, len(events) + 1))
        assert events[-1][0] == "done" and len(events) >= 21
        resumed = sse_events(
            client.get(f"/v1/streams/{sid}/events", headers={"Last-Event-ID": "15"}).text
        )
        assert resumed[0] == ("token", "16") and resumed == events[15:]
        ndjson = client.get(f"/v1/streams/{sid}/ndjson?after=5").text.splitlines()
        assert '"recovered":true' in ndjson[0] and len(ndjson) == 1 + len(events) - 5
    # The log is in Redis, entry ids = seq.
    reply = redis_server.command("XLEN", f"tw:{{{sid}}}:l")
    assert reply.strip() == f":{len(events)}".encode()


def test_processes_with_the_memory_broker_are_refused() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENWIRE_")}
    done = subprocess.run(
        [sys.executable, "-m", "tokenwire", "serve", "--processes", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "needs a shared broker" in done.stderr and "memory broker" in done.stderr
    assert done.stderr.count("\n") == 1


def test_an_unknown_broker_scheme_is_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENWIRE_")}
    env["TOKENWIRE_BROKER"] = "kafka://x"
    done = subprocess.run(
        [sys.executable, "-m", "tokenwire", "serve"], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "unknown scheme" in done.stderr


def test_a_stream_started_on_one_gateway_is_read_on_another(
    start_server: ServerFactory, redis_url: str
) -> None:
    a = start_server("--broker", redis_url)
    b = start_server("--broker", redis_url)
    with httpx.Client(timeout=30) as client:
        started = client.post(
            a.url + "/v1/streams", json={"prompt": "hi", "max_tokens": 40, "delay_ms": 20}
        )
        sid = started.json()["id"]
        on_b = sse_events(client.get(f"{b.url}/v1/streams/{sid}/events").text)
        assert [int(seq) for _, seq in on_b] == list(range(1, len(on_b) + 1))
        assert on_b[-1][0] == "done" and len(on_b) >= 41
        resumed = sse_events(
            client.get(f"{b.url}/v1/streams/{sid}/events", headers={"Last-Event-ID": "30"}).text
        )
        assert resumed == on_b[30:]
        # A reads the ended stream's backlog at once: the tokens come merged (catch-up)
        on_a = sse_events(client.get(f"{a.url}/v1/streams/{sid}/events").text)
        assert on_a[-1] == on_b[-1]
        # A stop through B reaches A, which runs it (tests/test_redis_control.py).
        body = {"prompt": "hi", "max_tokens": 400, "delay_ms": 50}
        again = client.post(a.url + "/v1/streams", json=body).json()["id"]
        with client.stream("GET", f"{b.url}/v1/streams/{again}/events") as live:
            assert live.status_code == 200, live.read()
            for line in live.iter_lines():
                if line.startswith("id: "):
                    break
            stop = client.delete(f"{b.url}/v1/streams/{again}")
        assert stop.status_code == 200 and stop.json()["status"] == "cancelled"
        assert client.delete(f"{a.url}/v1/streams/{again}").json()["status"] == "cancelled"


def test_processes_share_streams_over_redis(start_server: ServerFactory, redis_url: str) -> None:
    server = start_server("--broker", redis_url, "--processes", "2")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(6):
            # a new connection each time: the kernel spreads them over the processes
            sid = httpx.post(server.url + "/v1/streams", json={"prompt": "x", "max_tokens": 5})
            assert sid.status_code == 201, sid.text
            stream_id = sid.json()["id"]
            for _ in range(3):
                got = httpx.get(f"{server.url}/v1/streams/{stream_id}/events", timeout=30)
                events = sse_events(got.text)
                assert got.status_code == 200 and events[-1][0] == "done"
                assert [int(seq) for _, seq in events] == list(range(1, len(events) + 1))
        assert client.get("/healthz").status_code == 200
    started = set(re.findall(r"Started server process \[(\d+)\]", server.log()))
    assert len(started) == 2, server.log()[-2000:]


def test_redis_down_is_a_clear_503_and_the_gateway_carries_on(
    start_server: ServerFactory, own_redis: RedisServer
) -> None:
    server = start_server("--broker", own_redis.url)
    body = {"prompt": "x", "max_tokens": 3}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/v1/streams", json=body).status_code == 201
        own_redis.stop()
        down = client.post("/v1/streams", json=body)
        assert down.status_code == 503, down.text
        assert down.json()["error"]["code"] == "broker_unavailable"
        assert client.get("/healthz").status_code == 200  # no crash
        own_redis.start()
        again = client.post("/v1/streams", json=body)
        assert again.status_code == 201, again.text
        events = sse_events(client.get(f"/v1/streams/{again.json()['id']}/events").text)
        assert events[-1][0] == "done"


def test_redis_restarted_mid_stream_loses_nothing(
    start_server: ServerFactory, own_redis: RedisServer
) -> None:
    server = start_server("--broker", own_redis.url)
    body = {"prompt": "x", "max_tokens": 150, "delay_ms": 20}
    seqs: list[int] = []
    kinds: list[str] = []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        sid = client.post("/v1/streams", json=body).json()["id"]
        with client.stream("GET", f"/v1/streams/{sid}/events") as live:
            restarted = False
            for line in live.iter_lines():
                if line.startswith("event: "):
                    kinds.append(line[7:])
                if line.startswith("data: ") and '"seq"' in line:
                    # The producer goes on while Redis is down (its appends wait in
                    # a bounded queue): what lands after the restart may come as one
                    # merged catch-up frame (from_seq..seq).
                    seqs.extend(covered([json.loads(line[6:])]))
                    if len(seqs) >= 30 and not restarted:
                        own_redis.restart(down_s=0.5)  # AOF on, fsync always
                        restarted = True
    assert restarted and kinds[-1] == "done"
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 151
