"""``tokenwire serve --broker redis://…`` against a real redis-server: the stream's log
lives in Redis, every transport reads it, and ``--processes`` is refused with a reason."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from tests.conftest import ServerFactory
from tests.redis_fixture import RedisServer


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
